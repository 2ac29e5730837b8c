"""FreeRADIUS `detail` parsing benchmark: the columnar parser vs the polars regex + pivot it replaced.

    .venv/bin/python bench/bench_radius.py [--records 1000000] [--old-records 200000] [--repeats 3]

Generates (once, into bench/data/radius-*) one day of accounting for `--records` records, written
by `transforms.accounting.radius.format_detail` as the generator writes a week: a broadband access server's
file (PPPoE IPv4 and IPoE delegated IPv6 sessions) and a mobile gateway's file (phones), both
interim-heavy, ~10% of records with an Acct-Delay-Time. Each method parses both files in its own
process (so peak RSS is that method's alone), `--repeats` times; the median run is printed as
records per wall second and per CPU second, with peak RSS and a checksum (records, sum of
in_octets, sum of out_octets) that must agree between methods on the same files.

`run(records)` is the same measurement of the current parser, as a dict, for other harnesses.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.accounting.radius import format_detail  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
TZ = "Asia/Tokyo"
DAY_MS = 86_400_000
DAY_START_MS = 1_717_340_400_000  # 2024-06-03 00:00 JST
# Share of records per server: a broadband access server and a mobile gateway.
MOBILE_SHARE = 0.4


def _accounting(rng: np.random.Generator, n: int, mobile: bool) -> pl.DataFrame:
    """`n` accounting rows of one day (the generator's columns): sessions with a Start, interims, a Stop."""
    interim_ms = (15 if mobile else 60) * 60_000
    per_session = int(rng.integers(6, 30))  # records per session, the same for all: simple and close enough
    sessions = -(-n // per_session)
    start = DAY_START_MS + rng.integers(0, DAY_MS // 2, sessions)
    step = np.arange(per_session)
    event_ms = (start[:, None] + step[None, :] * interim_ms + rng.integers(0, 1000, (sessions, per_session))).ravel()
    status = np.full((sessions, per_session), "Interim-Update", dtype=object)
    status[:, 0] = "Start"
    status[rng.random(sessions) < 0.5, -1] = "Stop"
    session_index = np.repeat(np.arange(sessions), per_session)
    session_time_s = (event_ms - np.repeat(start, per_session)) // 1000
    rate = rng.lognormal(10, 2, sessions)  # bytes per second, heavy-tailed: some counters pass 2^32
    out_octets = (session_time_s * np.repeat(rate, per_session)).astype(np.int64)
    in_octets = out_octets // rng.integers(5, 20)
    user = rng.integers(0, max(sessions // 2, 1), sessions)[session_index]
    v6 = ~mobile & (rng.random(sessions) < 0.4)[session_index]
    v4 = [f"10.{(u >> 16) & 255}.{(u >> 8) & 255}.{u & 255}" for u in session_index.tolist()]
    frame = pl.DataFrame(
        {
            "event_ms": event_ms,
            "delay_s": np.where(rng.random(event_ms.size) < 0.1, rng.integers(1, 30, event_ms.size), 0),
            "status": status.ravel().tolist(),
            "session_id": [f"{(0x7C000000 if mobile else 0x5A000000) + s:08X}" for s in session_index.tolist()],
            "user_name": "mvno.example.jp" if mobile else [f"u{u:07d}@bb.example.jp" for u in user.tolist()],
            "nas_ip": "192.0.2.21" if mobile else "192.0.2.11",
            "nas_identifier": "pgw-1" if mobile else "bras-1",
            "framed_protocol": [None if mobile or six else "PPP" for six in v6.tolist()],
            "framed_ip": [None if six else a for six, a in zip(v6.tolist(), v4)],
            "delegated_prefix": [
                f"2400:4050:{s & 0xFFFF:x}:{s >> 16:x}00::/56" if six else None
                for s, six in zip(session_index.tolist(), v6.tolist())
            ],
            "calling_station_id": [f"8190{u:08d}" for u in user.tolist()] if mobile else None,
            "session_time_s": session_time_s,
            "in_octets": in_octets,
            "out_octets": out_octets,
        },
        schema_overrides={"calling_station_id": pl.String, "framed_protocol": pl.String},
    )
    return frame.head(n).sort("event_ms")


def make_files(records: int) -> list[Path]:
    """The broadband and mobile detail files of `records` records in all (generated once)."""
    folder = DATA / f"radius-{records}"
    paths = [folder / "detail-bras-1", folder / "detail-pgw-1"]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    mobile = int(records * MOBILE_SHARE)
    for path, n, is_mobile in ((paths[0], records - mobile, False), (paths[1], mobile, True)):
        with path.open("w") as out:
            for chunk in range(0, n, 200_000):  # bounded memory for format_detail
                out.write(format_detail(_accounting(rng, min(200_000, n - chunk), is_mobile), TZ))
    return paths


def parse_new(data: bytes) -> tuple[pl.DataFrame, pl.DataFrame]:
    from flows.processes import thread_mapper
    from transforms.accounting.radius import parse_detail

    with thread_mapper(2) as mapper:  # as flows.flow_ingest calls it
        return parse_detail(data, "bench", TZ, mapper)


def parse_old(data: bytes) -> tuple[pl.DataFrame, pl.DataFrame]:
    from tests.transforms.radius_reference import parse_detail

    return parse_detail(data, "bench", TZ)


METHODS = {"columnar (new)": parse_new, "polars regex (old)": parse_old}


def _child(name: str, paths: list[str], queue: mp.Queue) -> None:  # type: ignore[type-arg]
    blobs = [Path(p).read_bytes() for p in paths]  # reading is not parsing: outside the clock
    wall = cpu = 0.0
    count = in_sum = out_sum = problems = 0
    for data in blobs:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        records, bad = METHODS[name](data)
        wall += time.perf_counter() - wall0
        cpu += time.process_time() - cpu0
        count += records.height
        in_sum += int(records["in_octets"].sum())
        out_sum += int(records["out_octets"].sum())
        problems += bad.height
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "records": count,
            "checksum": (count, in_sum, out_sum),
            "problems": problems,
            "wall_s": wall,
            "cpu_s": cpu,
            "peak_rss_mb": peak_mb,
            "mb": sum(len(b) for b in blobs) / 1e6,
        }
    )


def measure(name: str, paths: list[Path], repeats: int = 3) -> dict[str, Any]:
    """Median (by wall time) of `repeats` runs of one method, each in a fresh process."""
    ctx = mp.get_context("spawn")
    runs = []
    for _ in range(repeats):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, [str(p) for p in paths], queue))
        proc.start()
        runs.append(queue.get())
        proc.join()
    median = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    median["wall_s_runs"] = [round(r["wall_s"], 3) for r in runs]
    median["records_per_s"] = median["records"] / median["wall_s"]
    median["records_per_cpu_s"] = median["records"] / median["cpu_s"]
    median["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
    median["method"] = name
    return median


def run(records: int, repeats: int = 3) -> dict[str, Any]:
    """The current parser on `records` generated records: median wall/CPU records/s, peak RSS, checksum."""
    return measure("columnar (new)", make_files(records), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--old-records", type=int, default=200_000, help="size the old parser also runs on")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = [
        ("columnar (new)", args.records),
        ("columnar (new)", args.old_records),
        ("polars regex (old)", args.old_records),
    ]
    print(
        f"{'method':19} {'records':>10} {'MB':>6} {'wall s':>7} {'records/s':>10} {'rec/CPU s':>10} "
        f"{'peak MB':>8}  checksum (records, in_octets, out_octets)"
    )
    for name, size in cases:
        result = measure(name, make_files(size), args.repeats)
        print(
            f"{name:19} {result['records']:10,d} {result['mb']:6.0f} {result['wall_s']:7.2f} "
            f"{result['records_per_s']:10,.0f} {result['records_per_cpu_s']:10,.0f} {result['peak_rss_mb']:8,.0f}  "
            f"{result['checksum']}  runs {result['wall_s_runs']}"
        )


if __name__ == "__main__":
    main()
