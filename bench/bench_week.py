"""The whole weekly flow from a landing zone of exporter-shaped files, stage by stage.

    .venv/bin/python bench/bench_week.py --users 5200 [--runs 1] [--copies 10]

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


def copied_landing_zone(users: int, copies: int) -> Path:
    """The week of `users`, its flows sent by `copies` copies of each exporter (folder
    <exporter>-c<k>; copy k's timestamps shifted by k ms, so that no file or record set repeats
    another), with the same accounting and directory: `copies` times the flow records for the same
    subscribers. The generator holds a week in memory, so this is how a 10^8-record week fits a
    24 GiB machine. Flow-estimated volumes are then `copies` times RADIUS's, so the audit's
    reconciliation fails by design; the benchmark publishes with --accept-failed-audit."""
    base = landing_zone(users)
    out = DATA / f"week-{users}-x{copies}"
    if (out / "_truth" / WEEK / "spec.json").exists():
        return out
    import datetime as dt

    import polars as pl

    from transforms.synth.exporter import ExportShape, encode_export_stream
    from transforms.synth.week import WeekSpec, generate_week

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for folder in ("radius", "directory"):
        shutil.copytree(base / folder, out / folder)
    spec = json.loads((base / "_truth" / WEEK / "spec.json").read_text())
    week = generate_week(
        WeekSpec(
            week=dt.date.fromisoformat(WEEK),
            year=spec["year"],
            broadband_users=users,
            mobile_phones=users,
            seed=spec["seed"],
            timezone=spec["timezone"],
        )
    )
    records = 0
    for exporter in week.spec.exporters:
        flows = week.flows[exporter.name].with_columns(
            day=pl.from_epoch("first_ts", time_unit="ms")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(spec["timezone"])
            .dt.date()
        )
        for copy in range(copies):
            shifted = flows.with_columns(pl.col("first_ts", "last_ts") + copy)
            sequences: dict[int, int] = {}
            for (day,), part in sorted(shifted.partition_by("day", as_dict=True).items()):
                data = encode_export_stream(
                    part,
                    ExportShape(),
                    exporter.domain_id * 16,
                    exporter.sampling_style,
                    exporter.sampling_rate,
                    sequences,
                )
                path = (
                    out / "flows" / f"{exporter.name}-c{copy}" / day.isoformat() / f"{exporter.name}-{day:%Y%m%d}.ipfix"
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                records += part.height
    (out / "_truth" / WEEK).mkdir(parents=True)
    (out / "_truth" / WEEK / "spec.json").write_text(json.dumps({**spec, "flow_records": records, "copies": copies}))
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


def run_week(landing: Path, accept_failed_audit: bool) -> tuple[float, dict[str, tuple[str, float]], int, str]:
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
            *(["--accept-failed-audit"] if accept_failed_audit else []),
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = [0]
        peak_at = [""]

        def sample() -> None:
            while proc.poll() is None:
                rss = _tree_rss_kb(proc.pid)
                if rss > peak[0]:
                    peak[0], peak_at[0] = rss, time.strftime("%H:%M:%S")
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = proc.communicate()
        wall = time.perf_counter() - started
        sampler.join()
        if proc.returncode:
            raise RuntimeError(f"weekly failed ({proc.returncode}):\n{output[-3000:]}")
        stages = {m.group(1): (m.group(2), float(m.group(4))) for m in STAGE.finditer(output)}
        # When the peak came, against the stage lines' clock: which stage holds the memory.
        print(f"  peak RSS reached at {peak_at[0]}; stage lines:")
        for line in output.splitlines():
            if "stage=" in line:
                print("   ", line.split(" | ")[0], line.split("stage=")[1].split(" rows")[0])
        return wall, stages, peak[0] // 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=5200, help="broadband users, and as many phones")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--copies", type=int, default=1, help="each exporter's flows sent by this many exporters")
    args = parser.parse_args()
    landing = landing_zone(args.users) if args.copies == 1 else copied_landing_zone(args.users, args.copies)
    spec = json.loads((landing / "_truth" / WEEK / "spec.json").read_text())
    flows, accounting = spec["flow_records"], spec["accounting_records"]
    print(f"landing {landing}: {flows:,} flow records, {accounting:,} accounting records")
    for run in range(args.runs):
        wall, stages, peak_mb, _ = run_week(landing, accept_failed_audit=args.copies > 1)
        flow_seconds = sum(seconds for _, seconds in stages.values())
        print(
            f"run {run + 1}: command {wall:.1f} s (flow {flow_seconds:.1f} s), "
            f"{flows / flow_seconds / 1e6:.2f} M flow records/s of the flow, peak RSS (tree) {peak_mb:,} MB"
        )
        for name, (rows, seconds) in stages.items():
            print(f"  {name:10} {seconds:7.2f} s  {100 * seconds / flow_seconds:5.1f}%  rows={rows}")


if __name__ == "__main__":
    main()
