"""Checks a run's arguments, settings, key, paths and subscriber directory before any work (and
before Prefect starts, when run from the command line): a mistake costs a second, not an ingest."""

from __future__ import annotations

import calendar
import datetime as dt
import os
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from flows import landing, storage
from flows.failures import UsageError
from flows.settings import Settings
from flows.storage import AnyPath


def check_week(week: dt.date, timezone: str, now: dt.datetime | None = None) -> None:
    """UsageError unless `week` is a Monday whose week has ended in `timezone`."""
    if week.weekday() != 0:
        raise UsageError(f"--week {week}: a week starts on a Monday; {week} is a {week:%A}")
    now = now or dt.datetime.now(dt.UTC)
    end = dt.datetime.combine(week + dt.timedelta(days=7), dt.time(0), ZoneInfo(timezone))
    if end > now:
        raise UsageError(f"--week {week}: the week has not ended yet (it ends {end:%Y-%m-%d %H:%M %Z})")


PERIOD = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")


def parse_period(text: str, last: bool = False) -> dt.date:
    """A year, month or day ("2019", "2019-06", "2019-06-03") as its first day, or its last with `last`."""
    match = PERIOD.match(text.strip())
    if not match:
        raise ValueError(f"expected YYYY, YYYY-MM or YYYY-MM-DD, got {text!r}")
    year = int(match[1])
    if match[3]:
        return dt.date(year, int(match[2]), int(match[3]))
    if match[2]:
        month = int(match[2])
        return dt.date(year, month, calendar.monthrange(year, month)[1] if last else 1)
    return dt.date(year, 12, 31) if last else dt.date(year, 1, 1)


def check_period_range(start: str, end: str) -> tuple[dt.date, dt.date]:
    """The first and last day of a backfill's `--from` / `--to`; UsageError when either is not a
    period or the range is empty."""
    try:
        first, last = parse_period(start), parse_period(end, last=True)
    except ValueError as exc:
        raise UsageError(f"--from {start} --to {end}: {exc}") from None
    if first > last:
        raise UsageError(f"--from {start} --to {end}: the range is empty ({first} is after {last})")
    return first, last


def check_month(month: str, timezone: str, now: dt.datetime | None = None) -> None:
    """UsageError unless `month` is YYYY-MM (a month that has begun)."""
    try:
        first = dt.date.fromisoformat(f"{month}-01")
    except ValueError:
        raise UsageError(f"--month {month!r}: expected YYYY-MM") from None
    now = now or dt.datetime.now(dt.UTC)
    if dt.datetime.combine(first, dt.time(0), ZoneInfo(timezone)) > now:
        raise UsageError(f"--month {month}: the month has not begun")


def _writable(path: Path) -> bool:
    """True if `path` exists writable, or could be created under its nearest existing parent."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def check_paths(settings: Settings) -> None:
    """UsageError for a landing zone that is not there, or folders the run cannot write."""
    landing_zone = settings.landing
    if not landing_zone.exists():
        raise UsageError(f"landing zone {landing_zone}: no such folder")
    if not any((landing_zone / sub).is_dir() for sub in ("flows", "radius", "directory", "counters")):
        raise UsageError(f"landing zone {landing_zone}: not a landing zone (no flows/, radius/, directory/ folder)")
    local: list[tuple[str, AnyPath]] = [
        (name, path)
        for name, path in (
            ("staging", settings.staging),
            ("state", settings.state_path),
            ("quarantine", settings.quarantine_path),
        )
        if storage.is_local(path)
    ]
    warehouse = storage.backend_of(settings.warehouse)
    if not warehouse.conditional_writes:
        raise UsageError(
            f"warehouse {settings.warehouse}: this storage has no conditional write, so its manifest cannot be "
            "swapped safely; use a local folder or an s3:// URL"
        )
    local_warehouse = warehouse.local_file(settings.warehouse)
    if local_warehouse is not None:
        local.append(("warehouse", local_warehouse))
    for name, path in local:
        if not _writable(storage.local_path(path)):
            raise UsageError(f"{name} folder {path}: cannot be written by this user")


def check_inventory(settings: Settings) -> None:
    """UsageError naming the exporter folders that are not in the configured inventory (if one is)."""
    if not settings.exporters:
        return
    unknown = [e for e in landing.list_exporters(settings.landing) if e not in settings.exporters]
    if unknown:
        raise UsageError(
            f"{settings.landing / 'flows'}: exporter folders not in the inventory (`exporters` in the settings): "
            + ", ".join(unknown)
        )


def check_key(settings: Settings) -> None:
    """UsageError when no pseudonym key can be had (a Prefect Secret block is checked in the run)."""
    if settings.hmac_key_secret and not os.environ.get("TRAFFICREPORT_HMAC_KEY"):
        return
    try:
        key = settings.hmac_key()
    except (RuntimeError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if len(key) < 16:
        raise UsageError("the pseudonym key is shorter than 16 bytes: pseudonyms from it could be guessed")


def check_weekly_run(settings: Settings, week: dt.date) -> None:
    """Everything a weekly run needs before it starts, cheapest first; the directory is read and
    checked too (InputFormatError naming file, line and reason)."""
    check_week(week, settings.timezone)
    check_key(settings)
    check_paths(settings)
    check_inventory(settings)
    landing.read_directory(settings.landing, week + dt.timedelta(days=6))
