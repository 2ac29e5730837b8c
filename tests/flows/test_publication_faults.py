"""Write-audit-publish under faults: a run killed (SIGKILL) at each step between staging and
publication leaves the warehouse as the old week or the new one, never a mix, and a re-run works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows import failpoints
from flows.publish import CATALOG, MANIFEST, ConcurrentPublication, publish_week, published_run, read_manifest
from flows.settings import Settings
from flows.storage import local_path
from flows.weekly import PUBLISHED_TABLES, weekly_report
from tests.conftest import TEST_KEY, WEEK
from transforms.run_records import PublicationRecord

CLI = [sys.executable, "-m", "flows.cli"]

RECORD = PublicationRecord(audit_passed=True, replaced_run=None)


def _weekly_in_subprocess(settings: object, api_url: str, failpoint: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "TRAFFICREPORT_HMAC_KEY": TEST_KEY,
        failpoints.VARIABLE: failpoint,
        # A SIGKILLed run keeps its week's concurrency slot until the lease expires (5 min): the
        # next kill step and the reruns would wait for it. This test is about the manifest.
        "TRAFFICREPORT_ONE_RUN_PER_WEEK": "false",
    }
    args = [
        "weekly",
        "--week",
        str(WEEK),
        "--landing",
        str(settings.landing),  # type: ignore[attr-defined]
        "--warehouse",
        str(settings.warehouse),  # type: ignore[attr-defined]
        "--staging",
        str(settings.staging),  # type: ignore[attr-defined]
    ]
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300)


def _published_state(warehouse: Path) -> tuple[str, dict[str, int]]:
    """(the one run every table of the week comes from, rows per table), checking every listed file exists."""
    manifest = read_manifest(warehouse)
    runs = {weeks[str(WEEK)]["run_id"] for weeks in manifest["tables"].values()}
    assert len(runs) == 1, f"tables of one week from several runs: {runs}"
    assert set(manifest["tables"]) == set(PUBLISHED_TABLES)
    rows = {}
    for name, weeks in manifest["tables"].items():
        entry = weeks[str(WEEK)]
        frame = pl.read_parquet([warehouse / f for f in entry["files"]])
        assert frame.height == entry["rows"]
        rows[name] = frame.height
    return runs.pop(), rows


def _catalog_run(warehouse: Path) -> tuple[str, int]:
    """(manifest version the catalog was built from, user_week_usage rows it holds)."""
    con = duckdb.connect(str(warehouse / CATALOG), read_only=True)
    try:
        version = con.execute("select manifest_version from _catalog").fetchone()
        rows = con.execute("select count(*) from user_week_usage where week = $w", {"w": WEEK}).fetchone()
    finally:
        con.close()
    assert version is not None and rows is not None
    return str(version[0]), int(rows[0])


def test_a_run_killed_at_any_step_leaves_old_or_new_week_and_a_rerun_succeeds(
    small_settings: Settings, prefect_server: str
) -> None:
    warehouse = local_path(small_settings.warehouse)
    first = weekly_report(WEEK, small_settings)
    old_run, old_rows = _published_state(warehouse)
    assert old_run == first.run_id
    outcomes = {}
    for step in failpoints.STEPS:
        before = (warehouse / MANIFEST).read_bytes()
        killed = _weekly_in_subprocess(small_settings, prefect_server, step)
        assert killed.returncode == -9, f"{step}: expected SIGKILL, got {killed.returncode}: {killed.stderr[-2000:]}"
        run, rows = _published_state(warehouse)
        assert rows == old_rows  # same week, same input: a whole week either way
        manifest_changed = (warehouse / MANIFEST).read_bytes() != before
        # Up to the manifest swap the old week stays; from it on the new one is the whole week.
        swapped = step in ("publish:manifest-swapped", "weekly:catalog-built")
        assert manifest_changed == swapped, step
        assert (run != old_run) == swapped, step
        outcomes[step] = run
        old_run = run
        # The catalog shows one published state, whole: the one it was built from.
        _, catalog_rows = _catalog_run(warehouse)
        assert catalog_rows == old_rows["user_week_usage"]
    rerun = weekly_report(WEEK, small_settings)
    final_run, _ = _published_state(warehouse)
    assert final_run == rerun.run_id
    # Files of the killed runs that never published are gone; retention keeps the newest 3 runs.
    manifest = read_manifest(warehouse)
    kept = {final_run, *(r["run_id"] for r in manifest["retained"][str(WEEK)])}
    assert len(kept) == 3
    on_disk = {p.name[4:] for p in (warehouse / "usage_summary" / f"week={WEEK}").iterdir()}
    assert on_disk == kept
    version, _ = _catalog_run(warehouse)
    assert version  # rebuilt from the final manifest
    assert (
        json.loads((warehouse / MANIFEST).read_text())["runs"][final_run]["replaced_run"]
        == outcomes["weekly:catalog-built"]
    )


def _tiny_tables(value: float) -> dict[str, pl.DataFrame]:
    return {"usage_summary": pl.DataFrame({"week": [WEEK], "mean_mb": [value]})}


def test_two_runs_of_one_week_cannot_both_publish(tmp_path: Path) -> None:
    publish_week(tmp_path, WEEK, "run-a", _tiny_tables(1.0), RECORD, base_run=None)
    # run-b started before run-a published (it saw nothing published): it must not overwrite.
    with pytest.raises(ConcurrentPublication, match="run run-a published it while run run-b was working"):
        publish_week(tmp_path, WEEK, "run-b", _tiny_tables(2.0), RECORD, base_run=None)
    assert published_run(read_manifest(tmp_path), WEEK) == "run-a"
    # run-b's files never became visible and are removed by the next publication of the week.
    publish_week(tmp_path, WEEK, "run-c", _tiny_tables(3.0), RECORD, base_run="run-a")
    assert sorted(p.name for p in (tmp_path / "usage_summary" / f"week={WEEK}").iterdir()) == ["run=run-a", "run=run-c"]


def test_retention_keeps_the_newest_publications_of_a_week(tmp_path: Path) -> None:
    base = None
    for index in range(5):
        removed = publish_week(tmp_path, WEEK, f"run-{index}", _tiny_tables(index), RECORD, base_run=base, keep_runs=2)
        base = f"run-{index}"
    assert removed == [f"usage_summary/week={WEEK}/run=run-2"]
    manifest = read_manifest(tmp_path)
    assert [r["run_id"] for r in manifest["retained"][str(WEEK)]] == ["run-3"]
    assert set(manifest["runs"]) == {"run-3", "run-4"}
    folder = tmp_path / "usage_summary" / f"week={WEEK}"
    assert sorted(p.name for p in folder.iterdir()) == ["run=run-3", "run=run-4"]


def test_accepted_failed_audit_is_published_and_recorded(
    tmp_path: Path, small_settings: Settings, prefect_server: str
) -> None:
    # No tolerance at all between sampled flows and RADIUS counters: a sampled estimate is never
    # exact, so the reconciliation check fails whatever week the generator made.
    strict = small_settings.model_copy(
        update={"reconcile_z": 0.0, "reconcile_floor": 0.0, "max_unreconciled_share": 0.0}
    )
    run = weekly_report(WEEK, strict, accept_failed_audit=True)
    assert run.published and not run.audit_passed and run.accepted_failed_audit
    record = read_manifest(strict.warehouse)["runs"][run.run_id]
    assert record["audit_passed"] is False and record["accepted_failed_audit"] is True
    assert any("outside tolerance of RADIUS counters <= 0.0" in check for check in record["failed_checks"])


def test_a_report_that_fails_after_publication_leaves_the_run_completed_with_a_warning(
    small_settings: Settings, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows import report

    def broken_report(*args: object, **kwargs: object) -> object:
        raise RuntimeError("figure renderer crashed\nsecond line")

    monkeypatch.setattr(report, "build_report", broken_report)
    state = weekly_report(WEEK, small_settings, return_state=True)
    assert state.is_completed(), state
    run = state.result()
    assert run.published and run.report is None
    assert run.report_error == "RuntimeError: figure renderer crashed"
    manifest = read_manifest(small_settings.warehouse)
    assert manifest["tables"]["usage_summary"][str(WEEK)]["run_id"] == run.run_id
    assert (small_settings.warehouse / CATALOG).exists()
    summary = (small_settings.warehouse / "reports" / str(WEEK) / f"summary-{run.run_id}.md").read_text()
    assert "not rendered: RuntimeError: figure renderer crashed" in summary
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"report-failed-{WEEK}"]))
        )
    assert [a.flow_run_id for a in artifacts] == [state.state_details.flow_run_id]
    assert "trafficreport report --week 2024-06-03" in str(artifacts[0].data)
