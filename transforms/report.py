"""The report's derived figures: densities of log10 daily volume and reproducible user samples."""

from __future__ import annotations

import numpy as np
import polars as pl

from transforms.stats import BYTES_PER_MB, MODE_BIN_DECADES, smoothing_kernel

# Figures 3, 4 and 11 span 10 KB to 100 GB a day.
LOG10_MB_RANGE = (-2.0, 5.0)


def density_of_log_volume(bytes_per_day: np.ndarray) -> pl.DataFrame:
    """Rows (log10_mb, density) on 0.05-decade bins from 10 KB to 100 GB: the smoothed share of
    users per decade (the curve integrates to the share of users inside the range)."""
    lo, hi = LOG10_MB_RANGE
    edges = np.arange(lo, hi + MODE_BIN_DECADES / 2, MODE_BIN_DECADES)
    centres = edges[:-1] + MODE_BIN_DECADES / 2
    positive = bytes_per_day[bytes_per_day > 0] / BYTES_PER_MB
    if bytes_per_day.size == 0:
        return pl.DataFrame({"log10_mb": centres, "density": np.zeros(centres.size)})
    counts, _ = np.histogram(np.log10(positive), bins=edges)
    smoothed = np.convolve(counts.astype(float), smoothing_kernel(), mode="same")
    return pl.DataFrame({"log10_mb": centres, "density": smoothed / bytes_per_day.size / MODE_BIN_DECADES})


def sample_users(users: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """At most n rows of `users`, the same ones for the same rows whatever their order."""
    ordered = users.sort("user_key")
    return ordered if ordered.height <= n else ordered.sample(n, seed=seed).sort("user_key")
