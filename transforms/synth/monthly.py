"""Light-weight synthetic interface counters for Figure 1: hourly polls of cumulative octet counters,
with monthly levels following the growth the seed report states (normalised to January 2020 OUT = 1
per service), a daily shape, poller jitter and the occasional device reboot (counter reset)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

# Monthly levels relative to each service's January 2020 OUT, at anchor months; months between are
# interpolated geometrically. Chosen to give the seed's statements: broadband June 2019 -> June 2024
# IN x1.72, OUT x2.01; the year to June 2024 IN +14%, OUT +12% (before: +11%, +18%); mobile the year
# to June 2024 IN +29%, OUT +20% (before: +27%, +31%), OUT reaching 2.1x January 2020, flat in 2020-21.
LEVEL_ANCHORS: dict[tuple[str, str], dict[str, float]] = {
    ("broadband", "out"): {
        "2019-01": 0.80,
        "2019-06": 0.85,
        "2020-01": 1.0,
        "2020-05": 1.30,
        "2020-06": 1.22,
        "2021-06": 1.27,
        "2022-06": 1.7085 / 1.12 / 1.18,
        "2023-06": 1.7085 / 1.12,
        "2024-06": 1.7085,
        "2024-12": 1.80,
    },
    ("broadband", "in"): {
        "2019-01": 0.125,
        "2019-06": 0.13,
        "2020-01": 0.14,
        "2020-05": 0.19,
        "2020-06": 0.18,
        "2021-06": 0.172,
        "2022-06": 0.2236 / 1.14 / 1.11,
        "2023-06": 0.2236 / 1.14,
        "2024-06": 0.2236,
        "2024-12": 0.235,
    },
    ("mobile", "out"): {
        "2019-01": 0.82,
        "2019-06": 0.88,
        "2020-01": 1.0,
        "2020-06": 0.98,
        "2021-06": 1.08,
        "2022-06": 2.1 / 1.20 / 1.31,
        "2023-06": 2.1 / 1.20,
        "2024-06": 2.1,
        "2024-12": 2.2,
    },
    ("mobile", "in"): {
        "2019-01": 0.10,
        "2019-06": 0.105,
        "2020-01": 0.11,
        "2020-06": 0.11,
        "2021-06": 0.12,
        "2022-06": 0.25 / 1.29 / 1.27,
        "2023-06": 0.25 / 1.29,
        "2024-06": 0.25,
        "2024-12": 0.265,
    },
}
# Average bit rate of January 2020 OUT per service, and the interfaces that carry it.
BASE_BPS = {"broadband": 800e9, "mobile": 90e9}
INTERFACES = {
    "broadband": (("bras-tokyo-1", "ae0"), ("bras-tokyo-1", "ae1"), ("bras-osaka-1", "ae0")),
    "mobile": (("pgw-tokyo-1", "ae10"), ("pgw-osaka-1", "ae10")),
}
MAX_ANCHOR = "2024-12"


def _month_index(month: str) -> int:
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def monthly_level(service: str, direction: str, month: str) -> float:
    """The level of a month ("YYYY-MM") relative to the service's January 2020 OUT."""
    anchors = sorted((_month_index(m), v) for m, v in LEVEL_ANCHORS[(service, direction)].items())
    index = _month_index(month)
    if not anchors[0][0] <= index <= anchors[-1][0]:
        raise ValueError(f"no synthetic traffic level for {month}: known {anchors[0][0] // 12}-{MAX_ANCHOR}")
    for (m0, v0), (m1, v1) in zip(anchors, anchors[1:]):
        if m0 <= index <= m1:
            return v0 * (v1 / v0) ** ((index - m0) / (m1 - m0))
    raise AssertionError("unreachable")


def _daily_shape(hours_local: np.ndarray, direction: str, service: str) -> np.ndarray:
    """Mean-one hourly factor: evening peak for downloads, an afternoon plateau for uploads."""
    peak = 21.0 if direction == "out" else 15.0
    width = 4.0 if direction == "out" else 6.0
    if service == "mobile":
        peak, width = 19.0, 6.0

    def shape(hours: np.ndarray) -> np.ndarray:
        phase = np.minimum(np.abs(hours - peak), 24 - np.abs(hours - peak))
        return 0.45 + np.exp(-0.5 * (phase / width) ** 2)

    return shape(hours_local) / shape(np.arange(0, 24, 1 / 60)).mean()


def generate_counter_polls(first_month: str, last_month: str, timezone: str, seed: int = 1) -> pl.DataFrame:
    """Rows (time_s, device, interface, service, in_octets, out_octets): hourly polls of every
    interface from the first day of `first_month` to the end of `last_month` (local time), plus one
    poll after, with a few seconds of jitter and about one counter reset per interface-year."""
    zone = ZoneInfo(timezone)
    y0, m0 = map(int, first_month.split("-"))
    y1, m1 = map(int, last_month.split("-"))
    start = int(dt.datetime(y0, m0, 1, tzinfo=zone).timestamp())
    end = int(dt.datetime(y1 + (m1 == 12), m1 % 12 + 1, 1, tzinfo=zone).timestamp())
    rng = np.random.default_rng(seed)
    grid = np.arange(start, end + 3601, 3600, dtype=np.int64)
    stamps = pl.from_epoch(pl.Series(grid), time_unit="s").dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)
    months = stamps.dt.strftime("%Y-%m").to_list()
    hours_local = (stamps.dt.hour().to_numpy() + stamps.dt.minute().to_numpy() / 60).astype(float)
    frames = []
    for service, interfaces in INTERFACES.items():
        levels = {d: np.array([monthly_level(service, d, m) for m in sorted(set(months))]) for d in ("in", "out")}
        month_pos = {m: i for i, m in enumerate(sorted(set(months)))}
        position = np.array([month_pos[m] for m in months])
        for device, interface in interfaces:
            share = 1.0 / len(interfaces)
            times = grid + rng.integers(-20, 21, grid.size)
            times[0] = grid[0]
            seconds = np.diff(times, prepend=times[0] - 3600)
            columns = {}
            for direction in ("in", "out"):
                rate = (
                    BASE_BPS[service]
                    * share
                    * levels[direction][position]
                    * _daily_shape(hours_local, direction, service)
                )
                noise = rng.lognormal(0.0, 0.05, grid.size)
                octets = (rate * noise * seconds / 8).astype(np.uint64)
                counter = np.cumsum(octets, dtype=np.uint64) + np.uint64(rng.integers(0, 2**40))
                columns[direction] = counter
            # A reboot: the counters start again from zero (the pipeline must not count a negative delta).
            resets = rng.random(grid.size) < 1 / 8760
            for direction in ("in", "out"):
                counter = columns[direction]
                for at in np.flatnonzero(resets):
                    counter[at:] -= counter[at] - np.uint64(rng.integers(0, 10**9))
            frames.append(
                pl.DataFrame(
                    {
                        "time_s": times,
                        "device": device,
                        "interface": interface,
                        "service": service,
                        "in_octets": columns["in"],
                        "out_octets": columns["out"],
                    }
                )
            )
    return pl.concat(frames)
