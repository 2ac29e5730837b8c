"""The monthly traffic flow (Figure 1): interface counter polls -> average traffic per service ->
audit -> publish `monthly_traffic` for one month, through the same write-audit-publish path."""

from __future__ import annotations

import datetime as dt
import io
import re
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import locks, publish, storage
from flows.landing import MissingFeed
from flows.settings import Settings, load_settings
from flows.staging import StageLayout
from flows.storage import AnyPath
from flows.weekly import AuditFailed, new_run_id, scheduled_local_day
from transforms.accounting import counters
from transforms.run_records import AuditResult, MonthRun, PublicationRecord
from transforms.tables import registry

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
INVENTORY = "interfaces.csv"


def month_bounds(month: str, timezone: str) -> tuple[int, int]:
    """Epoch seconds of the month's first local midnight and the next month's."""
    match = MONTH.match(month)
    if not match:
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    year, number = int(match[1]), int(match[2])
    zone = ZoneInfo(timezone)
    start = dt.datetime(year, number, 1, tzinfo=zone)
    end = dt.datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


def _neighbours(month: str) -> tuple[str, str]:
    year, number = int(month[:4]), int(month[5:])
    before = f"{year - (number == 1)}-{(number - 2) % 12 + 1:02d}"
    after = f"{year + (number == 12)}-{number % 12 + 1:02d}"
    return before, after


