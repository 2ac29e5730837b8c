"""A backfill interrupted (Ctrl-C) after its first week: a second call publishes only what is
missing, and nothing half-published is ever visible."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.backfill import _noticing_interrupts, run_backfill
from flows.generate import generate_to
from flows.publish import MANIFEST, read_manifest
from flows.settings import Settings
from flows.storage import local_path
from tests.conftest import TEST_KEY, WEEK

ROOT = Path(__file__).resolve().parents[2]
YEAR_BEFORE = dt.date(2023, 6, 5)


def test_an_interrupted_backfill_resumes_with_only_what_is_missing(
    small_settings: Settings, prefect_server: str, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    shutil.copytree(local_path(small_settings.landing), landing)
    generate_to(landing, YEAR_BEFORE, year=2023, broadband_users=300, mobile_phones=300, seed=23)
    warehouse, staging = tmp_path / "warehouse", tmp_path / "staging"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TRAFFICREPORT_HMAC_KEY": TEST_KEY}
    command = [sys.executable, "-m", "flows.cli", "backfill", "--from", "2023-06", "--to", "2024-06"]
    command += ["--concurrency", "1", "--landing", str(landing), "--warehouse", str(warehouse)]
    command += ["--staging", str(staging)]
    with (tmp_path / "backfill.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (warehouse / MANIFEST).exists():
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "backfill.log").read_text()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)  # Ctrl-C once the first week is published
        assert process.wait(timeout=300) != 0
    first = json.loads((warehouse / MANIFEST).read_text())
    published = set(first["tables"]["usage_summary"])
    assert published == {str(YEAR_BEFORE)}, published
    # Every table of a listed week is from one run, whatever the interruption hit.
    assert {e[str(YEAR_BEFORE)]["run_id"] for e in first["tables"].values()} == {
        first["tables"]["usage_summary"][str(YEAR_BEFORE)]["run_id"]
    }
    settings = small_settings.model_copy(update={"landing": landing, "warehouse": warehouse, "staging": staging})
    again = run_backfill(dt.date(2023, 6, 1), dt.date(2024, 6, 30), settings, concurrency=1)
    ran = {(r.period, r.status, r.why) for r in again if r.kind == "week"}
    assert (str(YEAR_BEFORE), "skipped", "already published") in ran
    assert (str(WEEK), "published", "") in ran
    assert len([r for r in again if r.status == "published"]) == 1
    manifest = read_manifest(warehouse)
    assert set(manifest["tables"]["usage_summary"]) == {str(YEAR_BEFORE), str(WEEK)}
    assert manifest["tables"]["usage_summary"][str(YEAR_BEFORE)] == first["tables"]["usage_summary"][str(YEAR_BEFORE)]


def test_ctrl_c_that_a_library_turns_into_its_own_error_is_still_noticed() -> None:
    """DuckDB answers SIGINT with its own "Query interrupted" error; the backfill must still see an
    operator's Ctrl-C (and stop) rather than a failed week to step over."""
    # Python's own Ctrl-C handler, whatever this process started with (nohup ignores SIGINT).
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _noticing_interrupts() as interrupted:
            assert not interrupted.is_set()
            with pytest.raises(RuntimeError, match="Query interrupted"):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)  # the handler runs here, in the main thread
                except KeyboardInterrupt as exc:
                    raise RuntimeError("Query interrupted") from exc
            assert interrupted.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, started_with)


def test_a_backfill_started_with_ctrl_c_ignored_leaves_it_ignored() -> None:
    started_with = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _noticing_interrupts() as interrupted:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert not interrupted.is_set()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, started_with)
