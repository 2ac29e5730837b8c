"""The generator's fitted log10(MB/day) mixtures per (service, year, direction), kept as data.

They live in fitted_mixtures.json beside this module (package data, shipped in the wheel), one
entry per "service/year/direction" holding the mixture's weights, means and sds. `trafficreport
fit-calibration` writes a new file in this format (mixtures_json); the generator reads the shipped
one (MIXTURES). JSON keeps every float exactly (Python writes the shortest repr that reads back
to the same double), so the numbers are the fitted ones to the last bit.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

Key = tuple[str, int, str]
Parameters = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]

FITTED_MIXTURES = "fitted_mixtures.json"
DESCRIPTION = (
    "log10(MB/day) mixtures of the synthetic week generator per service/year/direction, fitted to the "
    "reference tables by `trafficreport fit-calibration`; do not edit by hand, re-run the command instead"
)


def mixtures_json(mixtures: dict[Key, Parameters]) -> str:
    """The file's text: one line per mixture, in the order given."""
    lines = [
        f"    {json.dumps(f'{service}/{year}/{direction}')}: "
        + json.dumps({"weights": list(weights), "means": list(means), "sds": list(sds)})
        for (service, year, direction), (weights, means, sds) in mixtures.items()
    ]
    body = ",\n".join(lines)
    return f'{{\n  "description": {json.dumps(DESCRIPTION)},\n  "mixtures": {{\n{body}\n  }}\n}}\n'


def parse_mixtures(text: str) -> dict[Key, Parameters]:
    """{(service, year, direction): (weights, means, sds)} from the file's text."""
    entries: dict[str, dict[str, Any]] = json.loads(text)["mixtures"]
    mixtures: dict[Key, Parameters] = {}
    for name, entry in entries.items():
        service, year, direction = name.split("/")
        mixtures[(service, int(year), direction)] = (
            tuple(float(v) for v in entry["weights"]),
            tuple(float(v) for v in entry["means"]),
            tuple(float(v) for v in entry["sds"]),
        )
    return mixtures


def fitted_mixtures() -> dict[Key, Parameters]:
    """The mixtures shipped with the package (an installed wheel's copy, or the source tree's)."""
    return parse_mixtures(resources.files(__package__).joinpath(FITTED_MIXTURES).read_text(encoding="utf-8"))


MIXTURES: dict[Key, Parameters] = fitted_mixtures()
