"""Checkpoints that mean something: drift against the previously published week, and the
per-day presence of every exporter, on generated weeks run through the real flow."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.generate import generate_to
from flows.publish import read_manifest
from flows.settings import Settings
from flows.weekly import AuditFailed, weekly_report
from tests.conftest import WEEK

NEXT_WEEK = WEEK + dt.timedelta(days=7)


def _two_weeks(tmp_path: Path, small_settings: Settings, next_users: int) -> Settings:
    """Publishes the small week; returns settings reading the next week (generated on its own, as
    separately generated weeks collide at their edges in one landing zone) into the same warehouse."""
    assert weekly_report(WEEK, small_settings).published
    landing = tmp_path / "next-landing"
    generate_to(landing, NEXT_WEEK, broadband_users=next_users, mobile_phones=300, seed=5)
    return small_settings.model_copy(update={"landing": landing})


def test_a_steady_next_week_passes_the_drift_checks(
    tmp_path: Path, small_settings: Settings, prefect_server: str
) -> None:
    settings = _two_weeks(tmp_path, small_settings, next_users=300)
    run = weekly_report(NEXT_WEEK, settings)
    assert run.audit is not None
    drift = [c for c in run.audit.checks if c.table == "drift"]
    # users and mean per (service, direction), then every port category of both services
    assert len(drift) >= 2 * 2 * 2 + 10
    assert all(c.success for c in drift), [c for c in drift if not c.success]
    assert all(str(WEEK) in c.check for c in drift)


def test_half_the_users_gone_is_a_broken_feed_and_blocks_publication(
    tmp_path: Path, small_settings: Settings, prefect_server: str
) -> None:
    settings = _two_weeks(tmp_path, small_settings, next_users=150)
    with pytest.raises(AuditFailed, match=r"drift: broadband (in|out) users: relative change vs week 2024-06-03"):
        weekly_report(NEXT_WEEK, settings)
    assert str(NEXT_WEEK) not in read_manifest(settings.warehouse)["tables"]["usage_summary"]


def test_an_exporter_silent_for_a_day_fails_the_audit(
    tmp_path: Path, small_landing: Path, small_settings: Settings, prefect_server: str
) -> None:
    # The day's folder holds a file, so the feed check passes, but no flow in it is of that day.
    landing = tmp_path / "landing"
    shutil.copytree(small_landing, landing)
    day = landing / "flows" / "bb-tokyo-1" / "2024-06-05"
    for path in day.iterdir():
        path.unlink()
    (day / "empty.ipfix").write_bytes(b"")
    settings = small_settings.model_copy(update={"landing": landing})
    with pytest.raises(AuditFailed, match=r"every exporter has flows on every day of the week.*bb-tokyo-1 2024-06-05"):
        weekly_report(WEEK, settings)


def test_flows_that_disagree_with_radius_counters_fail_the_reconciliation(
    small_settings: Settings, prefect_server: str
) -> None:
    good = weekly_report(WEEK, small_settings)
    assert good.audit is not None and good.ingest is not None and good.ingest.reconciliation is not None
    check = next(c for c in good.audit.checks if c.table == "reconciliation")
    assert check.success and good.ingest.reconciliation.users_compared > 250
    # A wrong sampling rate (4x what the exporters use) inflates every flow volume.
    wrong = small_settings.model_copy(update={"sampling_override": (("bb-*", 16384),)})
    with pytest.raises(AuditFailed, match="reconciliation: share of broadband users whose flow volume is outside"):
        weekly_report(WEEK, wrong)


def test_table_suites_check_schema_and_types(calibrated_week: object) -> None:
    from expectations.audit import validate_tables
    from flows.publish import read_published

    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    manifest = read_manifest(warehouse)
    summary = read_published(warehouse, manifest, "usage_summary", str(WEEK))
    assert all(c.success for c in validate_tables({"usage_summary": summary}))
    # A count that became text, and a column nobody declared: both fail, by name.
    broken = summary.with_columns(pl.col("users").cast(pl.String)).with_columns(pl.lit(1).alias("extra"))
    failed = [c.check for c in validate_tables({"usage_summary": broken}) if not c.success]
    assert any(c.startswith("expect_column_values_to_be_in_type_list") and '"users"' in c for c in failed)
    assert any(c.startswith("expect_table_columns_to_match_set") for c in failed)
