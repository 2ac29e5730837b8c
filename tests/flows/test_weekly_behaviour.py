"""Flow behaviour on a small generated week: the audit gate, backfill skipping, determinism."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.generate import generate_to
from flows.publish import MANIFEST, read_manifest
from flows.weekly import AuditFailed, backfill, weekly_report
from tests.conftest import WEEK


def test_failed_audit_publishes_nothing(
    tmp_path: Path, small_landing: Path, small_settings: object, prefect_server: str
) -> None:
    # A directory that lost a third of the broadband subscriptions: their traffic is unattributed.
    landing = tmp_path / "landing"
    shutil.copytree(small_landing, landing)
    directory = pl.read_csv(landing / "directory" / "subscribers.csv", schema_overrides={"phone_numbers": pl.String})
    broadband = directory.filter(pl.col("service") == "broadband")
    directory.filter(
        ~pl.col("subscription_id").is_in(broadband["subscription_id"].head(broadband.height // 3).to_list())
    ).write_csv(landing / "directory" / "subscribers.csv")
    settings = dataclasses.replace(small_settings, landing=landing)  # type: ignore[type-var]
    with pytest.raises(AuditFailed, match="unattributed share") as failure:
        weekly_report(WEEK, settings)
    assert not (settings.warehouse / MANIFEST).exists()
    # The failure names its report and GX Data Docs; the docs hold a validation page per table.
    docs = Path(str(failure.value).split("data docs: ")[1])
    summary = Path(str(failure.value).split("report: ")[1].split(",")[0])
    assert "FAIL run: unattributed share of bytes" in summary.read_text()
    assert docs.name == "index.html" and docs.exists()
    pages = {p.parts[-4] for p in docs.parent.glob("validations/*/*/*/*.html")}
    assert pages == {"user_day_usage", "user_week_usage", "usage_summary", "port_usage", "port_share", "traffic_hour"}
    assert not list(settings.warehouse.glob("*/week=*"))


def test_backfill_skips_published_weeks_unless_forced(small_settings: object, prefect_server: str) -> None:
    first = backfill(dt.date(2024, 6, 1), dt.date(2024, 6, 16), small_settings)
    # 2024-06-03 has data; 2024-06-10 has none and fails with a reason instead of publishing.
    assert [(r["week"], r["status"]) for r in first] == [("2024-06-03", "published"), ("2024-06-10", "failed")]
    assert "feed late or missing" in str(first[1]["why"])
    assert "flows/bb-tokyo-1: no files for 2024-06-10" in str(first[1]["why"])
    warehouse = small_settings.warehouse  # type: ignore[attr-defined]
    run_id = read_manifest(warehouse)["tables"]["usage_summary"][str(WEEK)]["run_id"]  # type: ignore[index]
    second = backfill(dt.date(2024, 6, 3), dt.date(2024, 6, 9), small_settings)
    assert second == [{"week": "2024-06-03", "status": "skipped", "why": "already published"}]
    forced = backfill(dt.date(2024, 6, 3), dt.date(2024, 6, 9), small_settings, force=True)
    assert forced[0]["status"] == "published" and forced[0]["run_id"] != run_id
    manifest = json.loads((warehouse / MANIFEST).read_text())
    assert manifest["tables"]["usage_summary"][str(WEEK)]["run_id"] == forced[0]["run_id"]
    assert len(manifest["tables"]["usage_summary"]) == 1


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "spec.json"):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    generate_to(tmp_path / "a", WEEK, broadband_users=120, mobile_phones=80, seed=3)
    generate_to(tmp_path / "b", WEEK, broadband_users=120, mobile_phones=80, seed=3)
    generate_to(tmp_path / "c", WEEK, broadband_users=120, mobile_phones=80, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_generator_refuses_a_week_that_does_not_start_on_monday(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Monday"):
        generate_to(tmp_path, dt.date(2024, 6, 4))
