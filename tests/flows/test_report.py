"""The report of a published week: every figure embedded (and saved) as a real PNG, and the
numbers in its tables equal to the warehouse's."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import polars as pl

from flows.publish import read_manifest, read_published
from flows.report import build_report
from tests.conftest import WEEK, PublishedWeek

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = tuple(f"Figure {n}" for n in range(2, 12))  # Figure 1 needs published months


def test_the_weekly_flow_renders_the_report_with_every_figure(calibrated_week: PublishedWeek) -> None:
    page_path = Path(str(calibrated_week.run.report))
    page = page_path.read_text()
    for figure in FIGURES:
        match = re.search(rf"<img alt='{figure}' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
        assert match, figure
        assert base64.b64decode(match.group(1)).startswith(PNG)
        saved = page_path.parent / f"{figure.lower().replace(' ', '')}.png"
        assert saved.read_bytes().startswith(PNG)
    markdown = (page_path.parent / "report.md").read_text()
    assert all(f"![{figure}]" in markdown for figure in FIGURES)
    assert "Data quality" in page and str(calibrated_week.run.run_id) in page


def test_report_tables_hold_the_warehouse_numbers(calibrated_week: PublishedWeek) -> None:
    warehouse = calibrated_week.settings.warehouse  # type: ignore[attr-defined]
    report = build_report(warehouse, WEEK)
    summary = read_published(warehouse, read_manifest(warehouse), "usage_summary", str(WEEK))
    for row in summary.iter_rows(named=True):
        for column in ("mean_mb", "median_mb", "mode_mb"):
            text = f"{row[column]:,.2f}"
            assert f"<td class='n'>{text}</td>" in report.html, (row["service"], row["direction"], column)
            assert text in report.markdown
    shares = read_published(warehouse, read_manifest(warehouse), "port_share", str(WEEK))
    https = shares.filter((pl.col("service") == "broadband") & (pl.col("category") == "TCP 443 (https)"))
    assert f"<td class='n'>{https['share_pct'][0]:,.1f}</td>" in report.html
    # One week published: no year-earlier or five-year comparison, no months, and the page says so.
    for note in (
        "No week near 2023-06-05 is published: no comparison with a year earlier.",
        "No week near 2019-06-10 is published: no five-year comparison.",
        "No month of interface counters is published",
    ):
        assert note in report.html and note in report.markdown
    # The data-quality section names every exporter with where its sampling rate came from.
    feeds = read_published(warehouse, read_manifest(warehouse), "ingest_quality", str(WEEK))
    for row in feeds.filter(pl.col("feed_type") == "flows").iter_rows(named=True):
        assert row["sampling"].startswith("1:") and f"<td>{row['sampling']}</td>" in report.html


def test_port_table_lines_up_weeks_whose_categories_differ() -> None:
    from transforms.report.page import ports_by_week

    earlier, now = WEEK.replace(year=2023), WEEK
    ports = pl.DataFrame(
        {
            "week": [earlier, earlier, now, now],
            "position": [1, 2, 1, 2],
            "category": ["TCP", "TCP 1935 (rtmp)", "TCP", "UDP 443 (https/quic)"],
            "share_pct": [80.0, 3.0, 70.0, 20.0],
        }
    )
    table = ports_by_week(ports, now)
    assert table.columns == ["category", str(earlier), str(now)]
    assert table.rows() == [
        ("TCP", 80.0, 70.0),
        ("UDP 443 (https/quic)", None, 20.0),  # this week's rows first, in its order
        ("TCP 1935 (rtmp)", 3.0, None),
    ]
