"""The generator's fitted mixtures: one peak per (service, year, direction) density, and the look-back
years' statistics within check-calibration's tolerances, their tops distinct enough for a measured
week to find the truth's mode (the generator's stratified draws with a measured week's error)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from transforms.synth.calibration import (
    DISTINCT_TOP,
    Mixture,
    count_local_maxima,
    mode_bin_of,
    second_peak_excess,
)
from transforms.synth.mixtures import MIXTURES
from transforms.synth.reference import usage_targets
from transforms.tables.stats import MODE_SMOOTHING_DECADES, mode_of_log_volume

# The years `trafficreport lookback-demo` generates and check-calibration is run on.
LOOKBACK_YEARS = range(2019, 2025)


def test_a_curve_with_two_peaks_counts_two_and_a_shoulder_one() -> None:
    y = np.arange(-2.0, 6.0, 0.002)
    two_peaks = Mixture((0.5, 0.5), (2.4, 3.75), (0.25, 0.4)).density(y)
    shoulder = Mixture((0.4, 0.6), (2.4, 3.75), (0.8, 0.4)).density(y)
    assert count_local_maxima(two_peaks) == 2 and second_peak_excess(two_peaks) > 0.1
    assert count_local_maxima(shoulder) == 1 and second_peak_excess(shoulder) == 0.0
    assert count_local_maxima(np.array([0.0, 1.0, 1.0, 0.5, 0.5, 0.2])) == 1  # plateaus count once


@pytest.mark.parametrize("key", sorted(MIXTURES), ids=lambda k: "/".join(map(str, k)))
def test_every_fitted_density_has_one_peak(key: tuple[str, int, str]) -> None:
    weights, means, sds = MIXTURES[key]
    mixture = Mixture(weights, means, sds)
    # On the log10(MB/day) grid the generator draws from (0.002 decades, 9 sds beyond every component).
    assert mixture.local_maxima() == 1, (key, np.round(means, 2), np.round(sds, 2))


@pytest.mark.parametrize("service", ["broadband", "mobile"])
@pytest.mark.parametrize("year", LOOKBACK_YEARS)
@pytest.mark.parametrize("direction", ["in", "out"])
def test_lookback_years_match_their_reference_row_within_check_calibrations_tolerance(
    service: str, year: int, direction: str
) -> None:
    weights, means, sds = MIXTURES[(service, year, direction)]
    fitted = Mixture(weights, means, sds).statistics()
    target = usage_targets(service, year, direction)
    assert fitted["mean_mb"] == pytest.approx(target["mean_mb"], rel=0.05)
    assert fitted["median_mb"] == pytest.approx(target["median_mb"], rel=0.05)
    assert abs(mode_bin_of(fitted["mode_mb"]) - mode_bin_of(target["mode_mb"])) <= 1
    assert fitted["top1_share"] == pytest.approx(target["top1_share"], abs=0.03)
    assert fitted["top10_share"] == pytest.approx(target["top10_share"], abs=0.03)


# A measured week's per-user error, as the demo week showed it (sd of ln(published / truth)): broadband
# upload (in) 0.22 below 30 MB/day, 0.059 at 30-300, 0.024 at 300-3000, 0.008 above; download (out)
# 0.32, 0.087, 0.026, 0.009; about SAMPLED_NOISE / sqrt(MB/day) for sampled flows. Mobile's billing
# records: 0.004 at every volume.
SAMPLED_NOISE, BILLED_NOISE = {"in": 0.6, "out": 0.9}, 0.004
DRAWS = 1000


@pytest.mark.parametrize("service", ["broadband", "mobile"])
@pytest.mark.parametrize("year", LOOKBACK_YEARS)
@pytest.mark.parametrize("direction", ["in", "out"])
def test_a_measured_weeks_mode_stays_within_a_bin_of_the_truth(service: str, year: int, direction: str) -> None:
    # check-calibration allows one bin between the published mode and the truth's: on a flat top the
    # measurement error moves the peak of the smoothed histogram further than that.
    weights, means, sds = MIXTURES[(service, year, direction)]
    rng = np.random.default_rng(year)
    levels = Mixture(weights, means, sds).stratum_means(3000)
    shifts = []
    for _ in range(DRAWS):
        truth = levels[rng.random(levels.size) >= 0.05]  # the personal users: enterprises are left out
        sampled = service == "broadband"
        error = SAMPLED_NOISE[direction] / np.sqrt(truth) if sampled else np.full(truth.size, BILLED_NOISE)
        measured = truth * np.exp(rng.normal(0.0, error))
        shifts.append(abs(mode_bin_of(mode_of_log_volume(measured)) - mode_bin_of(mode_of_log_volume(truth))))
    assert np.mean(np.array(shifts) > 1) <= 0.01, np.bincount(shifts)


@pytest.mark.slow
def test_refitting_the_2019_broadband_upload_row_gives_a_distinct_top_within_tolerance() -> None:
    # The row whose flat top moved a look-back week's published mode two bins from the truth.
    from flows.fit_calibration import fit_row, misses_of

    targets = usage_targets("broadband", 2019, "in")
    mixture = fit_row(targets, share_weight=0.1)
    assert misses_of(mixture, targets) == []
    assert mixture.local_maxima() == 1
    mode = np.log10(targets["mode_mb"])
    smoothed = mixture.density(mixture.grid(), MODE_SMOOTHING_DECADES).max()
    for offset, limit in DISTINCT_TOP:
        beside = mixture.density(np.array([mode - offset, mode + offset]), MODE_SMOOTHING_DECADES)
        assert np.all(beside / smoothed <= limit + 0.005), (offset, beside / smoothed)


@pytest.mark.parametrize("seed", range(4))
def test_a_week_of_one_user_and_one_phone_is_generated(seed: int) -> None:
    # One subscription has one access kind, so the other kind's user list is empty.
    import datetime as dt

    from transforms.synth.week import WeekSpec, generate_week

    week = generate_week(WeekSpec(week=dt.date(2024, 6, 3), year=2024, broadband_users=1, mobile_phones=1, seed=seed))
    kind = pl.when(pl.col("service").str.starts_with("mobile")).then(pl.lit("mobile")).otherwise(pl.lit("broadband"))
    users = week.truth_user_day.group_by(kind.alias("kind")).agg(pl.col("user_id").n_unique()).sort("kind")
    assert users.rows() == [("broadband", 1), ("mobile", 1)]  # one subscription, one phone number
