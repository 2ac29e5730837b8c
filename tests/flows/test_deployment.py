"""The scheduled deployments on a real, persistent Prefect server: `prefect server start` on
127.0.0.1 with its own PREFECT_HOME, `trafficreport serve` registering and running the deployments,
the stored schedule read back, and one run triggered that publishes a generated week."""

from __future__ import annotations

import datetime as dt
import inspect
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flows.publish import read_manifest
from tests.conftest import TEST_KEY, WEEK

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until(check, seconds: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:  # not up yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} not ready after {seconds} s")


@pytest.fixture(scope="module")
def persistent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` (SQLite in its own PREFECT_HOME) on a free loopback port."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_until(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, 90, "prefect server")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_serve_registers_the_weekly_schedule_and_a_triggered_run_publishes_the_week(
    persistent_server: str, small_landing: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {
        **os.environ,
        "PREFECT_API_URL": persistent_server,
        "PREFECT_HOME": str(tmp_path / "serve-home"),
        "TRAFFICREPORT_HMAC_KEY": TEST_KEY,
    }
    log = (tmp_path / "serve.log").open("w")
    warehouse = tmp_path / "warehouse"
    serve = subprocess.Popen(
        [
            *(sys.executable, "-m", "flows.cli", "serve"),
            *("--landing", str(small_landing), "--warehouse", str(warehouse), "--staging", str(tmp_path / "staging")),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with temporary_settings({PREFECT_API_URL: persistent_server}):
            with get_client(sync_client=True) as client:
                weekly = _wait_until(
                    lambda: client.read_deployment_by_name("scheduled_weekly_report/weekly"), 120, "deployment"
                )
                [schedule] = weekly.schedules
                assert schedule.schedule.cron == "0 4 * * 1" and schedule.schedule.timezone == "Asia/Tokyo"
                assert weekly.parameters["landing_zone"] == str(small_landing)
                assert weekly.parameters["warehouse"] == str(warehouse)
                # serve registers its deployments one after another: the monthly one may come later.
                monthly = _wait_until(
                    lambda: client.read_deployment_by_name("scheduled_monthly_traffic/monthly"), 60, "deployment"
                )
                assert monthly.schedules[0].schedule.cron == "0 4 2 * *"
                # The server's scheduler has laid out the coming runs: Mondays 04:00 in Tokyo.
                upcoming = _wait_until(
                    lambda: [r for r in client.read_flow_runs(limit=50) if r.deployment_id == weekly.id],
                    60,
                    "scheduled runs",
                )
                for run in upcoming:
                    local = run.expected_start_time.astimezone(ZoneInfo("Asia/Tokyo"))
                    assert (local.weekday(), local.hour, local.minute) == (0, 4, 0), local
            # One run now, as if scheduled on Wednesday 2024-06-12: it reports the week of 2024-06-03.
            flow_run = run_deployment(
                "scheduled_weekly_report/weekly",
                parameters={"today": dt.date(2024, 6, 12), "feed_retries": 0},
                timeout=600,
            )
        assert not inspect.isawaitable(flow_run)  # called from sync code: the flow run itself
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
        manifest = read_manifest(warehouse)
        assert str(WEEK) in manifest["tables"]["usage_summary"]
        [run] = [r for r in manifest["runs"].values() if r.get("week") == str(WEEK)]
        assert run["audit_passed"] is True
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        log.close()


def test_the_work_pool_deployments_match_the_served_ones() -> None:
    import importlib

    import yaml

    from flows.deployment import MONTHLY_CRON, TIMEZONE, WEEKLY_CRON

    spec = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"weekly", "monthly", "backfill"}
    assert deployments["weekly"]["schedules"] == [{"cron": WEEKLY_CRON, "timezone": TIMEZONE}]
    assert deployments["monthly"]["schedules"] == [{"cron": MONTHLY_CRON, "timezone": TIMEZONE}]
    for deployment in deployments.values():
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        # Every parameter the file sets is one the flow takes.
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties), deployment["name"]