def read_inventory(landing: AnyPath) -> pl.DataFrame:
    """Rows (device, interface, service) of counters/interfaces.csv: which customer-facing
    interfaces carry which service."""
    path = landing / "counters" / INVENTORY
    if not path.exists():
        raise FileNotFoundError(f"{path}: interface inventory missing (device,interface,service)")
    frame = pl.read_csv(io.BytesIO(path.read_bytes()), infer_schema=False)
    missing = {"device", "interface", "service"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: line 1: missing columns {sorted(missing)}")
    return frame.select("device", "interface", "service").unique(maintain_order=True)


def counter_files(landing: AnyPath, month: str) -> tuple[list[AnyPath], bool]:
    """The poll files that can hold intervals of `month` (named YYYY-MM*.csv, that month and its
    neighbours, under counters/<device>/), and whether any is the month's own."""
    wanted = (month, *_neighbours(month))
    root = landing / "counters"
    files: list[AnyPath] = []
    own = False
    if root.is_dir():
        for device in (p for p in storage.entries(root) if p.is_dir()):
            for path in storage.entries(device):
                if path.name.endswith(".csv") and path.name[:7] in wanted:
                    files.append(path)
                    own = own or path.name[:7] == month
    return files, own


@task(cache_policy=NO_CACHE)
def ingest_counters(settings: Settings, month: str) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(polls of the month and its neighbours, set-aside lines, files read)."""
    files, own = counter_files(settings.landing, month)
    if not own:
        raise MissingFeed(
            f"{settings.landing / 'counters'}: no counter files for {month} (counters/<device>/{month}*.csv)"
        )
    polls, problems = [], []
    for path in files:
        good, bad = counters.parse_counter_csv(path.read_bytes(), str(path))
        polls.append(good)
        problems.append(bad)
    return pl.concat(polls), pl.concat(problems), len(files)


@flow(name="monthly_traffic", log_prints=True)
def monthly_traffic_report(month: str, settings: Settings | None = None, force: bool = True) -> MonthRun:
    """Publishes one month's average traffic per service and direction from interface counters."""
    settings = settings or load_settings()
    with locks.one_run_at_a_time(month, settings.one_run_per_week, settings.lock_dir):
        return _run_month(month, settings, force)


def _run_month(month: str, settings: Settings, force: bool) -> MonthRun:
    logger = get_run_logger()
    from expectations.audit import counter_checks, validate_tables

    start_s, end_s = month_bounds(month, settings.timezone)
    base_run = publish.published_run(publish.read_manifest(settings.warehouse), month)
    if not force and base_run is not None:
        return MonthRun(run_id="", month=month, skipped=True)
    run_id = new_run_id()
    started = time.monotonic()
    inventory = read_inventory(settings.landing)
    polls, problems, files = ingest_counters(settings, month)
    unknown = counters.unknown_interfaces(polls, inventory)
    known = polls.join(inventory.select("device", "interface"), on=["device", "interface"], how="semi")
    in_month = known.filter((pl.col("time_s") >= start_s) & (pl.col("time_s") < end_s)).height
    per_interface = counters.count_traffic_in_window(known, start_s, end_s)
    traffic = registry.conform_to_table(
        "monthly_traffic",
        counters.average_traffic_by_service(per_interface, inventory, start_s, end_s).with_columns(month=pl.lit(month)),
    )
    # No staging folder: a month's counters are read and published in one step.
    layout = StageLayout.of_run(
        settings.staging / run_id,
        settings.quarantine_path,
        "month",
        month,
        local_root=Path(tempfile.gettempdir()) / f"trafficreport-{run_id}",  # unused: a month has no audit docs
    )
    storage.write_parquet(layout.quarantine("counters.problems.parquet"), problems)
    storage.write_parquet(layout.quarantine("counters.unknown_interfaces.parquet"), unknown)
    checks = validate_tables({"monthly_traffic": traffic}) + counter_checks(
        traffic,
        sorted(set(inventory["service"].to_list())),
        end_s <= time.time(),
        in_month,
        problems.height,
        int(unknown["polls"].sum() or 0),
        settings.min_counter_coverage,
        settings.max_quarantined_share,
    )
    failed = AuditResult(tuple(checks)).failed
    run = MonthRun(
        run_id=run_id,
        month=month,
        files=files,
        polls=in_month,
        quarantined_polls=problems.height,
        unknown_interfaces=unknown.height,
        counter_resets=int(traffic["counter_resets"].sum() or 0),
    )
    if failed:
        raise AuditFailed(f"month {month}: audit failed, nothing published; " + "; ".join(failed))
    publish.publish_partition(
        settings.warehouse,
        "month",
        month,
        run_id,
        {"monthly_traffic": traffic},
        PublicationRecord(audit_passed=True, replaced_run=base_run, polls=in_month),
        base_run,
        settings.keep_runs,
    )
    publish.build_catalog(settings.warehouse)
    run.published = True
    run.seconds = round(time.monotonic() - started, 2)
    logger.info("month %s published by run %s: %s polls, %s files", month, run_id, in_month, files)
    return run


def months_between(first: str, last: str) -> list[str]:
    """Every "YYYY-MM" from first to last, inclusive."""
    for text in (first, last):
        if not MONTH.match(text):
            raise ValueError(f"month must be YYYY-MM, got {text!r}")
    index, stop = int(first[:4]) * 12 + int(first[5:]) - 1, int(last[:4]) * 12 + int(last[5:]) - 1
    return [f"{i // 12}-{i % 12 + 1:02d}" for i in range(index, stop + 1)]


def write_counters(polls: pl.DataFrame, out: AnyPath, timezone: str) -> dict[str, int]:
    """Writes polls (time_s, device, interface, service, in_octets, out_octets) as a poller would:
    counters/<device>/<YYYY-MM>.csv with local ISO 8601 times, and counters/interfaces.csv."""
    local = pl.from_epoch("time_s", time_unit="s").dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)
    stamped = polls.with_columns(time=local.dt.strftime("%Y-%m-%dT%H:%M:%S%:z"), month=local.dt.strftime("%Y-%m"))
    files = 0
    for (device, month), part in sorted(stamped.partition_by("device", "month", as_dict=True).items()):
        buffer = io.BytesIO()
        part.select("time", "device", "interface", "in_octets", "out_octets").write_csv(buffer)
        storage.write_bytes(out / "counters" / str(device) / f"{month}.csv", buffer.getvalue())
        files += 1
    buffer = io.BytesIO()
    polls.select("device", "interface", "service").unique(maintain_order=True).write_csv(buffer)
    storage.write_bytes(out / "counters" / INVENTORY, buffer.getvalue())
    return {"counter_files": files, "polls": polls.height}


@flow(name="scheduled_monthly_traffic")
def scheduled_monthly_traffic(
    today: dt.date | None = None,
    landing_zone: str | None = None,
    warehouse: str | None = None,
    staging: str | None = None,
    config: str | None = None,
) -> MonthRun:
    """monthly_traffic_report of the month before `today` (default: the day the run was scheduled
    for, local time)."""
    from pathlib import Path

    settings = load_settings(
        Path(config) if config else None, landing=landing_zone, warehouse=warehouse, staging=staging
    )
    today = today or scheduled_local_day(settings.timezone)
    previous = today.replace(day=1) - dt.timedelta(days=1)
    return monthly_traffic_report(f"{previous:%Y-%m}", settings)
