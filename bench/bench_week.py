"""The whole weekly flow from a landing zone of exporter-shaped files, stage by stage.

    .venv/bin/python bench/bench_week.py --users 5200 [--runs 1]

Generates (once, into bench/data/week-<users>/) the calibrated 2024-06-03 week with `--users`
broadband users and as many phones: IPFIX as exporters send it (<= 1,400-byte datagrams, flush
timers, two observation domains per exporter) plus the matching FreeRADIUS detail files. Then runs
`trafficreport weekly` on it as a user would (its own temporary Prefect server) and prints each
stage's seconds and share of the run, flow records per wall second, and the peak RSS summed over
the command's whole process tree (the flow, its ingest child processes, the Prefect server),
sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
WEEK = "2024-06-03"
STAGE = re.compile(r"stage=(\w+) rows=(\S+) bytes=(\S+) seconds=([\d.]+)")


def landing_zone(users: int) -> Path:
    out = DATA / f"week-{users}"
    if not (out / "_truth" / WEEK / "spec.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "generate",
                "--week",
                WEEK,
                "--out",
                str(out),
                "--users",
                str(users),
                "--phones",
                str(users),
            ],
            check=True,
            cwd=ROOT,
        )
    return out


def _tree_rss_kb(root: int) -> int:
    """Resident memory of `root` and all its descendants, in KiB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as status:
                kb = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
        rss[int(entry)] = kb
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_week(landing: Path) -> tuple[float, dict[str, tuple[str, float]], int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TRAFFICREPORT_HMAC_KEY="bench-key-0123456789abcdef")
        command = [
            sys.executable,
            "-m",
            "flows.cli",
            "weekly",
            "--week",
            WEEK,
            "--landing",
            str(landing),
            "--warehouse",
            f"{tmp}/warehouse",
            "--staging",
            f"{tmp}/staging",
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = proc.communicate()
        wall = time.perf_counter() - started
        sampler.join()
        if proc.returncode:
            raise RuntimeError(f"weekly failed ({proc.returncode}):\n{output[-3000:]}")
        stages = {m.group(1): (m.group(2), float(m.group(4))) for m in STAGE.finditer(output)}
        return wall, stages, peak[0] // 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=5200, help="broadband users, and as many phones")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    landing = landing_zone(args.users)
    spec = json.loads((landing / "_truth" / WEEK / "spec.json").read_text())
    flows, accounting = spec["flow_records"], spec["accounting_records"]
    print(f"landing {landing}: {flows:,} flow records, {accounting:,} accounting records")
    for run in range(args.runs):
        wall, stages, peak_mb, _ = run_week(landing)
        flow_seconds = sum(seconds for _, seconds in stages.values())
        print(
            f"run {run + 1}: command {wall:.1f} s (flow {flow_seconds:.1f} s), "
            f"{flows / flow_seconds / 1e6:.2f} M flow records/s of the flow, peak RSS (tree) {peak_mb:,} MB"
        )
        for name, (rows, seconds) in stages.items():
            print(f"  {name:10} {seconds:7.2f} s  {100 * seconds / flow_seconds:5.1f}%  rows={rows}")


if __name__ == "__main__":
    main()
