"""The demo week end to end: generator vs reference, published vs ground truth, catalog, privacy."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.calibration_check import calibration_report
from flows.landing import directory_file
from flows.publish import CATALOG, MANIFEST
from flows.storage import local_path
from flows.weekly import PUBLISHED_TABLES
from tests.conftest import WEEK, PublishedWeek


@pytest.fixture(scope="module")
def report(calibrated_week: PublishedWeek) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    settings = calibrated_week.settings
    return calibration_report(calibrated_week.landing, settings.warehouse, settings.hmac_key())  # type: ignore[attr-defined]


def _failures(rows: pl.DataFrame, column: str) -> list[dict[str, object]]:
    return rows.filter(~pl.col(column)).to_dicts()


def test_generated_users_reproduce_the_2024_reference_rows(
    report: tuple[pl.DataFrame, pl.DataFrame, dict[str, float]],
) -> None:
    usage, port_rows, _ = report
    assert usage.height == 20  # 2 services x 2 directions x 5 statistics
    assert _failures(usage, "truth_vs_target_ok") == []
    assert _failures(port_rows, "truth_vs_target_ok") == []


def test_published_figures_match_the_ground_truth(report: tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]) -> None:
    usage, port_rows, accuracy = report
    assert _failures(usage, "published_vs_truth_ok") == []
    assert _failures(port_rows, "published_vs_truth_ok") == []
    assert accuracy["heavy_users"] > 1000
    assert accuracy["heavy_within_10pct"] >= 0.95


def test_catalog_opens_read_only_and_report_views_match_the_tables(calibrated_week: PublishedWeek) -> None:
    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    con = duckdb.connect(str(warehouse / CATALOG), read_only=True)
    try:
        table1 = con.execute(
            "select direction, users, mean_mb, top10_pct from table1_broadband_usage where week = $w", {"w": WEEK}
        ).fetchall()
        summary = con.execute(
            "select upper(direction), users, mean_mb, 100 * top10_share from usage_summary"
            " where service = 'broadband' order by direction"
        ).fetchall()
        table3 = con.execute("select category from table3_broadband_ports where week = $w", {"w": WEEK}).fetchall()
        with pytest.raises(duckdb.Error):
            con.execute("create table scratch (x int)")
    finally:
        con.close()
    assert table1 == summary
    assert table1[0][1] > 2500
    assert [c for (c,) in table3][:3] == ["TCP", "TCP <1024", "TCP 443 (https)"]
    assert len(table3) == 19


def test_manifest_lists_every_table_and_only_files_that_exist(calibrated_week: PublishedWeek) -> None:
    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    manifest = json.loads((warehouse / MANIFEST).read_text())
    assert set(manifest["tables"]) == set(PUBLISHED_TABLES)
    assert len(PUBLISHED_TABLES) == 9
    run_ids = {entry[str(WEEK)]["run_id"] for entry in manifest["tables"].values()}
    assert run_ids == {calibrated_week.run.run_id}
    for entry in manifest["tables"].values():
        for f in entry[str(WEEK)]["files"]:
            assert (warehouse / f).is_file()
    assert manifest["runs"][calibrated_week.run.run_id]["audit_passed"] is True


def test_clear_subscriber_ids_and_phone_numbers_never_reach_the_warehouse(calibrated_week: PublishedWeek) -> None:
    directory = pl.read_csv(
        local_path(directory_file(calibrated_week.landing, dt.date.max)), schema_overrides={"phone_numbers": pl.String}
    )
    secrets = set(directory["subscription_id"].to_list())
    secrets |= {p for cell in directory["phone_numbers"].drop_nulls().to_list() for p in cell.split(";") if p}
    secrets |= set(directory["login"].drop_nulls().to_list())
    secrets.discard("")
    assert len(secrets) > 5000
    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    for path in warehouse.rglob("*"):
        if path.is_file() and path.suffix in (".parquet", ".json", ".md"):
            text = pl.read_parquet(local_path(path)).write_csv() if path.suffix == ".parquet" else path.read_text()
            leaked = [s for s in secrets if s in text]
            assert leaked == [], f"{path} holds clear identities, e.g. {leaked[:3]}"


def test_hourly_profile_peaks_in_the_evening_for_broadband_downloads(calibrated_week: PublishedWeek) -> None:
    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    con = duckdb.connect(str(warehouse / CATALOG), read_only=True)
    try:
        rows = con.execute(
            "select hour, out_bytes from hourly_weekday_traffic where service = 'broadband' order by out_bytes desc"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 24
    assert rows[0][0] in range(19, 24)


def test_every_exporter_has_a_row_for_every_day_with_its_staged_records(calibrated_week: PublishedWeek) -> None:
    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    manifest = json.loads((warehouse / MANIFEST).read_text())
    [file] = manifest["tables"]["exporter_day_records"][str(WEEK)]["files"]
    rows = pl.read_parquet(warehouse / file)
    ingest = calibrated_week.run.ingest
    assert ingest is not None
    assert rows.height == 7 * len(ingest.exporters)
    assert sorted(set(rows["day"].to_list())) == [WEEK + dt.timedelta(days=d) for d in range(7)]
    for exporter in ingest.exporters:
        mine = rows.filter(pl.col("exporter") == exporter.exporter)
        assert mine["records"].sum() == exporter.records > 0
        assert set(mine["service"]) == {exporter.service}


def test_check_calibration_explains_its_columns_and_tolerances_and_passes(calibrated_week: PublishedWeek) -> None:
    settings = calibrated_week.settings
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("trafficreport")),
            "check-calibration",
            "--landing",
            str(calibrated_week.landing),
            "--warehouse",
            str(settings.warehouse),  # type: ignore[attr-defined]
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("target: the reference report's row for the week's year")
    assert any(line.startswith("gen: truth vs target") for line in lines)
    assert "Tolerances (gen: truth vs target; pub: published vs truth):" in lines
    assert lines[-1] == "calibration: within tolerance"
    assert not any(line.endswith("BAD") for line in lines)
