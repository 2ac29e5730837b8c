"""Which files under an exporter's folder belong to a week, whatever collector laid them out.

Three layouts are read as they are:
- the landing zone's own: `<YYYY-MM-DD>/<any name>` (the folder is the local day);
- nfcapd's: `nfcapd.YYYYMMDDhhmm` at the top or in its `-S` sub-folders (`YYYY/MM/DD`,
  `YYYY/MM/DD/hh`, `YYYY-MM-DD`, `YYYY-MM-DD/hh`, ...), named by the start of the interval in
  the collector's local time;
- pmacct's print plugin files, named with `%Y%m%d-%H%M` (or `%Y%m%d%H%M`, `%Y-%m-%d_%H%M`...).

A file's time comes from its name when the name carries a date and a time, else from a
`YYYY-MM-DD` folder it sits in directly. Folders named by a year, month, day or hour outside the
week (with a day's margin) are not listed: a five-year nfcapd tree is not walked for one week.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flows.storage import AnyPath, entries

DAY_FOLDER = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# A date and a time in a file name: 202406031405, 20240603-1405, 2024-06-03_14:05, 20240603T1405,
# with seconds where a collector rotates more often than each minute (nfcapd.20240603140530).
NAME_STAMP = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[-_T ]?(\d{2})[:.]?(\d{2})(?:[:.]?(\d{2}))?(?!\d)")
NUMBER_FOLDER = re.compile(r"^\d{2}$|^\d{4}$")
# A file named by the start of its interval can hold flows that started a little earlier (a
# collector's rotation, long flows exported at their end): files named up to two hours before
# the first day are read too.
BEFORE = dt.timedelta(hours=2)


@dataclass(frozen=True)
class ExporterInputs:
    """How one exporter's files are found and read (resolved from the settings for that exporter)."""

    # 1-in-N used when the exporter announces none; one that replaces whatever it announces.
    default_rate: int | None = None
    override_rate: int | None = None
    # The rate a collector multiplied counts by, where its files do not say (nfdump CSV).
    collector_sampling: int | None = None
    # pmacct files of nfacctd with `nfacctd_renormalize: true` (None: told by each row's SAMPLING_RATE).
    pmacct_renormalized: bool | None = None
    # Local zone of nfdump CSV times and of the times in collectors' file names.
    collector_timezone: str = "UTC"
    # The report's zone: the `YYYY-MM-DD` folders are its local days.
    timezone: str = "UTC"
    # Threads a file's decoding may use (nfdump CSV's columns).
    threads: int = 2


@dataclass(frozen=True)
class FlowFile:
    """A flow file of the week and the local day it belongs to (in the report's time zone)."""

    path: AnyPath
    day: dt.date


def flow_files_of_days(root: AnyPath, days: list[dt.date], timezone: str, collector_timezone: str) -> list[FlowFile]:
    """The files under `root` (an exporter's folder) that may hold flows of `days` (consecutive
    local days in `timezone`; times in names are read in `collector_timezone`), in path order:
    the days' `YYYY-MM-DD` folders, and files named with a time from two hours before the first
    day to the end of the last."""
    if not days or not root.is_dir():
        return []
    zone, collector = ZoneInfo(timezone), ZoneInfo(collector_timezone)
    start = dt.datetime.combine(days[0], dt.time(0), zone) - BEFORE
    end = dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(0), zone)
    wanted_days = set(days)
    found: list[FlowFile] = []
    _walk(root, (), start, end, wanted_days, zone, collector, found)
    return sorted(found, key=lambda f: str(f.path))


def _walk(
    folder: AnyPath,
    numbers: tuple[int, ...],
    start: dt.datetime,
    end: dt.datetime,
    wanted_days: set[dt.date],
    zone: ZoneInfo,
    collector: ZoneInfo,
    found: list[FlowFile],
) -> None:
    for entry in entries(folder):
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_dir():
            day_match = DAY_FOLDER.match(name)
            if day_match:
                day = _date(day_match.groups())
                if day is None or not _overlaps(day, day, start, end, collector):
                    continue
                _walk_day(entry, day, start, end, wanted_days, zone, collector, found)
            elif NUMBER_FOLDER.match(name) and len(numbers) < 4:
                parts = (*numbers, int(name))
                if _period_overlaps(parts, start, end, collector):
                    _walk(entry, parts, start, end, wanted_days, zone, collector, found)
            continue
        stamp = _name_time(name, collector)
        if stamp is not None and start <= stamp < end:
            found.append(FlowFile(entry, stamp.astimezone(zone).date()))


def _walk_day(
    folder: AnyPath,
    day: dt.date,
    start: dt.datetime,
    end: dt.datetime,
    wanted_days: set[dt.date],
    zone: ZoneInfo,
    collector: ZoneInfo,
    found: list[FlowFile],
) -> None:
    """A `YYYY-MM-DD` folder: files named with a time go by it, others by the folder's day;
    sub-folders (nfcapd's `YYYY-MM-DD/hh`) by the times in their files' names."""
    for entry in entries(folder):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _walk(entry, (day.year, day.month, day.day), start, end, wanted_days, zone, collector, found)
            continue
        stamp = _name_time(entry.name, collector)
        if stamp is not None and _is_time_named(entry.name):
            if start <= stamp < end:
                found.append(FlowFile(entry, stamp.astimezone(zone).date()))
        elif day in wanted_days:
            found.append(FlowFile(entry, day))


def _is_time_named(name: str) -> bool:
    """A name with a full date and time (nfcapd's, pmacct's), not just a date such as
    `bb-tokyo-1-20240603.ipfix`, whose folder says the day better."""
    return NAME_STAMP.search(name) is not None


def _name_time(name: str, collector: ZoneInfo) -> dt.datetime | None:
    match = NAME_STAMP.search(name)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
    try:
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=collector)
    except ValueError:
        return None


def _date(groups: tuple[str | None, ...]) -> dt.date | None:
    try:
        return dt.date(int(groups[0] or 0), int(groups[1] or 0), int(groups[2] or 0))
    except ValueError:
        return None


def _overlaps(first: dt.date, last: dt.date, start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> bool:
    """Whether local days [first, last] (with a day's margin for zones) meet [start, end)."""
    lo = dt.datetime.combine(first, dt.time(0), zone) - dt.timedelta(days=1)
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), zone) + dt.timedelta(days=1)
    return lo < end and start < hi


def _period_overlaps(parts: tuple[int, ...], start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> bool:
    """Whether a folder named by year (/ month / day / hour) numbers can hold files of the window;
    numbers that are no calendar period (a folder `17` under a day) do not prune anything."""
    year = parts[0]
    if not 1970 <= year <= 9999:
        return True
    try:
        if len(parts) == 1:
            return _overlaps(dt.date(year, 1, 1), dt.date(year, 12, 31), start, end, zone)
        first_of_month = dt.date(year, parts[1], 1)
        if len(parts) == 2:
            next_month = (first_of_month + dt.timedelta(days=32)).replace(day=1)
            return _overlaps(first_of_month, next_month - dt.timedelta(days=1), start, end, zone)
        day = dt.date(year, parts[1], parts[2])
        return _overlaps(day, day, start, end, zone)
    except ValueError:
        return True
