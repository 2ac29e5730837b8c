"""The weekly flow on an existing Dask cluster: a real `distributed` scheduler and three worker
processes on 127.0.0.1, each in a folder of its own, sharing nothing but S3 (moto on 127.0.0.1):
landing zone, staging and warehouse. The published tables are identical to a local run's, only
paths and counts cross to the workers, and a worker killed mid-run changes nothing published."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import s3fs

from flows import storage
from flows.publish import read_manifest, read_published
from flows.settings import Settings
from flows.storage import local_path
from flows.weekly import PUBLISHED_TABLES, weekly_report, weekly_report_runner
from tests.conftest import TEST_KEY, WEEK, _settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


WORKERS = 3


@dataclass
class Cluster:
    address: str
    folders: list[Path]  # each worker's own working folder (its cwd and Dask local directory)


@contextlib.contextmanager
def running_cluster(
    workers: int, root: Path, env: dict[str, str]
) -> Iterator[tuple[Cluster, list[subprocess.Popen[bytes]]]]:
    """`dask scheduler` and `workers` `dask worker` processes (one thread each) on loopback, each
    worker in a folder of its own under `root`; yields the cluster and its processes (scheduler first)."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    folders = [root / f"worker-{index}" for index in range(workers)]
    for folder in folders:
        folder.mkdir(parents=True)
    files = [(root / "scheduler.log").open("w")] + [(f / "worker.log").open("w") for f in folders]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--dashboard-address", "127.0.0.1:0"],
            env=env,
            cwd=root,
            stdout=files[0],
            stderr=subprocess.STDOUT,
        )
    ]
    for index, folder in enumerate(folders):
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", f"worker-{index}"]
                + ["--nworkers", "1", "--nthreads", "1", "--memory-limit", "4GB", "--no-dashboard"]
                + ["--host", "127.0.0.1", "--local-directory", str(folder)],
                env={**env, "TMPDIR": str(folder)},
                cwd=folder,
                stdout=files[1 + index],
                stderr=subprocess.STDOUT,
            )
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5) as client:
                    if len(client.scheduler_info()["workers"]) == workers:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dask cluster did not start: see " + str(root)
            time.sleep(1)
        yield Cluster(address, folders), processes
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        for file in files:
            file.close()


def _cluster_env(prefect_server: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server, "TRAFFICREPORT_HMAC_KEY": TEST_KEY}


