"""The report's derived figures on tiny inline frames: week matching, normalisation, growth, buckets."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from transforms.report import figures as derive
from transforms.tables import ports

WEEK = dt.date(2024, 6, 3)


def test_the_year_earlier_week_is_the_nearest_published_within_four_weeks() -> None:
    published = [dt.date(2023, 5, 29), dt.date(2023, 7, 3), WEEK]
    assert derive.nearest_week(published, WEEK - dt.timedelta(weeks=52)) == dt.date(2023, 5, 29)
    assert derive.nearest_week([dt.date(2023, 8, 7)], WEEK - dt.timedelta(weeks=52)) is None


def test_five_years_take_one_week_per_year_and_leave_out_missing_years() -> None:
    published = [dt.date(2019, 6, 3), dt.date(2020, 2, 3), dt.date(2020, 6, 1), dt.date(2022, 5, 30), WEEK]
    assert derive.weeks_of_past_years(published, WEEK, 5) == [
        dt.date(2019, 6, 3),
        dt.date(2020, 6, 1),
        dt.date(2022, 5, 30),
        WEEK,
    ]


def _monthly(months: list[str], service: str, outs: list[float], ins: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"month": months, "service": service, "in_bps": ins, "out_bps": outs})


def test_monthly_levels_are_relative_to_january_2020_out_or_the_earliest_month() -> None:
    monthly = pl.concat(
        [
            _monthly(["2019-12", "2020-01", "2021-01"], "broadband", [90.0, 100.0, 150.0], [10.0, 12.0, 20.0]),
            _monthly(["2021-03", "2021-04"], "mobile", [40.0, 50.0], [4.0, 6.0]),
        ]
    )
    levels, note = derive.normalise_monthly_traffic(monthly)
    value = {(r["service"], r["direction"], r["month"]): r["level"] for r in levels.iter_rows(named=True)}
    assert value[("broadband", "out", "2020-01")] == 1.0 and value[("broadband", "in", "2021-01")] == 0.2
    assert value[("mobile", "out", "2021-03")] == 1.0 and value[("mobile", "out", "2021-04")] == 1.25
    assert note == "broadband: OUT of 2020-01 = 1; mobile: OUT of 2021-03 = 1"
    assert derive.missing_months(["2019-11", "2020-02", "2019-12"]) == ["2020-01"]
    assert derive.month_ranges(["2020-01", "2019-11", "2019-12", "2020-05"]) == [
        "2019-11 to 2020-01 (3 months)",
        "2020-05",
    ]


def test_traffic_growth_over_one_year_the_year_before_and_five_years() -> None:
    months = ["2019-06", "2022-06", "2023-06", "2024-06"]
    levels, _ = derive.normalise_monthly_traffic(
        _monthly(months, "broadband", [1.0, 1.5, 1.8, 2.0], [1.0, 1.0, 1.0, 1.6])
    )
    growth = {(r["direction"], r["period"]): r for r in derive.traffic_growth(levels, "2024-06").iter_rows(named=True)}
    assert growth[("OUT", "2023-06 -> 2024-06")]["factor"] == pytest.approx(2.0 / 1.8)
    assert growth[("OUT", "2022-06 -> 2023-06")]["factor"] == pytest.approx(1.2)
    five = growth[("IN", "2019-06 -> 2024-06")]
    assert five["factor"] == pytest.approx(1.6) and five["annual_factor"] == pytest.approx(1.6 ** (1 / 5))
    assert len(growth) == 6


def test_usage_growth_compares_two_weeks_statistics() -> None:
    earlier = dt.date(2019, 6, 3)
    summary = pl.DataFrame(
        {
            "week": [earlier, WEEK],
            "service": "broadband",
            "direction": "out",
            "mean_mb": [2986.0, 5743.0],
            "median_mb": [1187.0, 2372.0],
            "mode_mb": [1995.0, 5620.0],
        }
    )
    rows = {r["statistic"]: r for r in derive.usage_growth(summary, WEEK, earlier).iter_rows(named=True)}
    assert rows["mode"]["factor"] == pytest.approx(5620 / 1995)
    assert rows["mode"]["annual_factor"] == pytest.approx((5620 / 1995) ** 0.2)
    assert rows["mean"]["then_mb"] == 2986.0 and rows["median"]["now_mb"] == 2372.0


def test_port_buckets_take_the_lower_port_and_keep_every_byte() -> None:
    port_hours = pl.DataFrame(
        {
            "service": "broadband",
            "protocol": [6, 6, 6, 17, 17, 50],
            "port": [443, 80, 50000, 443, 53, None],
            "day": WEEK,
            "hour": [0, 0, 0, 0, 1, 1],
            "bytes": [10, 5, 7, 3, 2, 1],
        }
    )
    buckets = ports.bucket_port_hours(port_hours)
    assert buckets.height == 2 * len(ports.PORT_BUCKETS)  # every bucket at every hour, zero where empty
    at = {(r["hour"], r["bucket"]): r["bytes"] for r in buckets.iter_rows(named=True)}
    assert at[(0, "TCP 80/443")] == 15 and at[(0, "TCP >=1024")] == 7 and at[(0, "UDP 443")] == 3
    assert at[(1, "other")] == 3 and at[(1, "UDP 443")] == 0
    assert buckets["bytes"].sum() == port_hours["bytes"].sum()


def test_port_buckets_are_normalised_to_the_weeks_peak_hour_of_all_traffic() -> None:
    buckets = pl.DataFrame(
        {
            "day": [WEEK, WEEK, WEEK + dt.timedelta(days=1), WEEK + dt.timedelta(days=1)],
            "hour": [20, 20, 21, 21],
            "bucket": ["TCP 80/443", "UDP 443", "TCP 80/443", "UDP 443"],
            "bytes": [30.0, 10.0, 60.0, 20.0],
        }
    )
    levels = derive.normalise_port_buckets(buckets, WEEK)
    at = {(r["hour_of_week"], r["bucket"]): r["level"] for r in levels.iter_rows(named=True)}
    assert at[(45, "all")] == 1.0 and at[(20, "all")] == 0.5
    assert at[(45, "TCP 80/443")] == 0.75 and at[(20, "UDP 443")] == 0.125


def test_the_scatter_says_who_is_at_zero_and_why_light_uploaders_sit_on_rows() -> None:
    packet = 1_555_000 / 7  # one sampled packet of the week, per day
    in_bytes = np.array([0.0, 0.0, packet, packet, 2 * packet, 5e8])
    out_bytes = np.array([1e9, 0.0, 2e9, 3e9, 4e9, 5e9])
    note = derive.scatter_note(in_bytes, out_bytes, sampled=True, rates=["1:2048", "1:4096"])
    assert "'0' row (IN: 2) or column (OUT: 1)" in note
    assert "(1:2048, 1:4096)" in note and "The lowest row, IN = 0.22 MB/day (2 users)" in note
    assert "lowest row" not in derive.scatter_note(in_bytes, out_bytes, sampled=False, rates=[])
    assert derive.scatter_title("Figure 5", "broadband", 6, 6).endswith("all 6 users of the week")
    assert derive.scatter_title("Figure 5", "broadband", 5000, 6200).endswith("5,000 of 6,200 users, sampled")


def test_weeks_at_the_same_time_of_year_whatever_the_year() -> None:
    assert derive.same_time_of_year(dt.date(2019, 6, 3), WEEK)
    assert derive.same_time_of_year(dt.date(2023, 12, 25), dt.date(2024, 1, 8))  # across new year
    assert not derive.same_time_of_year(dt.date(2023, 9, 25), WEEK)
