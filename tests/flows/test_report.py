"""The report of a published week: every figure embedded (and saved) as a real PNG, and the
numbers in its tables equal to the warehouse's."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pytest

from flows import report
from flows.publish import read_manifest, read_published
from flows.report import build_report
from tests.conftest import WEEK, PublishedWeek

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    # Figure 5 draws every user of Table 1, those without IN on the "0" row, and says how many.
    users = read_published(warehouse, read_manifest(warehouse), "user_week_usage", str(WEEK)).filter(
        (pl.col("service_group") == "broadband") & (pl.col("customer_type") == "personal")
    )
    broadband_in = summary.filter((pl.col("service") == "broadband") & (pl.col("direction") == "in"))
    assert users.height == broadband_in["users"][0]
    zero_in = users.filter(pl.col("in_bytes_per_day") == 0).height
    assert f"drawn on the '0' row (IN: {zero_in:,})" in unescape(report.html)
    assert "The lowest row, IN = " in report.html
    assert not [h for h in re.findall(r"<th>([^<]*)</th>", report.html) if "_" in h]
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


# The figures drawn from tiny frames (no warehouse): where their legends are, their colours, frames.
LAST_YEAR = dt.date(2023, 5, 29)


def _hours(weeks: list[dt.date]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"week": w, "hour": h, "out_bytes": 1e12 * (1 + h / 23) * (1 + k), "in_bytes": 1e11 * (1 + k)}
            for k, w in enumerate(weeks)
            for h in range(24)
        ]
    )


def _users(seed: int, n: int = 300) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user_key": [f"{seed}-{i:04d}" for i in range(n)],
            "in_bytes_per_day": np.where(np.arange(n) < 3, 0.0, 10 ** rng.normal(8.3, 0.6, n)),
            "out_bytes_per_day": 10 ** rng.normal(9.5, 0.5, n),
        }
    )


def _buckets(buckets: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"hour_of_week": h, "bucket": b, "level": (0.2 + 0.8 * (h % 24) / 23) * (1.0 if b == "all" else 0.3)}
            for b in ("all", *buckets)
            for h in range(168)
        ]
    )


def _monthly_levels() -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "service": s,
                "month": f"{y}-{m:02d}",
                "direction": d,
                "level": (1.0 if d == "out" else 0.15) * (1 + y - 2020),
            }
            for s in ("broadband", "mobile")
            for d in ("in", "out")
            for y in (2020, 2021)
            for m in range(1, 13)
        ]
    )


def _drawn() -> dict[str, Figure]:
    weeks = [dt.date(2019, 6, 3), dt.date(2021, 5, 31), LAST_YEAR, WEEK]
    return {
        "Figure 1": report.monthly_figure(_monthly_levels(), "OUT of 2020-01 = 1"),
        "Figure 2": report.hourly_figure(_hours([LAST_YEAR, WEEK]), [LAST_YEAR, WEEK], ("out", "in"), "2", WEEK),
        "Figure 3": report.density_figure({LAST_YEAR: _users(1), WEEK: _users(2)}, "3"),
        "Figure 5": report.scatter_figure(_users(2), "5", "broadband"),
        "Figure 7": report.port_bucket_figure(
            [(LAST_YEAR, _buckets(BROADBAND_BUCKETS)), (WEEK, _buckets(BROADBAND_BUCKETS))], BROADBAND_BUCKETS, "7"
        ),
        "Figure 8": report.port_bucket_figure([(WEEK, _buckets(MOBILE_BUCKETS))], MOBILE_BUCKETS, "8"),
        "Figure 9": report.hourly_figure(_hours(weeks), weeks, ("out",), "9", WEEK),
        "Figure 11": report.density_figure({w: _users(k) for k, w in enumerate(weeks)}, "11"),
    }


BROADBAND_BUCKETS = ("TCP 80/443", "TCP >=1024", "UDP 443")
MOBILE_BUCKETS = ("TCP 80/443", "UDP 443")


@pytest.fixture(scope="module")
def drawn() -> Iterator[dict[str, Figure]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = _drawn()
    for figure in figures.values():
        figure.canvas.draw()
    yield figures
    for figure in figures.values():
        plt.close(figure)


def _line_colours(figure: Figure) -> dict[str, str]:
    from matplotlib.colors import to_hex

    return {
        str(line.get_label()): to_hex(line.get_color())
        for axis in figure.axes
        for line in axis.get_lines()
        if not str(line.get_label()).startswith("_")
    }


def test_no_legend_covers_a_panel(drawn: dict[str, Figure]) -> None:
    for name, figure in drawn.items():
        legends = [*figure.legends, *(legend for a in figure.axes if (legend := a.get_legend()) is not None)]
        assert legends, name
        for legend in legends:
            box = legend.get_window_extent()
            for axis in figure.axes:
                assert not box.overlaps(axis.get_window_extent()), (name, axis.get_title())


def test_a_bucket_has_the_same_colour_in_figures_7_and_8(drawn: dict[str, Figure]) -> None:
    seven, eight = _line_colours(drawn["Figure 7"]), _line_colours(drawn["Figure 8"])
    assert set(eight) <= set(seven) and {b: seven[b] for b in eight} == eight
    assert len(set(seven.values())) == len(seven)  # and the buckets of one figure differ


def test_a_year_has_the_same_colour_in_every_figure(drawn: dict[str, Figure]) -> None:
    by_figure = [_line_colours(drawn[n]) for n in ("Figure 2", "Figure 3", "Figure 9", "Figure 11")]
    for label in (f"week of {WEEK}", f"week of {LAST_YEAR}"):
        assert len({colours[label] for colours in by_figure}) == 1, label
    eleven = _line_colours(drawn["Figure 11"])
    assert len(set(eleven.values())) == len(eleven)


def test_the_first_and_last_hour_are_inside_the_frame(drawn: dict[str, Figure]) -> None:
    for name in ("Figure 2", "Figure 9"):
        for axis in drawn[name].axes:
            low, high = axis.get_xlim()
            assert low < 0 and high > 23, name


def test_figure_1_gives_in_its_own_scale(drawn: dict[str, Figure]) -> None:
    out_axis, in_axis = drawn["Figure 1"].axes[:2]
    assert (out_axis.get_title(), in_axis.get_title()) == ("OUT (download)", "IN (upload)")
    # IN (0.15-0.3 here) fills its panel instead of the bottom fifth of OUT's.
    assert in_axis.get_ylim()[1] < 0.5 < out_axis.get_ylim()[1]


def test_the_scatter_draws_every_user_those_with_zero_in_included(drawn: dict[str, Figure]) -> None:
    [axis] = drawn["Figure 5"].axes
    points = sum(np.asarray(c.get_offsets()).shape[0] for c in axis.collections)
    assert points == 300
    assert "0" in [t.get_text() for t in axis.get_yticklabels()]
