"""Wall time of one generated week, local task runner vs a Dask cluster (a real distributed
scheduler and worker processes on this machine), and the bytes each task's arguments and result
carry between the flow and its tasks.

    .venv/bin/python bench/bench_dask.py --users 3000 --workers 2

Needs the `dask` extra (prefect-dask, distributed). Starts a temporary Prefect API for the flow and
the workers (Dask workers report task runs to it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

WEEK = dt.date(2024, 6, 3)
DATA = Path(__file__).parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.generate import generate_to, generated_weeks
    from flows.settings import load_settings
    from flows.weekly import weekly_report_runner

    landing = DATA / f"dask-week-{args.users}"
    if WEEK not in generated_weeks(landing):
        generate_to(landing, WEEK, broadband_users=args.users, mobile_phones=args.users, seed=7)
    os.environ.setdefault("TRAFFICREPORT_HMAC_KEY", "bench-only-key")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=90), tempfile.TemporaryDirectory() as scratch:
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # for the worker processes
        base = load_settings(landing=landing, warehouse=Path(scratch) / "local", staging=Path(scratch) / "staging")
        rows = []
        started = time.monotonic()
        local = weekly_report_runner(base)(WEEK, base)
        rows.append(("local threads", time.monotonic() - started, local))
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=True, dashboard_address=None
        ) as cluster:
            remote = base.model_copy(
                update={
                    "warehouse": Path(scratch) / "dask",
                    "dask_address": cluster.scheduler_address,
                }
            )
            started = time.monotonic()
            run = weekly_report_runner(remote)(WEEK, remote)
            rows.append((f"dask {args.workers} workers x {args.threads} threads", time.monotonic() - started, run))
    records = sum(int(e["records"]) for e in local["ingest"]["exporters"])
    print(f"week {WEEK}, {args.users} broadband users, {records:,} flow records")
    print(f"{'runner':28} {'wall s':>8} {'flows/s':>12}")
    for name, seconds, _ in rows:
        print(f"{name:28} {seconds:8.1f} {records / seconds:12,.0f}")
    print(f"\n{'task':26} {'of':14} {'bytes in':>9} {'bytes out':>9}")
    for transfer in rows[-1][2]["transfers"]:
        print(f"{transfer['task']:26} {transfer['key']:14} {transfer['bytes_in']:9,} {transfer['bytes_out']:9,}")
    print("\nstages (dask run):", ", ".join(f"{s['stage']} {s['seconds']} s" for s in rows[-1][2]["stages"]))


if __name__ == "__main__":
    main()
