"""The report page from its sections (tiny inline frames and bytes)."""

from __future__ import annotations

import base64
import datetime as dt

import polars as pl

from transforms.report import page

WEEK = dt.date(2024, 6, 3)


def test_tables_format_numbers_and_escape_text() -> None:
    frame = pl.DataFrame({"category": ["TCP <1024"], "users": [2988], "share": [12.345]})
    html = page.html_table(frame)
    assert "<td>TCP &lt;1024</td>" in html and "<td class='n'>2,988</td>" in html and "12.3</td>" in html
    assert page.md_table(frame, digits=2).splitlines()[2] == "| TCP <1024 | 2988 | 12.35 |"


def test_the_page_embeds_each_figure_and_lists_it_in_the_markdown() -> None:
    png = b"\x89PNG fake"
    figure = page.figure_section("Figure 3", "daily usage", note="log scale")
    table = page.table_section("Table 1", pl.DataFrame({"users": [3]}))
    html, markdown = page.assemble_page(WEEK, [figure, table], {page.figure_key("Figure 3"): png})
    assert f"src='data:image/png;base64,{base64.b64encode(png).decode()}'" in html
    assert "<h2>Figure 3: daily usage</h2>" in html and "<p class='note'>log scale</p>" in html
    assert "![Figure 3](figure3.png)\n\nlog scale" in markdown
    assert markdown.startswith("# Broadband Traffic Report, week of 2024-06-03\n")


def test_port_shares_are_one_column_per_week_in_this_weeks_order() -> None:
    ports = pl.DataFrame(
        {
            "week": [WEEK, WEEK, dt.date(2023, 6, 5)],
            "category": ["TCP", "UDP", "TCP"],
            "position": [2, 1, 1],
            "share_pct": [60.0, 40.0, 70.0],
        }
    )
    wide = page.ports_by_week(ports, WEEK)
    assert wide.columns == ["category", "2023-06-05", "2024-06-03"]
    assert wide["category"].to_list() == ["UDP", "TCP"]
    assert wide.row(0) == ("UDP", None, 40.0)
