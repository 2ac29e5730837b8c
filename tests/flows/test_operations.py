"""Unattended operation: a late feed is waited for (and then published, or failed with why), and
two runs of one week never work at once."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flows.landing import MissingFeed
from flows.locks import WeekBusy, one_run_at_a_time
from flows.publish import read_manifest
from flows.settings import Settings
from flows.weekly import weekly_report
from tests.conftest import WEEK


def _landing_without_last_day(settings: Any, tmp_path: Path) -> tuple[Any, Path, Path]:
    landing = tmp_path / "landing"
    shutil.copytree(settings.landing, landing)
    exporter = sorted((landing / "flows").iterdir())[0]
    held_back = tmp_path / "held-back"
    shutil.move(exporter / "2024-06-09", held_back)
    return settings.model_copy(update={"landing": landing}), held_back, exporter / "2024-06-09"


def _task_run_counts(state: Any) -> dict[str, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.task_key.split("-")[0]: r.run_count for r in runs}


def test_a_late_feed_is_waited_for_and_the_week_published_once_it_lands(
    small_settings: Settings, prefect_server: str, tmp_path: Path
) -> None:
    settings, held_back, folder = _landing_without_last_day(small_settings, tmp_path)
    # The exporter's Sunday arrives three seconds after the run started.
    arrival = threading.Timer(3.0, shutil.move, args=(held_back, folder))
    arrival.start()
    started = time.monotonic()
    state = weekly_report(WEEK, settings, feed_retries=5, feed_retry_delay_seconds=2, return_state=True)
    arrival.join()
    assert state.is_completed() and time.monotonic() - started > 3
    assert _task_run_counts(state)["wait_for_complete_feeds"] >= 2  # failed at least once, then passed
    assert str(WEEK) in read_manifest(settings.warehouse)["tables"]["usage_summary"]
    assert list(settings.staging.iterdir()) == []  # the run's decoded flows and partials are gone


def test_a_feed_still_missing_after_the_retries_fails_the_run_and_publishes_nothing(
    small_settings: Settings, prefect_server: str, tmp_path: Path
) -> None:
    settings, _, folder = _landing_without_last_day(small_settings, tmp_path)
    exporter = folder.parent.name
    with pytest.raises(MissingFeed, match=rf"flows/{exporter}: no files for 2024-06-09"):
        weekly_report(WEEK, settings, feed_retries=1, feed_retry_delay_seconds=1)
    assert read_manifest(settings.warehouse)["tables"] == {}


def test_a_run_of_a_week_another_run_holds_does_not_start(small_settings: Settings, prefect_server: str) -> None:
    # Another run (here: this test, through the same Prefect API) holds the week's slot.
    with one_run_at_a_time(WEEK):
        started = time.monotonic()
        with pytest.raises(WeekBusy, match="2024-06-03 is being run by another run"):
            weekly_report(WEEK, small_settings)
        assert time.monotonic() - started >= 10  # it waited for the slot, then gave up
        assert read_manifest(small_settings.warehouse)["tables"] == {}
    # Released: the week runs.
    assert weekly_report(WEEK, small_settings).published is True
