"""Shared fixtures: one Prefect test server per session, generated weeks run through the real flow."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flows.settings import Settings
    from transforms.run_records import WeekRun

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

WEEK = dt.date(2024, 6, 3)
TEST_KEY = "test-only-pseudonym-key"


@dataclass
class PublishedWeek:
    settings: Settings
    run: WeekRun
    landing: Path


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A Prefect test server for the session; yields its API URL for subprocesses to use."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(autouse=True)
def _no_slot_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the Prefect server, frees the week and month slots still taken: a run
    killed or interrupted by a test keeps its slot until the lease expires (5 minutes), and a later
    test of the same week then waits for it (test_operations once waited 5 minutes in a full run)."""
    yield
    if "prefect_server" not in request.fixturenames:
        return
    from flows import locks

    for held in locks.held_prefect_slots():
        locks.release_prefect_slot(held.period)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP server (moto) on 127.0.0.1, with the environment pointing at it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def pseudonym_key() -> Iterator[str]:
    previous = os.environ.get("TRAFFICREPORT_HMAC_KEY")
    os.environ["TRAFFICREPORT_HMAC_KEY"] = TEST_KEY
    yield TEST_KEY
    if previous is None:
        os.environ.pop("TRAFFICREPORT_HMAC_KEY", None)
    else:
        os.environ["TRAFFICREPORT_HMAC_KEY"] = previous


def _settings(root: Path, landing: Path) -> Settings:
    from flows.settings import load_settings

    return load_settings(landing=landing, warehouse=root / "warehouse", staging=root / "staging")


@pytest.fixture(scope="session")
def calibrated_week(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> PublishedWeek:
    """The demo-sized 2024-06-03 week (3,000 broadband users, 3,000 phones), published once."""
    from flows.generate import generate_to
    from flows.weekly import weekly_report

    root = tmp_path_factory.mktemp("calibrated")
    generate_to(root / "landing", WEEK, broadband_users=3000, mobile_phones=3000, seed=11)
    settings = _settings(root, root / "landing")
    run = weekly_report(WEEK, settings)
    return PublishedWeek(settings, run, root / "landing")


@pytest.fixture(scope="session")
def small_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated week (300 users, 300 phones) for flow behaviour tests."""
    from flows.generate import generate_to

    landing = tmp_path_factory.mktemp("small") / "landing"
    generate_to(landing, WEEK, broadband_users=300, mobile_phones=300, seed=5)
    return landing


@pytest.fixture()
def small_settings(tmp_path: Path, small_landing: Path) -> Settings:
    return _settings(tmp_path, small_landing)


# Tests that need one of these run a Prefect server, S3, a generated week through the real flow, or a
# real tool: all are `slow`, so `pytest -m "not slow"` is the quick loop of pure code and contracts.
SLOW_FIXTURES = frozenset({"prefect_server", "s3_endpoint", "calibrated_week", "small_landing", "small_settings"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or item.path.parent.name == "tools":
            item.add_marker(pytest.mark.slow)
