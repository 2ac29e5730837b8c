"""The report page from its sections (tiny inline frames and bytes)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from html import unescape

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


def test_headers_are_words_not_snake_case() -> None:
    frame = pl.DataFrame({"then_mb": [1.0], "annual_factor": [1.1], "feed_type": ["flows"], "some_new_column": [1]})
    html = page.html_table(frame)
    headers = re.findall(r"<th>([^<]*)</th>", html)
    assert headers == ["then (MB/day)", "factor per year", "feed type", "some new column"]
    assert page.md_table(frame).splitlines()[0] == "| then (MB/day) | factor per year | feed type | some new column |"


BROADBAND_ROWS = [
    "TCP",
    "TCP <1024",
    "TCP 443 (https)",
    "TCP >=1024",
    "TCP 31000",
    "UDP",
    "UDP 443 (https/quic)",
    "ESP",
]


def test_port_sub_rows_are_indented_under_the_row_they_are_part_of() -> None:
    assert [page.category_level(c, BROADBAND_ROWS) for c in BROADBAND_ROWS] == [0, 1, 2, 1, 2, 0, 1, 0]
    # Mobile's Table 4 has no port ranges: its ports sit right under their protocol.
    assert page.category_level("TCP 443 (https)", ["TCP", "TCP 443 (https)"]) == 1
    frame = pl.DataFrame({"category": BROADBAND_ROWS[:3], "2024-06-03": [67.5, 61.1, 53.8]})
    _, html, markdown = page.port_table_section("Table 3", frame, "Table 3", [2020, 2024])
    assert "<tr class='level0'><td>TCP</td>" in html
    assert "<tr class='level2'><td class='sub' style='padding-left:3.1em'>TCP 443 (https)</td>" in html
    assert "| \u2003\u2003TCP 443 (https) | 53.8 |" in markdown
    assert "only the protocol rows (in bold)" in html


def test_a_week_whose_year_has_no_port_mix_gets_a_footnote() -> None:
    frame = pl.DataFrame({"category": ["TCP"], "2019-06-03": [70.0], "2020-06-01": [77.0], "2024-06-03": [67.5]})
    _, html, markdown = page.port_table_section("Table 3", frame, "Table 3", [2020, 2021, 2022, 2023, 2024])
    assert "<th>2019-06-03*</th><th>2020-06-01</th>" in html
    note = "* Week of 2019-06-03: the seed report's Table 3 starts in 2020, so the synthetic generator has no 2019"
    assert note in unescape(html) and note in markdown and "generates 2019's weeks with 2020's" in markdown
    _, html, _ = page.port_table_section("Table 3", frame.drop("2019-06-03"), "Table 3", [2020, 2024])
    assert "Week of" not in html and "*</th>" not in html


def test_the_page_has_contents_and_a_print_stylesheet() -> None:
    sections = [page.figure_section("Figure 3", "daily usage"), page.table_section("Data quality", pl.DataFrame())]
    html, _ = page.assemble_page(WEEK, sections, {})
    assert "<a href='#figure-3'>Figure 3: daily usage</a>" in html and "<section id='figure-3'>" in html
    assert "<section id='data-quality'>" in html
    assert "@media print" in html and "break-inside: avoid" in html
