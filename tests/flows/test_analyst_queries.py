"""The analyst examples in sql/examples/ run against a published week and agree with the
warehouse's own files; the catalog opens read-only."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.cli import main
from flows.publish import local_catalog, query_frame, read_manifest, read_published
from tests.conftest import WEEK, PublishedWeek

EXAMPLES = Path(__file__).resolve().parents[2] / "sql" / "examples"


def _run(published: PublishedWeek, name: str, **params: object) -> pl.DataFrame:
    warehouse = published.settings.warehouse  # type: ignore[attr-defined]
    con = duckdb.connect(str(local_catalog(warehouse)), read_only=True)
    try:
        return query_frame(con, (EXAMPLES / name).read_text(), params)
    finally:
        con.close()


def _table(published: PublishedWeek, name: str) -> pl.DataFrame:
    warehouse = published.settings.warehouse  # type: ignore[attr-defined]
    return read_published(warehouse, read_manifest(warehouse), name, str(WEEK))


def test_download_trend_lists_every_published_week(calibrated_week: PublishedWeek) -> None:
    trend = _run(calibrated_week, "download_trend.sql")
    summary = _table(calibrated_week, "usage_summary").filter(
        (pl.col("service") == "broadband") & (pl.col("direction") == "out")
    )
    assert trend["week"].to_list() == [WEEK]
    assert trend["median_mb"][0] == pytest.approx(summary["median_mb"][0])
    assert trend["median_change"][0] is None  # no week before the first


def test_top_ports_agrees_with_port_usage(calibrated_week: PublishedWeek) -> None:
    top = _run(calibrated_week, "top_ports.sql", week=WEEK, service="broadband", limit=5)
    ports = _table(calibrated_week, "port_usage").filter(pl.col("service") == "broadband")
    expected = ports.sort("bytes", descending=True).head(5)
    assert top["bytes"].to_list() == expected["bytes"].to_list()
    assert top["share_pct"][0] == pytest.approx(100 * expected["bytes"][0] / ports["bytes"].sum())
    assert (top["port"][0], top["protocol"][0]) == (443, 6)  # HTTPS over TCP leads, as in Table 3


def test_heavy_users_counts_match_the_user_table(calibrated_week: PublishedWeek) -> None:
    heavy = _run(calibrated_week, "heavy_users.sql", week=WEEK, threshold_gb=10)
    users = _table(calibrated_week, "user_week_usage").filter(
        (pl.col("customer_type") == "personal") & (pl.col("service_group") == "broadband")
    )
    row = heavy.filter(pl.col("service_group") == "broadband").row(0, named=True)
    assert row["users"] == users.height
    assert row["heavy_users"] == users.filter(pl.col("out_bytes_per_day") > 10e9).height > 0
    share = users.filter(pl.col("out_bytes_per_day") > 10e9)["out_bytes_per_day"].sum()
    total = float(users["out_bytes_per_day"].sum())
    assert row["heavy_download_pct"] == pytest.approx(100 * float(share) / total)


def test_cli_query_binds_parameters_and_the_catalog_is_read_only(
    calibrated_week: PublishedWeek, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = str(calibrated_week.settings.warehouse)  # type: ignore[attr-defined]
    args = ["query", "--warehouse", warehouse, "--file", str(EXAMPLES / "top_ports.sql")]
    assert main([*args, "--param", f"week={WEEK}", "--param", "service=mobile", "--param", "limit=3"]) == 0
    printed = capsys.readouterr().out
    assert "shape: (3, 4)" in printed
    assert main(["query", "--warehouse", warehouse, "delete from usage_summary"]) == 2
    refusal = capsys.readouterr().err.splitlines()
    assert len(refusal) == 1 and refusal[0].startswith("trafficreport: query refused:") and "read-only" in refusal[0]


def test_status_lists_the_published_week_with_its_audit_and_run(
    calibrated_week: PublishedWeek, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = str(calibrated_week.settings.warehouse)  # type: ignore[attr-defined]
    assert main(["status", "--warehouse", warehouse]) == 0
    lines = capsys.readouterr().out.splitlines()
    [row] = [line for line in lines if line.split()[:1] == [str(WEEK)]]
    fields = row.split()
    assert fields[1] == "passed" and fields[-1] == calibrated_week.run.run_id
    assert int(fields[-3]) == len(read_manifest(calibrated_week.settings.warehouse)["tables"])  # type: ignore[attr-defined]
