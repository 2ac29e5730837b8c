"""One generated week on a Dask cluster of 1, 2, ... worker processes (one thread each): wall time
of the whole run and of its ingest and attribution stages, tasks per stage, bytes staged, and the
workers' peak memory.

    .venv/bin/python bench/bench_dask.py --users 5200 --workers 1 2 [--staging local|s3] [--task-records 2000000]
        [--worker-cores 1]

The week is bench/bench_week.py's (`bench/data/week-<users>`, generated once: IPFIX as exporters
send it). The cluster is a `distributed.LocalCluster` of worker processes on this machine; with
`--staging s3` the landing zone stays local but staging (decoded flows, the assignment lookup,
partial aggregates) goes to a moto S3 server on 127.0.0.1, so every task downloads what it reads
and uploads what it writes, as on a cluster that shares nothing. Needs the `dask` and `dev` extras.
Starts a temporary Prefect API for the flow and the workers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

WEEK = dt.date(2024, 6, 3)


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return server, endpoint


def _compute_seconds(stream: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Compute seconds of each task the workers ran, by task name (the key's prefix)."""
    costs: dict[str, list[float]] = {}
    for task in stream:
        seconds = sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
        costs.setdefault(str(task["key"]).split("-")[0], []).append(seconds)
    return costs


def _staged_bytes(staging: Any) -> int:
    """Bytes under the (kept) staging folder: what the tasks wrote and read."""
    return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=5200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--staging", choices=["local", "s3"], default="local")
    parser.add_argument("--task-records", type=int, default=2_000_000)
    # A worker of a Kubernetes cluster gets its CPUs as a cgroup quota, which polars' and numba's
    # thread pools follow; on this machine a worker process would use every core, so 1 worker
    # and 2 workers would both use 2. The limit here is what a 1-CPU pod gets.
    parser.add_argument("--worker-cores", type=int, default=1, help="threads of polars/numba per worker (0: no limit)")
    args = parser.parse_args()
    if args.worker_cores:
        for name in ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(args.worker_cores)  # inherited by the worker processes started below

    from bench_week import landing_zone
    from distributed import Client, LocalCluster, get_task_stream
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows import storage
    from flows.settings import load_settings
    from flows.weekly import weekly_report_runner

    landing = landing_zone(args.users)
    os.environ.setdefault("TRAFFICREPORT_HMAC_KEY", "bench-only-key-not-for-real-data")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = None
    if args.staging == "s3":
        server, _ = _moto()
        import s3fs

        s3fs.S3FileSystem().mkdir("bench-staging")
    rows = []
    task_costs: list[tuple[int, dict[str, list[float]]]] = []
    with prefect_test_harness(server_startup_timeout=90), tempfile.TemporaryDirectory() as scratch:
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # for the worker processes
        for workers in args.workers:
            staging = (
                storage.storage_path(f"s3://bench-staging/w{workers}")
                if args.staging == "s3"
                else storage.storage_path(Path(scratch) / f"staging-{workers}")
            )
            with LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="10GB"
            ) as cluster:
                settings = load_settings(
                    landing=landing,
                    warehouse=Path(scratch) / f"warehouse-{workers}",
                    staging=staging,
                    dask_address=cluster.scheduler_address,
                    task_records=args.task_records,
                    task_threads=args.worker_cores or 2,
                    keep_staging=True,
                )
                started = time.monotonic()
                with Client(cluster.scheduler_address) as client, get_task_stream(client) as stream:
                    run = weekly_report_runner(settings)(WEEK, settings)
                wall = time.monotonic() - started
                with Client(cluster.scheduler_address) as client:
                    peaks = client.run(_peak_rss_mb)
            stages = {s.stage: s.seconds for s in run.stages}
            tasks: dict[str, int] = {}
            for transfer in run.transfers:
                tasks[transfer.task] = tasks.get(transfer.task, 0) + 1
            records = sum(e.records for e in run.ingest.exporters)
            staged = _staged_bytes(staging)
            rows.append((workers, wall, stages, tasks, records, staged, max(peaks.values()), run))
            task_costs.append((workers, _compute_seconds(stream.data)))
    if server is not None:
        server.stop()

    print(f"week {WEEK}, {args.users} broadband users and phones, {rows[0][4]:,} flow records, staging {args.staging}")
    header = (
        f"{'workers':>7} {'wall s':>7} {'ingest s':>8} {'attribute s':>11} {'speedup ingest':>14} "
        f"{'speedup attr':>12} {'tasks ingest/attr':>17} {'staged MB':>9} {'worker peak MB':>14}"
    )
    print(header)
    base = rows[0][2]
    for workers, wall, stages, tasks, _, staged, peak, _ in rows:
        ingest_tasks = tasks.get("ingest_file_group", 0) + tasks.get("finish_exporter_ingest", 0)
        print(
            f"{workers:7d} {wall:7.1f} {stages['ingest']:8.1f} {stages['attribute']:11.1f} "
            f"{base['ingest'] / stages['ingest']:14.2f} {base['attribute'] / stages['attribute']:12.2f} "
            f"{ingest_tasks:>8}/{tasks.get('attribute_exporter', 0):<8} "
            f"{staged / 2**20:9.0f} {peak:14.0f}"
        )
    for workers, costs in task_costs:
        print(f"\ntask compute seconds with {workers} worker(s) (count, total, mean, max):")
        for name, seconds in sorted(costs.items()):
            total = sum(seconds)
            print(f"  {name:<26} {len(seconds):4d} {total:8.1f} {total / len(seconds):7.2f} {max(seconds):7.2f}")
    print("\nstages of the last run:", ", ".join(f"{s.stage} {s.seconds:.1f} s" for s in rows[-1][7].stages))


if __name__ == "__main__":
    main()
