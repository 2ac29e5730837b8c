"""Fits the generator's usage mixtures to every reference row and writes them as JSON
(transforms/synth/mixtures.py's format: the generator reads its copy, fitted_mixtures.json, as package data)."""

from __future__ import annotations

from pathlib import Path

from transforms.synth.calibration import fit_mixture
from transforms.synth.mixtures import FITTED_MIXTURES, Key, Parameters, mixtures_json
from transforms.synth.reference import daily_usage_table, usage_targets

# In the current folder: never inside the installed package (copy it over
# transforms/synth/fitted_mixtures.json in a source checkout to make the generator use it).
DEFAULT_OUT = Path(FITTED_MIXTURES)


def fit_all_mixtures(target: Path = DEFAULT_OUT) -> Path:
    """Fits one mixture per reference row and direction; top shares weigh fully only for 2024. Refuses
    to write a fit whose density has more than one peak."""
    fitted: dict[Key, Parameters] = {}
    for service in ("broadband", "mobile"):
        for year in daily_usage_table(service)["year"].to_list():
            for direction in ("in", "out"):
                targets = usage_targets(service, year, direction)
                mixture = fit_mixture(targets, share_weight=1.0 if year == 2024 else 0.1)
                if mixture.local_maxima() != 1:
                    raise ValueError(f"{service} {year} {direction}: no fit with one peak was found")
                fitted[(service, year, direction)] = (
                    tuple(round(v, 8) for v in mixture.weights),
                    tuple(round(v, 8) for v in mixture.means),
                    tuple(round(v, 8) for v in mixture.sds),
                )
                print(service, year, direction, {k: round(v, 3) for k, v in mixture.statistics().items()})
    target.write_text(mixtures_json(fitted))
    return target


if __name__ == "__main__":
    fit_all_mixtures()
