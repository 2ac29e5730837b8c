import numpy as np
import polars as pl
import pytest

from transforms.tables.stats import mode_of_log_volume, summarize_usage, top_share


def test_mode_is_the_centre_of_the_peak_bin() -> None:
    # 40 users near 10^3.75 MB, 25 near 10^2.0: the peak is the 5620 MB bin (10^3.75).
    values = np.concatenate([np.full(40, 10**3.75), np.full(25, 100.0), np.full(10, 10**1.3)])
    assert mode_of_log_volume(values) == pytest.approx(5623.413, rel=1e-6)


def test_mode_smoothing_prefers_a_broad_peak_over_a_narrow_spike() -> None:
    broad = np.repeat(10 ** np.array([2.90, 2.95, 3.00, 3.05, 3.10]), 10)
    spike = np.full(14, 10**1.5)
    assert mode_of_log_volume(np.concatenate([broad, spike])) == pytest.approx(1000.0)


def test_mode_ignores_users_without_traffic() -> None:
    assert mode_of_log_volume(np.array([0.0, 0.0, 0.0, 50.0])) == pytest.approx(10**1.7, rel=1e-6)


def test_top_share_counts_the_largest_values() -> None:
    values = np.array([1.0] * 90 + [10.0] * 10)
    assert top_share(values, 0.10) == pytest.approx(100 / 190)
    assert top_share(values, 0.01) == pytest.approx(10 / 190)


def test_summary_uses_personal_users_only() -> None:
    week = pl.DataFrame(
        {
            "service_group": ["broadband"] * 3 + ["mobile"],
            "customer_type": ["personal", "personal", "enterprise", "personal"],
            "in_bytes_per_day": [1e6, 3e6, 1e12, 2e6],
            "out_bytes_per_day": [10e6, 30e6, 1e12, 4e6],
        }
    )
    summary = summarize_usage(week)
    bb_out = summary.filter((pl.col("service") == "broadband") & (pl.col("direction") == "out")).row(0, named=True)
    assert bb_out["users"] == 2
    assert bb_out["mean_mb"] == pytest.approx(20.0)
    assert bb_out["median_mb"] == pytest.approx(20.0)
    assert summary.height == 4
