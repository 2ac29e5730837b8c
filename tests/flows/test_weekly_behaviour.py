"""Flow behaviour on a small generated week: the audit gate, backfill skipping, determinism."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.backfill import format_summary, run_backfill
from flows.generate import generate_to
from flows.landing import directory_file
from flows.publish import MANIFEST, read_manifest
from flows.settings import Settings
from flows.storage import local_path
from flows.weekly import PUBLISHED_TABLES, AuditFailed, weekly_report
from tests.conftest import WEEK
from transforms.run_records import PeriodOutcome


def test_failed_audit_publishes_nothing(
    tmp_path: Path, small_landing: Path, small_settings: Settings, prefect_server: str
) -> None:
    # A directory that lost a third of the broadband subscriptions: their traffic is unattributed.
    landing = tmp_path / "landing"
    shutil.copytree(small_landing, landing)
    directory = pl.read_csv(
        local_path(directory_file(landing, dt.date.max)), schema_overrides={"phone_numbers": pl.String}
    )
    broadband = directory.filter(pl.col("service") == "broadband")
    directory.filter(
        ~pl.col("subscription_id").is_in(broadband["subscription_id"].head(broadband.height // 3).to_list())
    ).write_csv(local_path(directory_file(landing, dt.date.max)))
    settings = small_settings.model_copy(update={"landing": landing})
    with pytest.raises(AuditFailed, match="unattributed share") as failure:
        weekly_report(WEEK, settings)
    assert not (settings.warehouse / MANIFEST).exists()
    # The failure names its report and GX Data Docs; the docs hold a validation page per table.
    docs = Path(str(failure.value).split("data docs: ")[1])
    summary = Path(str(failure.value).split("report: ")[1].split(",")[0])
    assert "FAIL run: unattributed share of bytes" in summary.read_text()
    assert docs.name == "index.html" and docs.exists()
    pages = {p.parts[-4] for p in docs.parent.glob("validations/*/*/*/*.html")}
    assert pages == set(PUBLISHED_TABLES)
    assert not list(settings.warehouse.glob("*/week=*"))


def test_backfill_skips_published_weeks_unless_forced(
    small_settings: Settings, prefect_server: str, tmp_path: Path
) -> None:
    # A copy of the landing zone where one exporter has started delivering the next week.
    landing = tmp_path / "landing"
    shutil.copytree(local_path(small_settings.landing), landing)
    exporter = sorted((landing / "flows").iterdir())[0]
    shutil.copytree(exporter / "2024-06-03", exporter / "2024-06-10")
    settings = small_settings.model_copy(update={"landing": landing})
    seen: list[PeriodOutcome] = []
    first = run_backfill(dt.date(2024, 5, 20), dt.date(2024, 6, 23), settings, on_result=seen.append)
    weeks = [(r.period, r.status) for r in first if r.kind == "week"]
    assert weeks == [
        ("2024-05-20", "skipped"),
        ("2024-05-27", "skipped"),
        ("2024-06-03", "published"),
        ("2024-06-10", "failed"),
        ("2024-06-17", "skipped"),
    ]
    assert sorted(map(str, seen), key=str) == sorted(map(str, first), key=str)  # reported as they finished
    assert first[0].why == "nothing landed"
    assert "feed late or missing" in str(first[3].why)
    assert f"flows/{exporter.name}: no files for 2024-06-11, 2024-06-12" in str(first[3].why)
    assert [r for r in first if r.kind == "month"] == []  # no month lies wholly in the range
    summary = format_summary(first)
    assert "failed: 1" in summary and "published: 1" in summary and "2024-06-10  failed" in summary
    warehouse = settings.warehouse
    run_id = read_manifest(warehouse)["tables"]["usage_summary"][str(WEEK)]["run_id"]
    second = run_backfill(dt.date(2024, 6, 3), dt.date(2024, 6, 9), settings)
    assert second == [PeriodOutcome("week", "2024-06-03", "skipped", why="already published")]
    forced = run_backfill(dt.date(2024, 6, 3), dt.date(2024, 6, 9), settings, force=True)
    assert forced[0].status == "published" and forced[0].run_id != run_id
    manifest = json.loads((warehouse / MANIFEST).read_text())
    assert manifest["tables"]["usage_summary"][str(WEEK)]["run_id"] == forced[0].run_id
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
