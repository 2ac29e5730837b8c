"""The report's distribution statistics: mean, median, mode of log10 volume, top-k shares."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

# The report publishes every mode as 10^(k*0.05) MB: the centre of a 0.05-decade log10 bin.
MODE_BIN_DECADES = 0.05
# The report "adjusts the peak toward the centre of the distribution": a Gaussian smoothing of
# the log10 histogram. Two bins wide keeps the peak of a 3,000-user week stable.
MODE_SMOOTHING_DECADES = 0.10
BYTES_PER_MB = 1_000_000


def smoothing_kernel(bin_width: float = MODE_BIN_DECADES) -> np.ndarray:
    """Gaussian weights over bin offsets, summing to 1, for the mode's histogram smoothing."""
    sd_bins = MODE_SMOOTHING_DECADES / bin_width
    half = math.ceil(4 * sd_bins)
    offsets = np.arange(-half, half + 1)
    weights = np.exp(-0.5 * (offsets / sd_bins) ** 2)
    return np.asarray(weights / weights.sum())


def smoothed_log_histogram(values_mb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin k, smoothed count) of positive values on 0.05-decade bins centred on 10^(k*0.05) MB."""
    positive = values_mb[values_mb > 0]
    if positive.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    bins = np.rint(np.log10(positive) / MODE_BIN_DECADES).astype(np.int64)
    kernel = smoothing_kernel()
    pad = kernel.size // 2
    low = int(bins.min()) - pad
    counts = np.bincount(bins - low, minlength=int(bins.max()) - low + pad + 1).astype(float)
    return np.arange(low, low + counts.size), np.convolve(counts, kernel, mode="same")


def mode_of_log_volume(values_mb: np.ndarray) -> float:
    """Mode in MB: centre of the peak bin of the smoothed log10 histogram of positive values."""
    bins, smoothed = smoothed_log_histogram(values_mb)
    if bins.size == 0:
        return float("nan")
    peak = int(bins[np.argmax(smoothed)])
    return float(round(10 ** (peak * MODE_BIN_DECADES), 6))


def top_share(values: np.ndarray, fraction: float) -> float:
    """Share (0-1) of the total carried by the top `fraction` of values, at least one value."""
    if values.size == 0:
        return float("nan")
    total = float(values.sum())
    if total <= 0:
        return float("nan")
    count = max(1, int(round(values.size * fraction)))
    top = np.partition(values, values.size - count)[values.size - count :]
    return float(top.sum()) / total


def describe_distribution(values_mb: np.ndarray) -> dict[str, float]:
    """users, mean_mb, median_mb, mode_mb, top1_share, top10_share of one usage distribution."""
    values = np.asarray(values_mb, dtype=np.float64)
    return {
        "users": float(values.size),
        "mean_mb": float(values.mean()) if values.size else float("nan"),
        "median_mb": float(np.median(values)) if values.size else float("nan"),
        "mode_mb": mode_of_log_volume(values),
        "top1_share": top_share(values, 0.01),
        "top10_share": top_share(values, 0.10),
    }


USAGE_SUMMARY_SCHEMA = {
    "service": pl.String,
    "direction": pl.String,
    "users": pl.Int64,
    "mean_mb": pl.Float64,
    "median_mb": pl.Float64,
    "mode_mb": pl.Float64,
    "top1_share": pl.Float64,
    "top10_share": pl.Float64,
}


def summarize_usage(user_week: pl.DataFrame) -> pl.DataFrame:
    """One row per (service, direction in/out) of personal users: users, mean/median/mode MB, shares."""
    personal = user_week.filter(pl.col("customer_type") == "personal")
    rows: list[dict[str, object]] = []
    for service in sorted(personal["service_group"].unique().to_list()):
        group = personal.filter(pl.col("service_group") == service)
        for direction in ("in", "out"):
            values = (group[f"{direction}_bytes_per_day"].to_numpy() / BYTES_PER_MB).astype(float)
            stats = describe_distribution(values)
            rows.append({"service": service, "direction": direction, **stats, "users": int(stats["users"])})
    return pl.DataFrame(rows, schema=USAGE_SUMMARY_SCHEMA)
