"""The generator's fitted mixtures: one peak per (service, year, direction) density, and the look-back
years' statistics within check-calibration's tolerances, their tops distinct enough for a measured
week to find the same mode (computed from the parameters: no week drawn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.synth.calibration import (
    PEAK_OFFSET_DECADES,
    PEAK_PROMINENCE,
    Mixture,
    count_local_maxima,
    mode_bin_of,
    second_peak_excess,
)
from transforms.synth.mixtures import MIXTURES
from transforms.synth.reference import usage_targets
from transforms.tables.stats import MODE_SMOOTHING_DECADES

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


@pytest.mark.parametrize("service", ["broadband", "mobile"])
@pytest.mark.parametrize("year", LOOKBACK_YEARS)
@pytest.mark.parametrize("direction", ["in", "out"])
def test_lookback_years_have_a_distinct_top(service: str, year: int, direction: str) -> None:
    # On a flat top a measured week's noise moves the published mode by many bins from the truth.
    weights, means, sds = MIXTURES[(service, year, direction)]
    mixture = Mixture(weights, means, sds)
    mode = math.log10(usage_targets(service, year, direction)["mode_mb"])
    peak = mixture.density(mixture.grid(), MODE_SMOOTHING_DECADES).max()
    beside = mixture.density(np.array([mode - PEAK_OFFSET_DECADES, mode + PEAK_OFFSET_DECADES]), MODE_SMOOTHING_DECADES)
    assert np.all(beside / peak <= PEAK_PROMINENCE + 0.01), beside / peak
