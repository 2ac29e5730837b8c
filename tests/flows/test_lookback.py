"""The five-year look-back: two analysed weeks five years apart (each calibrated to its own year) and
months of interface counters, published by one backfill; the report then compares them."""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from flows.backfill import run_backfill
from flows.generate import generate_to
from flows.monthly import write_counters
from flows.publish import read_manifest, read_published
from flows.report import build_report
from tests.conftest import WEEK, PublishedWeek
from transforms.synth.monthly import generate_counter_polls
from transforms.synth.reference import usage_targets
from transforms.tables.stats import BYTES_PER_MB, MODE_BIN_DECADES, smoothed_log_histogram

EARLIER = dt.date(2019, 6, 3)


@pytest.fixture(scope="module")
def lookback(calibrated_week: PublishedWeek, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list]:
    root = tmp_path_factory.mktemp("lookback")
    landing = root / "landing"
    shutil.copytree(calibrated_week.landing, landing)
    generate_to(landing, EARLIER, broadband_users=3000, mobile_phones=3000, seed=19)
    for first, last in (("2019-05", "2019-07"), ("2024-05", "2024-07")):
        write_counters(generate_counter_polls(first, last, "Asia/Tokyo", seed=int(first[:4])), landing, "Asia/Tokyo")
    settings = calibrated_week.settings.model_copy(
        update={
            "landing": landing,
            "warehouse": root / "warehouse",
            "staging": root / "staging",
        }
    )
    results = run_backfill(dt.date(2019, 1, 1), dt.date(2024, 6, 30), settings, weeks=[EARLIER, WEEK])
    return settings, results


def _bins_apart(a: float, b: float) -> float:
    return abs(math.log10(a / b)) / MODE_BIN_DECADES


def test_one_backfill_publishes_both_weeks_and_every_month_with_counters(lookback: tuple[object, list]) -> None:
    settings, results = lookback
    ran = [(r.kind, r.period, r.status) for r in results if r.status != "skipped"]
    assert ran == [
        ("month", "2019-05", "published"),
        ("month", "2019-06", "published"),
        ("month", "2019-07", "published"),
        ("month", "2019-08", "failed"),
        ("month", "2024-05", "published"),
        ("month", "2024-06", "published"),
        ("week", "2019-06-03", "published"),
        ("week", "2024-06-03", "published"),
    ]
    # The poller's files of August 2019 hold only the poll that closed July: half a month (less)
    # is never published.
    [august] = [r for r in results if r.period == "2019-08"]
    assert "least-covered interface covers >= 0.95 of the month (observed 0.00" in august.why
    # 2024-07 ends after the range; months without counters are skipped as nothing landed.
    skipped = {r.period: r.why for r in results if r.status == "skipped"}
    assert skipped["2020-03"] == "nothing landed" and "2024-07" not in skipped
    again = run_backfill(dt.date(2019, 1, 1), dt.date(2024, 6, 30), settings, weeks=[EARLIER, WEEK])  # type: ignore[arg-type]
    assert {r.status for r in again if r.period != "2019-08"} == {"skipped"}


def test_each_year_is_close_to_its_own_reference_row(lookback: tuple[object, list]) -> None:
    settings, _ = lookback
    warehouse = settings.warehouse  # type: ignore[attr-defined]
    manifest = read_manifest(warehouse)
    for week in (EARLIER, WEEK):
        summary = read_published(warehouse, manifest, "usage_summary", str(week))
        users = read_published(warehouse, manifest, "user_week_usage", str(week)).filter(
            pl.col("customer_type") == "personal"
        )
        for row in summary.iter_rows(named=True):
            target = usage_targets(row["service"], week.year, row["direction"])
            where = (week, row["service"], row["direction"])
            assert row["mean_mb"] == pytest.approx(target["mean_mb"], rel=0.05), where
            assert row["median_mb"] == pytest.approx(target["median_mb"], rel=0.05), where
            # The mode is the peak of a smoothed histogram; where the top is flat (broadband IN is
            # flat within ~1% over 0.3 decades) noise moves the peak by bins. What holds is that the
            # reference mode sits on the published distribution's top.
            volumes = users.filter(pl.col("service_group") == row["service"])[f"{row['direction']}_bytes_per_day"]
            bins, smoothed = smoothed_log_histogram(volumes.to_numpy() / BYTES_PER_MB)
            at_reference = smoothed[bins == round(math.log10(target["mode_mb"]) / MODE_BIN_DECADES)][0]
            assert at_reference >= 0.97 * smoothed.max(), (*where, row["mode_mb"], target["mode_mb"])


def test_the_report_shows_five_years_of_growth_from_the_warehouse(lookback: tuple[object, list]) -> None:
    settings, _ = lookback
    warehouse = settings.warehouse  # type: ignore[attr-defined]
    report = build_report(warehouse, WEEK)
    manifest = read_manifest(warehouse)
    then = read_published(warehouse, manifest, "usage_summary", str(EARLIER))
    now = read_published(warehouse, manifest, "usage_summary", str(WEEK))
    both = now.join(then, on=["service", "direction"], suffix="_then")
    for row in both.iter_rows(named=True):
        factor = row["mode_mb"] / row["mode_mb_then"]
        assert f"<td class='n'>{factor:,.2f}</td>" in report.html
        if row["service"] == "broadband":
            # The seed: mode OUT x2.8 (2.0 GB -> 5.6 GB), IN x2.5 (89 MB -> 224 MB); each mode is a
            # 0.05-decade bin centre, exact to a bin or two where the top is flat (see above).
            stated = 2.8 if row["direction"] == "out" else 2.5
            assert _bins_apart(factor, stated) <= (1.01 if row["direction"] == "out" else 3.01), row["direction"]
    assert "Five years: growth of daily usage per user (week of 2019-06-03 to week of 2024-06-03)" in report.html
    # Figure 1 from the published months, the gap between them named; growth over five years.
    assert "<img alt='Figure 1' src='data:image/png;base64," in report.html
    assert "missing: 2019-08 to 2024-04 (57 months)." in report.html
    monthly = pl.concat(read_published(warehouse, manifest, "monthly_traffic", m) for m in ("2019-06", "2024-06")).sort(
        "month"
    )
    for service in ("broadband", "mobile"):
        rows = monthly.filter(pl.col("service") == service)
        five = rows["out_bps"][1] / rows["out_bps"][0]
        assert f"<td class='n'>{five:,.2f}</td>" in report.html
        if service == "broadband":
            assert five == pytest.approx(2.01, rel=0.03)  # the seed: June 2019 -> June 2024 OUT x2.01
    # Figures 9-11 hold both weeks; Figure 3 compares with a year earlier, which is not published.
    assert "Weeks shown: 2019-06-03, 2024-06-03." in report.html
    assert "No week near 2023-06-05 is published" in report.html
    figures = Path(str(warehouse)) / "reports" / str(WEEK)
    assert {p.name for p in figures.glob("figure*.png")} == {f"figure{n}.png" for n in range(1, 12)}
    # 2019's port columns come from 2020's mix (the seed's Tables 3 and 4 start in 2020): footnoted.
    for table in ("Table 3", "Table 4"):
        assert f"Week of 2019-06-03: the seed report&#x27;s {table} starts in 2020" in report.html
    assert report.html.count("<th>2019-06-03*</th>") == 2
    # Headers are words, never column names.
    assert not [h for h in re.findall(r"<th>([^<]*)</th>", report.html) if "_" in h]