@pytest.fixture(scope="module")
def dask_cluster(prefect_server: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three workers, each in a working folder of its own (no path shared with this process or
    another worker): they reach S3, the Prefect API and the pseudonym key through their environment only."""
    with running_cluster(WORKERS, tmp_path_factory.mktemp("dask"), _cluster_env(prefect_server)) as (cluster, _):
        yield cluster


def _checksum(warehouse: storage.AnyPath, name: str) -> str:
    frame = read_published(warehouse, read_manifest(warehouse), name, str(WEEK))
    canonical = frame.sort(pl.all()).write_csv()
    return hashlib.sha256(canonical.encode()).hexdigest()


def _on_s3(small_landing: Path, small_settings: Settings, cluster: Cluster, name: str) -> Settings:
    """Settings whose landing zone, staging (and so state and quarantine) and warehouse are in S3."""
    fs = s3fs.S3FileSystem()
    for bucket in ("dask-landing", f"dask-{name}"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    if not fs.exists("dask-landing/week"):
        fs.put(f"{small_landing}/", "dask-landing/week/", recursive=True)
    return small_settings.model_copy(
        update={
            "landing": storage.storage_path("s3://dask-landing/week"),
            "warehouse": storage.storage_path(f"s3://dask-{name}/warehouse"),
            "staging": storage.storage_path(f"s3://dask-{name}/staging"),
            "dask_address": cluster.address,
            "task_records": 1,  # a task per staged part: many more tasks than exporters
        }
    )


@pytest.fixture(scope="module")
def local_run(prefect_server: str, small_landing: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Checksums of the week's tables published by a local run (no Dask, local folders)."""
    settings = _settings(tmp_path_factory.mktemp("local-run"), small_landing)
    run = weekly_report(WEEK, settings)
    assert run.published
    return {name: _checksum(settings.warehouse, name) for name in PUBLISHED_TABLES}


def _task_name(key: object) -> str:
    return str(key).split("-")[0]


def test_a_week_on_the_dask_cluster_publishes_exactly_the_local_run(
    dask_cluster: Cluster, small_landing: Path, small_settings: Settings, local_run: dict[str, str]
) -> None:
    from distributed import Client, get_task_stream

    remote = _on_s3(small_landing, small_settings, dask_cluster, "undisturbed")
    with Client(dask_cluster.address) as client, get_task_stream(client) as stream:
        run = weekly_report_runner(remote)(WEEK, remote)
        cluster_workers = set(client.scheduler_info()["workers"])
    assert run.published
    for name in PUBLISHED_TABLES:
        assert _checksum(remote.warehouse, name) == local_run[name], name
    # Every ingest and attribution task ran on the cluster's workers: ingest in a task per
    # (exporter, day), chained in one per exporter; attribution in a task per part.
    exporters = len(run.ingest.exporters)
    parts = sum(len(e.parts) for e in run.ingest.exporters)
    kinds = ("ingest_file_group", "finish_exporter_ingest", "attribute_exporter")
    ran = [t for t in stream.data if _task_name(t["key"]) in kinds]
    names = [_task_name(t["key"]) for t in ran]
    groups = names.count("ingest_file_group")
    assert names.count("finish_exporter_ingest") == exporters and names.count("attribute_exporter") == parts
    assert groups >= 4 * exporters and parts >= 4 * exporters
    assert {t["worker"] for t in ran} <= cluster_workers and len(cluster_workers) == WORKERS
    assert len({t["worker"] for t in ran if _task_name(t["key"]) == "ingest_file_group"}) == WORKERS
    assert len({t["worker"] for t in ran}) == WORKERS  # the work was spread
    # Only small partial aggregates crossed: every task's arguments and result are paths and counts.
    assert len(run.transfers) == 1 + groups + exporters + parts
    for transfer in run.transfers:
        assert transfer.bytes_in < 16_384 and transfer.bytes_out < 16_384, transfer
    # Staging held the decoded flows in S3 only, and the run removed its folder when it ended.
    fs = s3fs.S3FileSystem()
    assert [p for p in fs.find("dask-undisturbed/staging") if "/20" in p] == []
    assert all(str(p).startswith("s3://") for e in run.ingest.exporters for p in e.parts)
    # The workers' own folders hold no staged data once the run ended (their scratch is removed).
    assert not [p for f in dask_cluster.folders for p in f.rglob("*.parquet")]


def test_a_worker_killed_mid_run_changes_nothing_published(
    dask_cluster: Cluster, small_landing: Path, small_settings: Settings, local_run: dict[str, str]
) -> None:
    from distributed import Client

    remote = _on_s3(small_landing, small_settings, dask_cluster, "killed")
    killed: list[str] = []

    def kill_a_worker_running_each_kind_of_task(client: Client, stop: threading.Event) -> None:
        for kind in ("ingest_file_group", "attribute_exporter"):
            while not stop.is_set():
                running = [w for w, keys in client.processing().items() if any(_task_name(k) == kind for k in keys)]
                if running:
                    os.kill(client.run(os.getpid, workers=running[:1])[running[0]], signal.SIGKILL)
                    killed.append(running[0])
                    break
                time.sleep(0.02)

    with Client(dask_cluster.address) as client:
        stop = threading.Event()
        killer = threading.Thread(target=kill_a_worker_running_each_kind_of_task, args=(client, stop))
        killer.start()
        try:
            run = weekly_report_runner(remote)(WEEK, remote)
        finally:
            stop.set()
            killer.join()
    assert len(killed) == 2, "a worker running ingest, then one running attribution, were to be killed"
    assert run.published
    for name in PUBLISHED_TABLES:
        assert _checksum(remote.warehouse, name) == local_run[name], name


def test_a_backfill_on_the_cluster_runs_weeks_at_once_and_publishes_each(
    dask_cluster: Cluster, prefect_server: str, tmp_path: Path
) -> None:
    from distributed import Client, get_task_stream

    from flows.generate import generate_to

    # Two weeks apart: a generated week also writes the days beside it (RADIUS sessions open at its edges).
    weeks = [WEEK + dt.timedelta(weeks=2 * n) for n in range(3)]
    landing = tmp_path / "landing"
    for n, week in enumerate(weeks):
        generate_to(landing, week, year=2024, broadband_users=60, mobile_phones=60, seed=40 + n)
    fs = s3fs.S3FileSystem()
    fs.mkdir("dask-backfill")
    fs.put(f"{landing}/", "dask-backfill/landing/", recursive=True)
    last_day = weeks[-1] + dt.timedelta(days=6)
    command = [sys.executable, "-m", "flows.cli", "backfill", "--from", str(weeks[0]), "--to", str(last_day)]
    command += ["--dask", dask_cluster.address, "--concurrency", "2"]
    command += ["--landing", "s3://dask-backfill/landing", "--warehouse", "s3://dask-backfill/warehouse"]
    command += ["--staging", "s3://dask-backfill/staging"]
    env = {**_cluster_env(prefect_server), "TRAFFICREPORT_TASK_RECORDS": "1"}
    started = dt.datetime.now(dt.UTC)
    with Client(dask_cluster.address) as client, get_task_stream(client) as stream:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    warehouse = storage.storage_path("s3://dask-backfill/warehouse")
    manifest = read_manifest(warehouse)
    assert sorted(manifest["tables"]["usage_summary"]) == [str(w) for w in weeks]
    # Every week's ingest and attribution ran on the cluster's workers.
    names = [_task_name(t["key"]) for t in stream.data]
    assert names.count("finish_exporter_ingest") == 3 * len(weeks)
    assert names.count("ingest_file_group") >= 4 * 3 * len(weeks)
    assert names.count("attribute_exporter") >= 4 * 3 * len(weeks)
    # The second and third weeks ran at once (the first runs alone: it starts Prefect's API).
    spans = _weekly_run_spans(started, weeks)
    assert spans[weeks[1]][0] < spans[weeks[2]][1] and spans[weeks[2]][0] < spans[weeks[1]][1], spans
    assert not [p for p in fs.find("dask-backfill/staging") if "/20" in p]  # every run removed its staging


def _weekly_run_spans(since: dt.datetime, weeks: list[dt.date]) -> dict[dt.date, tuple[dt.datetime, dt.datetime]]:
    """(start, end) of the completed weekly_report flow run of each week, among runs started after `since`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),  # type: ignore[arg-type]
            limit=200,
        )
    spans: dict[dt.date, tuple[dt.datetime, dt.datetime]] = {}
    for run in runs:
        week = run.parameters.get("week")
        if run.name and week is not None and run.start_time and run.end_time and run.state and run.state.is_completed():
            day = dt.date.fromisoformat(str(week))
            if day in weeks:
                spans[day] = (run.start_time, run.end_time)
    assert sorted(spans) == weeks, spans
    return spans


def test_a_lost_scheduler_fails_the_run_in_one_line_publishes_nothing_and_a_rerun_publishes(
    prefect_server: str, small_landing: Path, tmp_path: Path, local_run: dict[str, str]
) -> None:
    from distributed import Client

    settings = _settings(tmp_path, small_landing)
    env = {**_cluster_env(prefect_server), "TRAFFICREPORT_TASK_RECORDS": "1"}
    with running_cluster(1, tmp_path / "cluster", env) as (cluster, processes):
        command = [sys.executable, "-m", "flows.cli", "weekly", "--week", str(WEEK), "--dask", cluster.address]
        command += ["--landing", str(small_landing), "--warehouse", str(settings.warehouse)]
        command += ["--staging", str(settings.staging)]
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with Client(cluster.address) as client:
            deadline = time.monotonic() + 120
            while not any(_task_name(k) == "attribute_exporter" for ks in client.processing().values() for k in ks):
                assert run.poll() is None and time.monotonic() < deadline, "no attribution task was seen running"
                time.sleep(0.02)
            processes[0].kill()  # the scheduler, SIGKILL
        _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trafficreport: "), stderr[-3000:]
    assert f"the Dask cluster at {cluster.address} was lost" in lines[0] and "nothing was published" in lines[0]
    assert "Traceback" not in stderr
    # Nothing was published, and the run removed its staging folder.
    assert not (local_path(settings.warehouse) / "_manifest.json").exists()
    assert list(local_path(settings.staging).iterdir()) == []
    rerun = weekly_report(WEEK, settings)
    assert rerun.published
    for name in PUBLISHED_TABLES:
        assert _checksum(settings.warehouse, name) == local_run[name], name
