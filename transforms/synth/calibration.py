"""Log-normal mixtures of daily usage fitted to the report's mean, median, mode and top shares.

A mixture is three normal components in log10(MB/day) space. All statistics are computed on a
fine grid, so the fit and the stratified draws share one numerical definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from transforms.tables.stats import MODE_BIN_DECADES, MODE_SMOOTHING_DECADES

GRID_STEP = 0.002
GRID_MARGIN_SD = 9.0


@dataclass(frozen=True)
class Mixture:
    """Weights, means and standard deviations of normal components of log10(MB/day)."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    sds: tuple[float, ...]

    def grid(self) -> np.ndarray:
        low = min(m - GRID_MARGIN_SD * s for m, s in zip(self.means, self.sds))
        high = max(m + GRID_MARGIN_SD * s for m, s in zip(self.means, self.sds))
        return np.arange(low, high + GRID_STEP, GRID_STEP)

    def density(self, y: np.ndarray, extra_sd: float = 0.0) -> np.ndarray:
        out = np.zeros_like(y)
        for w, m, s in zip(self.weights, self.means, self.sds):
            sd = math.hypot(s, extra_sd)
            out += w * np.exp(-0.5 * ((y - m) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        return out

    def cdf(self, y: np.ndarray) -> np.ndarray:
        out = np.zeros_like(y)
        for w, m, s in zip(self.weights, self.means, self.sds):
            out += w * special.ndtr((y - m) / s)
        return out

    def partial_mean_above(self, y: np.ndarray) -> np.ndarray:
        """E[X; log10 X > y] in MB, per grid point."""
        ln10 = math.log(10)
        out = np.zeros_like(y)
        for w, m, s in zip(self.weights, self.means, self.sds):
            mn, sn = m * ln10, s * ln10
            out += w * np.exp(mn + sn**2 / 2) * special.ndtr((mn + sn**2 - y * ln10) / sn)
        return out

    def mean_mb(self) -> float:
        ln10 = math.log(10)
        return float(
            sum(w * math.exp(m * ln10 + (s * ln10) ** 2 / 2) for w, m, s in zip(self.weights, self.means, self.sds))
        )

    def quantile_log10(self, p: np.ndarray | float) -> np.ndarray:
        y = self.grid()
        return np.interp(p, self.cdf(y), y)

    def statistics(self) -> dict[str, float]:
        """mean_mb, median_mb, mode_mb (report's definition), top1_share, top10_share."""
        y = self.grid()
        mean = self.mean_mb()
        smoothed = self.density(y, extra_sd=MODE_SMOOTHING_DECADES)
        peak = y[int(np.argmax(smoothed))]
        q99, q90, q50 = self.quantile_log10(np.array([0.99, 0.90, 0.50]))
        above = self.partial_mean_above(np.array([q99, q90]))
        return {
            "mean_mb": mean,
            "median_mb": float(10**q50),
            "mode_mb": float(10 ** (round(peak / MODE_BIN_DECADES) * MODE_BIN_DECADES)),
            "top1_share": float(above[0] / mean),
            "top10_share": float(above[1] / mean),
        }

    def stratum_means(self, n: int) -> np.ndarray:
        """MB/day of n equal-probability strata, each its conditional mean: they average to the mean exactly."""
        y = self.grid()
        cdf = self.cdf(y)
        above = self.partial_mean_above(y)
        edges = np.interp(np.arange(1, n) / n, cdf, y)
        partial = np.concatenate([[self.mean_mb()], np.interp(edges, y, above), [0.0]])
        return np.asarray((partial[:-1] - partial[1:]) * n)


def _unpack(theta: np.ndarray) -> Mixture:
    logits = np.concatenate([[0.0], theta[:2]])
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    means = theta[2:5]
    sds = np.exp(theta[5:8])
    return Mixture(tuple(map(float, weights)), tuple(map(float, means)), tuple(map(float, sds)))


def _loss(theta: np.ndarray, targets: dict[str, float], share_weight: float) -> float:
    if np.any(theta[5:8] < math.log(0.05)) or np.any(theta[5:8] > math.log(2.5)):
        return 1e6
    mix = _unpack(theta)
    stats = mix.statistics()
    y = mix.grid()
    smoothed = mix.density(y, extra_sd=MODE_SMOOTHING_DECADES)
    at_target = mix.density(np.array([math.log10(targets["mode_mb"])]), MODE_SMOOTHING_DECADES)[0]
    mode_gap = 1.0 - at_target / smoothed.max()
    return float(
        (math.log(stats["mean_mb"] / targets["mean_mb"]) / 0.01) ** 2
        + (math.log(stats["median_mb"] / targets["median_mb"]) / 0.01) ** 2
        + (mode_gap / 0.002) ** 2
        + share_weight * ((stats["top1_share"] - targets["top1_share"]) / 0.005) ** 2
        + share_weight * ((stats["top10_share"] - targets["top10_share"]) / 0.005) ** 2
    )


def fit_mixture(targets: dict[str, float], share_weight: float = 1.0, seed: int = 0) -> Mixture:
    """Three-component mixture whose statistics match the targets (mean, median, mode, shares)."""
    rng = np.random.default_rng(seed)
    median = math.log10(targets["median_mb"])
    mode = math.log10(targets["mode_mb"])
    best: tuple[float, np.ndarray] | None = None
    starts = [
        np.array([-0.5, -2.5, mode, median - 1.0, mode + 0.8, math.log(0.35), math.log(0.7), math.log(0.5)]),
        np.array([0.0, -3.0, mode, median - 0.5, mode + 1.2, math.log(0.3), math.log(0.9), math.log(0.4)]),
    ]
    starts += [starts[0] + rng.normal(0, 0.3, 8) for _ in range(4)]
    for start in starts:
        result = optimize.minimize(
            _loss,
            start,
            args=(targets, share_weight),
            method="Nelder-Mead",
            options={"maxiter": 6000, "maxfev": 6000, "xatol": 1e-6, "fatol": 1e-8},
        )
        if best is None or result.fun < best[0]:
            best = (float(result.fun), result.x)
    assert best is not None
    return _unpack(best[1])


def mode_bin_of(mode_mb: float) -> int:
    """Index k of the 0.05-decade bin whose centre 10^(k*0.05) is nearest to mode_mb."""
    return int(round(math.log10(mode_mb) / MODE_BIN_DECADES))
