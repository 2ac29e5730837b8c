"""Fits the generator's usage mixtures to every reference row and writes them as JSON
(transforms/synth/mixtures.py's format: the generator reads its copy, fitted_mixtures.json, as package data)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from flows.calibration_check import STAT_NAMES, usage_within
from transforms.synth.calibration import FLAT_TOP, Mixture, fit_mixture
from transforms.synth.mixtures import FITTED_MIXTURES, Key, Parameters, mixtures_json
from transforms.synth.reference import daily_usage_table, usage_targets

# In the current folder: never inside the installed package (copy it over
# transforms/synth/fitted_mixtures.json in a source checkout to make the generator use it).
DEFAULT_OUT = Path(FITTED_MIXTURES)


def misses_of(mixture: Mixture, targets: dict[str, float]) -> list[str]:
    """The statistics of `mixture` outside check-calibration's tolerance around `targets`."""
    fitted = mixture.statistics()
    return [name for name in STAT_NAMES if not usage_within(name, targets[name], fitted[name], published=False)]


def fit_row(targets: dict[str, float], share_weight: float) -> Mixture:
    """The row's mixture with a distinct top; the flatter top allowed before where no distinct one
    meets every tolerance (the report's early broadband years)."""
    mixture = fit_mixture(targets, share_weight=share_weight)
    if misses_of(mixture, targets):
        mixture = fit_mixture(targets, share_weight=share_weight, top=FLAT_TOP)
    return mixture


def _fitted_row(key: Key) -> tuple[Key, Mixture, list[str]]:
    """(key, mixture, statistics outside tolerance) of one reference row and direction."""
    service, year, direction = key
    targets = usage_targets(service, year, direction)
    mixture = fit_row(targets, share_weight=1.0 if year == 2024 else 0.1)
    return key, mixture, misses_of(mixture, targets)


def fit_all_mixtures(target: Path = DEFAULT_OUT, processes: int | None = None) -> Path:
    """Fits one mixture per reference row and direction, rows spread over `processes` (default: every
    CPU); top shares weigh fully only for 2024. Refuses to write a fit whose density has more than one peak."""
    keys: list[Key] = [
        (service, year, direction)
        for service in ("broadband", "mobile")
        for year in daily_usage_table(service)["year"].to_list()
        for direction in ("in", "out")
    ]
    fitted: dict[Key, Parameters] = {}
    # Spawned, not forked: a fork of this process can inherit polars' thread pool mid-lock and hang.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes or os.cpu_count() or 1, mp_context=spawn) as pool:
        for (service, year, direction), mixture, misses in pool.map(_fitted_row, keys):
            if mixture.local_maxima() != 1:
                raise ValueError(f"{service} {year} {direction}: no fit with one peak was found")
            fitted[(service, year, direction)] = (
                tuple(round(v, 8) for v in mixture.weights),
                tuple(round(v, 8) for v in mixture.means),
                tuple(round(v, 8) for v in mixture.sds),
            )
            fitted_stats = {k: round(v, 3) for k, v in mixture.statistics().items()}
            print(service, year, direction, fitted_stats, "outside tolerance:", ", ".join(misses) or "none", flush=True)
    target.write_text(mixtures_json(fitted))
    return target


if __name__ == "__main__":
    fit_all_mixtures()
