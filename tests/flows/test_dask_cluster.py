"""The weekly flow's per-exporter tasks on an existing Dask cluster: a real `distributed` scheduler
and two worker processes on 127.0.0.1, landing zone and warehouse in S3 (moto on 127.0.0.1). The
published tables are identical to a local run's, and only paths and counts cross to the workers."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import s3fs

from flows import storage
from flows.publish import read_manifest, read_published
from flows.settings import Settings
from flows.weekly import PUBLISHED_TABLES, weekly_report, weekly_report_runner
from tests.conftest import TEST_KEY, WEEK

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def dask_scheduler(prefect_server: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes (one process, two threads each) on loopback;
    the workers reach S3, the Prefect API and the pseudonym key through their environment."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TRAFFICREPORT_HMAC_KEY": TEST_KEY}
    files = [(logs / name).open("w") for name in ("scheduler.log", "worker-0.log", "worker-1.log")]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--dashboard-address", "127.0.0.1:0"],
            env=env,
            cwd=ROOT,
            stdout=files[0],
            stderr=subprocess.STDOUT,
        )
    ]
    for index in range(2):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", f"worker-{index}"]
                + ["--nworkers", "1", "--nthreads", "2", "--memory-limit", "6GB", "--no-dashboard"]
                + ["--host", "127.0.0.1"],
                env=env,
                cwd=ROOT,
                stdout=files[1 + index],
                stderr=subprocess.STDOUT,
            )
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5) as client:
                    if len(client.scheduler_info()["workers"]) == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dask cluster did not start: see " + str(logs)
            time.sleep(1)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        for file in files:
            file.close()


def _checksum(warehouse: storage.AnyPath, name: str) -> str:
    frame = read_published(warehouse, read_manifest(warehouse), name, str(WEEK))
    canonical = frame.sort(pl.all()).write_csv()
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_a_week_on_the_dask_cluster_publishes_exactly_the_local_run(
    dask_scheduler: str, s3_endpoint: str, small_landing: Path, small_settings: Settings
) -> None:
    from distributed import Client, get_task_stream

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    for bucket in ("dask-landing", "dask-warehouse"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    fs.put(f"{small_landing}/", "dask-landing/week/", recursive=True)
    local = weekly_report(WEEK, small_settings)
    remote = small_settings.model_copy(
        update={
            "landing": storage.storage_path("s3://dask-landing/week"),
            "warehouse": storage.storage_path("s3://dask-warehouse/wh"),
            "dask_address": dask_scheduler,
        }
    )
    with Client(dask_scheduler) as client, get_task_stream(client) as stream:
        run = weekly_report_runner(remote)(WEEK, remote)
        cluster_workers = set(client.scheduler_info()["workers"])
    assert run.published and local.published
    for name in PUBLISHED_TABLES:
        assert _checksum(remote.warehouse, name) == _checksum(small_settings.warehouse, name), name
    # The per-exporter tasks and the RADIUS task ran on the cluster's workers, not in this process.
    exporters = len(run.ingest.exporters)
    ran = [t for t in stream.data if t["key"].split("-")[0] in ("ingest_flows_of_exporter", "attribute_exporter")]
    assert len(ran) >= 2 * exporters, [t["key"] for t in stream.data]
    assert {t["worker"] for t in ran} <= cluster_workers and len(cluster_workers) == 2
    # Only small partial aggregates crossed: every task's arguments and result are paths and counts.
    assert len(run.transfers) == 1 + 2 * exporters
    for transfer in run.transfers:
        assert transfer.bytes_in < 16_384 and transfer.bytes_out < 16_384, transfer
