"""What `status` and `check-calibration` print: weeks and months in separate lists, each by date;
the calibration's gen / pub columns and tolerances explained, and the verdicts following them."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flows import calibration_check as calibration
from flows.publish import build_catalog, publish_partition
from tests.flows.test_analyst_sandbox import publish_tiny_week
from transforms.run_records import PublicationRecord

TRAFFICREPORT = Path(sys.executable).with_name("trafficreport")
# Published out of date order, so that the order printed is the command's.
WEEKS = (dt.date(2024, 6, 3), dt.date(2019, 6, 3), dt.date(2021, 5, 31))
MONTHS = ("2024-05", "2019-01", "2020-12", "2019-11")


def _month_table(month: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "service": ["broadband"],
            "in_bps": [1e9],
            "out_bps": [9e9],
            "coverage": [1.0],
            "interfaces": [2],
            "counter_resets": [0],
            "month": [month],
        }
    )


@pytest.mark.slow
def test_status_lists_weeks_then_months_each_by_date(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    for i, week in enumerate(WEEKS):
        publish_tiny_week(warehouse, week, f"run-w{i}")
    for i, month in enumerate(MONTHS):
        record = PublicationRecord(audit_passed=True, replaced_run=None)
        publish_partition(
            warehouse, "month", month, f"run-m{i}", {"monthly_traffic": _month_table(month)}, record, None
        )
    build_catalog(warehouse)
    done = subprocess.run(
        [str(TRAFFICREPORT), "status", "--warehouse", str(warehouse), "--staging", str(tmp_path / "staging")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PREFECT_API_URL": ""},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    weeks_at = lines.index("published weeks: 3, 2019-06-03 .. 2024-06-03")
    months_at = lines.index("published months: 4, 2019-01 .. 2024-05")
    assert weeks_at < months_at
    week_rows = [line.split()[0] for line in lines[weeks_at + 2 : months_at] if line.strip()]
    month_rows = [line.split()[0] for line in lines[months_at + 2 :] if line.startswith("  ")]
    assert week_rows == ["2019-06-03", "2021-05-31", "2024-06-03"]
    assert month_rows == ["2019-01", "2019-11", "2020-12", "2024-05"]
    assert "run-w1" in lines[weeks_at + 2] and "passed" in lines[weeks_at + 2]
    assert lines[-1].startswith("catalog: up to date")


@pytest.mark.parametrize(
    ("statistic", "reference", "inside", "outside", "published"),
    [
        ("mean_mb", 100.0, 101.9, 102.1, True),
        ("mean_mb", 100.0, 104.9, 105.1, False),
        ("median_mb", 100.0, 95.1, 94.9, True),
        ("top10_share", 0.50, 0.519, 0.521, True),
        ("top1_share", 0.20, 0.229, 0.231, False),
        ("mode_mb", 100.0, 100.0 * 10**0.05, 100.0 * 10**0.1, True),
    ],
)
def test_each_verdict_follows_the_tolerance_the_footer_states(
    statistic: str, reference: float, inside: float, outside: float, published: bool
) -> None:
    assert calibration.usage_within(statistic, reference, inside, published)
    assert not calibration.usage_within(statistic, reference, outside, published)


def test_the_output_explains_gen_pub_and_the_tolerances() -> None:
    usage = pl.DataFrame(
        {
            "service": ["broadband", "broadband"],
            "direction": ["out", "out"],
            "statistic": ["mean_mb", "top1_share"],
            "target": [5000.0, 0.20],
            "truth": [5100.0, 0.21],
            "published": [5300.0, 0.215],
        }
    ).with_columns(
        truth_vs_target_ok=pl.Series([True, True]),
        published_vs_truth_ok=pl.Series([False, True]),  # 5300 is 3.9% above 5100: outside 2%
    )
    ports = pl.DataFrame(
        {
            "service": ["broadband"],
            "category": ["TCP 443 (https)"],
            "target": [54.0],
            "truth": [54.2],
            "published": [54.9],
            "truth_vs_target_ok": [True],
            "published_vs_truth_ok": [False],
        }
    )
    accuracy = {"heavy_users": 1200.0, "heavy_within_10pct": 0.97, "heavy_median_abs_error": 0.021}
    text = calibration.format_report(usage, ports, accuracy)
    lines = text.splitlines()
    assert lines[0].startswith("target: the reference report's row")
    assert any(line.startswith("gen: truth vs target") and "pub: published vs truth" in line for line in lines)
    footer = lines[lines.index("Tolerances (gen: truth vs target; pub: published vs truth):") :]
    assert "  mean, median        gen within 5%; pub within 2% (mean), 5% (median)" in footer
    assert "  port shares         gen within 0.5 points; pub within 0.3 points" in footer
    assert any("at least 95% estimated within 10%" in line for line in footer)
    assert lines[lines.index(next(line for line in lines if "mean_mb" in line))].endswith("ok  BAD")
    assert not calibration.within_tolerance(usage, ports, accuracy)
    fixed = usage.with_columns(published_vs_truth_ok=pl.lit(True))
    assert calibration.within_tolerance(fixed, ports.with_columns(published_vs_truth_ok=pl.lit(True)), accuracy)


def test_the_run_summary_of_an_accepted_failed_audit_names_the_failures_and_only_this_runs_tables() -> None:
    from flows.terminal import published_tables, run_summary
    from transforms.run_records import AuditCheck, AuditResult, StageTiming, WeekRun

    failed = AuditCheck("run", "unattributed share <= 5%", False, "7.2%")
    run = WeekRun(
        run_id="run-b",
        week="2024-06-03",
        published=True,
        accepted_failed_audit=True,
        audit=AuditResult((AuditCheck("usage_summary", "columns", True), failed)),
        seconds=12.5,
        stages=[StageTiming("ingest", 10, 100, 7.25), StageTiming("audit", 3, None, 0.5)],
    )
    manifest = {
        "tables": {
            "usage_summary": {"2024-06-03": {"run_id": "run-b", "rows": 4}, "2024-05-27": {"run_id": "run-a"}},
            "port_share": {"2024-06-03": {"run_id": "run-a", "rows": 35}},  # an older run's, kept
        }
    }
    tables = published_tables(manifest, run)
    assert tables == [("usage_summary", 4)]
    lines = run_summary(run, tables, "wh/reports/2024-06-03/report.html", "wh/catalog.duckdb").splitlines()
    assert lines[0] == "week 2024-06-03 published by run run-b in 12.5 s"
    assert lines[1] == (
        "  audit     FAILED (1 checks), published anyway (--accept-failed-audit): "
        "run: unattributed share <= 5% (observed 7.2%)"
    )
    assert lines[2] == "  tables    1: usage_summary (4 rows)"
    assert lines[-1] == "  stages    ingest 7.2 s, audit 0.5 s"


def test_a_backfill_summary_folds_many_published_months_into_one_line() -> None:
    from flows.backfill import format_summary
    from transforms.run_records import PeriodOutcome

    months = [PeriodOutcome("month", f"2019-{m:02d}", "published", f"run-{m}", seconds=3.0 + m) for m in range(1, 13)]
    failed = PeriodOutcome("month", "2020-01", "failed", why="RunFailed: no counters")
    week = PeriodOutcome("week", "2019-06-03", "published", "run-w", seconds=50.0)
    lines = format_summary([*months, failed, week]).splitlines()
    assert lines[0] == "failed: 1  published: 13"
    assert "month  2020-01     failed         0.0  RunFailed: no counters" in lines
    assert "week   2019-06-03  published     50.0  run-w" in lines
    assert lines[-1] == (
        "month  2019-01 .. 2019-12: 12 published, 4.0-15.0 s each (`trafficreport status` lists their runs)"
    )
    assert not any(line.startswith("month  2019-03 ") for line in lines)
    few = format_summary(months[:3]).splitlines()
    assert len(few) == 5 and few[-1].startswith("month  2019-03     published")
