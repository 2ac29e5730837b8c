"""The weekly report flow: ingest -> assign -> attribute -> aggregate -> audit -> publish -> summary."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import importlib
import os
import pickle
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import (
    attribute,
    failpoints,
    flow_ingest,
    ingest_tasks,
    interrupts,
    landing,
    locks,
    preflight,
    processes,
    progress,
    publish,
    report,
    storage,
)
from flows.failures import AuditFailed as AuditFailed  # raised here; defined with the other errors
from flows.failures import RunFailed, UsageError, one_line
from flows.ingest_tasks import problem_lines
from flows.settings import Settings, load_settings
from flows.staging import StageLayout, remove_stale_runs, run_folder, task_scratch
from flows.storage import AnyPath, storage_path
from transforms import attribution
from transforms.accounting import radius, subscribers
from transforms.errors import InputFormatError
from transforms.run_records import (
    AccountingSummary,
    AttributionPartials,
    AuditLimits,
    AuditResult,
    ExporterIngestResult,
    PublicationRecord,
    ReconciliationSummary,
    StageTiming,
    TaskTransfer,
    WeekIngest,
    WeekRun,
)
from transforms.tables import ports, reconcile, registry, usage
from transforms.tables import week as week_tables

# Every weekly table of the warehouse (declared in transforms/tables/registry.py).
PUBLISHED_TABLES = registry.WEEKLY_TABLES


@dataclass(frozen=True)
class WeekWindow:
    """A Monday-Sunday week in the report's time zone, as local days and UTC bounds."""

    week: dt.date
    timezone: str

    @property
    def days(self) -> list[dt.date]:
        return [self.week + dt.timedelta(days=i) for i in range(7)]

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.week, dt.time(0), ZoneInfo(self.timezone)).astimezone(dt.UTC)

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.combine(self.week + dt.timedelta(days=7), dt.time(0), ZoneInfo(self.timezone)).astimezone(
            dt.UTC
        )


class StageLog:
    """Per-stage timings of a run: one structured (key=value) log line per stage, and rows for
    the run summary."""

    def __init__(self, logger: Any, run_id: str, week: dt.date) -> None:
        self.logger, self.run_id, self.week = logger, run_id, week
        self.rows: list[StageTiming] = []
        self._last = time.monotonic()

    def done(self, stage: str, rows: int | None = None, bytes_: int | None = None) -> None:
        now = time.monotonic()
        row = StageTiming(stage, rows, bytes_, round(now - self._last, 2))
        self.rows.append(row)
        self._last = now
        self.logger.info(
            "run=%s week=%s stage=%s rows=%s bytes=%s seconds=%.2f",
            self.run_id,
            self.week,
            stage,
            rows if rows is not None else "-",
            bytes_ if bytes_ is not None else "-",
            row.seconds,
        )


def _transfer(task_name: str, key: str, arguments: Any, result: Any) -> TaskTransfer:
    import cloudpickle

    return TaskTransfer(task_name, key, len(cloudpickle.dumps(arguments)), len(cloudpickle.dumps(result)))


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _preload_audit_library() -> None:
    """Imports Great Expectations in the background (seconds of CPU) while the week is ingested,
    so that the audit does not wait for it; the audit's own import then finds it loaded."""

    def load() -> None:
        with contextlib.suppress(Exception):  # the audit's own import reports any real problem
            importlib.import_module("great_expectations.checkpoint")

    threading.Thread(target=load, name="preload-great-expectations", daemon=True).start()


@task(cache_policy=NO_CACHE)
def build_assignments(settings: Settings, window: WeekWindow, layout: StageLayout) -> AccountingSummary:
    """Address assignments and the week's users from RADIUS accounting, plus mobile billing usage."""
    try:
        return _build_assignments(settings, window, layout)
    except (InputFormatError, FileNotFoundError, UsageError):
        raise  # their messages name files, lines and reasons only
    except Exception as exc:
        # Anything else may quote accounting or directory content (polars errors quote data):
        # it must not reach the log, the Prefect database or the terminal. --debug keeps the cause.
        error = RunFailed(
            f"reading accounting or the subscriber directory failed ({type(exc).__name__}); the message is "
            "withheld because these inputs hold subscriber identities (run with --debug on a trusted terminal)"
        )
        if os.environ.get("TRAFFICREPORT_DEBUG"):
            raise error from exc
        raise error from None


def _build_assignments(settings: Settings, window: WeekWindow, layout: StageLayout) -> AccountingSummary:
    # The day before holds Starts of sessions open at the week's start; the day after holds the
    # Interim/Stop records that close the week's last hours.
    days = [window.week - dt.timedelta(days=1)] + window.days + [window.week + dt.timedelta(days=7)]
    records, quarantine = landing.ingest_radius(settings.landing, days, settings.timezone)
    records, backwards = radius.split_backward_counters(records)
    quarantine = pl.concat([quarantine, landing.line_problems(backwards)])
    directory = landing.read_directory(settings.landing, window.days[-1])
    key = settings.hmac_key()
    sessions = radius.build_sessions(records)
    assignments = radius.sessions_to_assignments(sessions, dt.timedelta(hours=settings.max_session_silence_hours))
    assignments = subscribers.identify_assignments(assignments, directory, key)
    lo = pl.lit(window.start).cast(pl.Datetime("ms", "UTC"))
    hi = pl.lit(window.end).cast(pl.Datetime("ms", "UTC"))
    in_week = assignments.filter((pl.col("valid_from") < hi) & (pl.col("valid_to") > lo))
    billing = radius.billing_usage_by_day(records, window.start, settings.timezone)
    billing = subscribers.identify_phones(billing, directory, key)
    users = pl.concat(
        [
            in_week.filter(pl.col("known") & (pl.col("service") != "mobile")).select(
                "user_key", "service", "customer_type"
            ),
            billing.filter(pl.col("known")).select("user_key", "service", "customer_type"),
        ]
    ).unique()
    identified_sessions = subscribers.identify_assignments(sessions, directory, key)
    storage.write_parquet(
        layout.radius_user_week, reconcile.radius_week_volumes(records, identified_sessions, window.start, window.end)
    )
    storage.write_parquet(layout.assignments, assignments.drop("nas", "session_id"))
    storage.write_parquet(layout.users, users)
    storage.write_parquet(
        layout.billing_user_day,
        billing.filter(pl.col("known")).select(
            "user_key", "service", "customer_type", "day", "in_bytes", "out_bytes", pl.lit("billing").alias("source")
        ),
    )
    # The quarantine keeps the reason and where, not the record: it would hold clear identities.
    storage.write_parquet(layout.quarantine("radius.problems.parquet"), quarantine)
    return AccountingSummary(
        accounting_records=records.height,
        sessions=sessions.height,
        assignments=assignments.height,
        address_conflicts=int(assignments["conflict"].sum()),
        unknown_identities=int((~assignments["known"]).sum()),
        users=users.height,
        sessions_closed_by_nas_reset=int((sessions["closed_by"] == "nas_reset").sum()),
        sessions_without_stop=int((sessions["closed_by"] == "open").sum()),
        quarantined_records=quarantine.height,
        unreadable_files=int((quarantine["position"] == "line 0").sum()),
        problems=problem_lines(quarantine),
    )


def _day_starts(window: WeekWindow) -> list[int]:
    zone = ZoneInfo(window.timezone)
    return [
        int(dt.datetime.combine(window.week + dt.timedelta(days=d), dt.time(0), zone).timestamp()) for d in range(8)
    ]


@task(cache_policy=NO_CACHE)
def build_attribution_lookup(settings: Settings, window: WeekWindow, layout: StageLayout) -> tuple[str, int]:
    """The week's assignment lookup (flows.attribute), built once for every attribution task. On a
    Dask cluster it is staged (never sent with a task) and its SHA-256 and size are returned: each
    task checks the file it reads against that digest before unpickling it, so a file changed in
    shared storage is refused, not run. Locally it stays in this process's memory ("", 0)."""
    assignments = storage.read_parquet(layout.assignments).filter(pl.col("known"))
    day_starts = _day_starts(window)
    with processes.two_core_step("attribution"), processes.thread_mapper(2) as mapper:
        lookup = attribution.build_lookup(assignments, day_starts[0] - 2 * 86_400, day_starts, mapper=mapper)
    if not settings.dask_address:
        with _lookups_lock:
            _built_lookups[str(layout.lookup)] = lookup
        return "", 0
    # Pickle: the lookup is numpy arrays and one small frame, read back only by this run's tasks.
    data = pickle.dumps(lookup, protocol=pickle.HIGHEST_PROTOCOL)
    storage.write_bytes(layout.lookup, data)
    return hashlib.sha256(data).hexdigest(), len(data)


@task(cache_policy=NO_CACHE)
def attribute_exporter(
    settings: Settings,
    window: WeekWindow,
    exporter: str,
    parts: list[str],
    service: str,
    layout: StageLayout,
    task_index: int = 0,
    lookup_digest: str = "",
) -> AttributionPartials:
    """User-day, port and hourly partial aggregates of some of one exporter's staged parts,
    attributed chunk by chunk on two threads (flows.attribute), so memory stays bounded whatever
    the week's size. A retry writes the same partials under the same names."""
    with task_scratch() as scratch:
        lookup = _week_lookup(layout, lookup_digest, scratch)
        return _attribute_parts(
            window, exporter, parts, service, layout, task_index, lookup, scratch, settings.task_threads
        )


# Lookups built by this process for its own tasks (local runs), until their run's attribution ends.
_built_lookups: dict[str, Any] = {}
# The lookups this process has read, by staged path: a Dask worker reads a week's lookup once for
# all the attribution tasks of that week it runs, not once per task (it is the biggest download).
_lookups: dict[str, Any] = {}
_lookups_lock = threading.Lock()
_LOOKUPS_KEPT = 2  # weeks of a backfill running at once on this worker, typically


def _week_lookup(layout: StageLayout, digest: str, scratch: Path) -> Any:
    key = str(layout.lookup)
    with _lookups_lock:  # held while loading: two tasks of one week wait for one download
        if key in _built_lookups:
            return _built_lookups[key]
        if key not in _lookups:
            while len(_lookups) >= _LOOKUPS_KEPT:
                _lookups.pop(next(iter(_lookups)))
            local = storage.fetch(layout.lookup, scratch)
            with local.open("rb") as file:
                if hashlib.file_digest(file, "sha256").hexdigest() != digest:
                    raise RunFailed(f"{layout.lookup}: not the assignment lookup this run staged (its SHA-256 differs)")
                file.seek(0)
                _lookups[key] = pickle.load(file)  # noqa: S301 - checked against the digest the flow sent
        return _lookups[key]


def _attribute_parts(
    window: WeekWindow,
    exporter: str,
    parts: list[str],
    service: str,
    layout: StageLayout,
    task_index: int,
    lookup: Any,
    scratch: Path,
    threads: int,
) -> AttributionPartials:
    # Downloads (when staging is remote) before taking two cores: another task computes meanwhile.
    local_parts = [storage.fetch(storage_path(p), scratch) for p in parts]
    with processes.two_core_step("attribution"), attribute.keeping_freed_memory():
        totals = attribute.attribute_files(
            local_parts,
            lookup,
            prepare=usage.estimate_volume,
            threads=threads,
            on_chunk=lambda done, rows: progress.report("attribute", exporter, done, rows),
        )
    days = pl.DataFrame({"day_index": range(7), "day": window.days})
    user_day = (
        attribution.user_day_volumes(lookup, totals)
        .join(lookup.users.with_columns(pl.col("user_index").cast(pl.UInt32)), on="user_index")
        .join(days.with_columns(pl.col("day_index").cast(pl.Int32)), on="day_index")
        .select(
            "user_key",
            "service",
            "customer_type",
            "day",
            "in_bytes",
            "out_bytes",
            "in_packets",
            "out_packets",
            pl.lit("flows").alias("source"),
        )
    )
    port_hours = attribution.port_hour_volumes(lookup, totals)
    port_totals = port_hours.group_by("protocol", "port").agg(pl.col("bytes").sum())
    port_buckets = ports.bucket_port_hours(
        port_hours.join(days, on="day_index").drop("day_index").with_columns(service=pl.lit(service))
    )
    hours = attribution.hourly_volumes(lookup, totals).join(days, on="day_index").drop("day_index")
    out = {}
    for table, frame in (
        ("user_day", user_day),
        ("port", port_totals.with_columns(service=pl.lit(service))),
        ("hour", hours.with_columns(service=pl.lit(service))),
        ("port_bucket", port_buckets),
    ):
        path = layout.partial(table, exporter, task_index)
        storage.write_parquet(path, frame)
        out[table] = str(path)
    return AttributionPartials(**out)


def read_flow_user_days(partials: list[AttributionPartials]) -> pl.DataFrame:
    """Flow-attributed user-day rows of every exporter (read once: the tables and the RADIUS
    reconciliation both use them)."""
    return pl.concat([_read(p.user_day) for p in partials]) if partials else pl.DataFrame()


def _read(path: str | AnyPath) -> pl.DataFrame:
    return storage.read_parquet(storage_path(path) if isinstance(path, str) else path)


def combine_tables(
    window: WeekWindow, layout: StageLayout, partials: list[AttributionPartials], flow_days: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """The published tables of the week (but ingest_quality) from the staged partial aggregates."""
    return week_tables.combine_week_tables(
        window.week,
        _read(layout.users),
        flow_days,
        _read(layout.billing_user_day),
        [_read(p.port) for p in partials],
        [_read(p.hour) for p in partials],
        [_read(p.port_bucket) for p in partials],
    )


def reconcile_with_radius(layout: StageLayout, flow_days: pl.DataFrame, settings: Settings) -> ReconciliationSummary:
    """Per broadband user: flow-estimated vs RADIUS-counted volume of the week; the counts go to
    the audit, the rows to the staging area."""
    flow_week = (
        flow_days.filter(pl.col("service") != "mobile")
        .group_by("user_key", "service")
        .agg(pl.col("in_bytes", "out_bytes", "in_packets", "out_packets").sum())
    )
    compared = reconcile.compare_flows_to_radius(
        flow_week, _read(layout.radius_user_week), settings.reconcile_z, settings.reconcile_floor
    )
    storage.write_parquet(layout.reconciliation, compared)
    outside = compared.filter(~pl.col("in_within") | ~pl.col("out_within"))
    return ReconciliationSummary(
        users_compared=compared.height,
        users_outside_tolerance=outside.height,
        median_error_in=_median(compared["in_error"]),
        median_error_out=_median(compared["out_error"]),
    )


def _median(values: pl.Series) -> float | None:
    median = values.median() if values.len() else None
    return None if median is None else float(median)  # type: ignore[arg-type]


@task(cache_policy=NO_CACHE)
def audit_tables(
    tables: dict[str, pl.DataFrame], ingest: WeekIngest, settings: Settings, layout: StageLayout
) -> AuditResult:
    """Runs every table's Great Expectations suite, the run-level gates and the drift checks
    against the previously published week; never raises."""
    from expectations.audit import audit_week

    week = tables["usage_summary"]["week"][0]
    previous = publish.previous_published(
        settings.warehouse, week, ("usage_summary", "port_share"), settings.drift_window_weeks
    )
    limits = AuditLimits(
        max_quarantined_share=settings.max_quarantined_share,
        max_unattributed_share=settings.max_unattributed_share,
        max_user_change=settings.max_user_change,
        max_mean_change=settings.max_mean_change,
        max_port_share_change=settings.max_port_share_change,
        max_unreconciled_share=settings.max_unreconciled_share,
    )
    return audit_week(tables, ingest, limits, previous, docs_dir=layout.data_docs)


def _retry_only_missing_feeds(task: Any, task_run: Any, state: Any) -> bool:
    """A late feed is worth waiting for; any other failure is not."""
    return isinstance(state.result(raise_on_failure=False), landing.MissingFeed)


@task(cache_policy=NO_CACHE, retry_condition_fn=_retry_only_missing_feeds)
def wait_for_complete_feeds(settings: Settings, window: WeekWindow) -> list[str]:
    """The exporters of the landing zone, once every one has flow files for every day of the week
    and RADIUS has some (MissingFeed otherwise: retried when the run allows retries)."""
    exporters = landing.list_exporters(settings.landing)
    if not exporters:
        raise landing.MissingFeed(f"{settings.landing / 'flows'}: no exporter folders: nothing to report yet")
    landing.check_feeds(settings.landing, exporters, window.days, settings.timezone, settings.nfdump_timezone)
    return exporters


@task(cache_policy=NO_CACHE)
def rebuild_catalog(settings: Settings) -> None:
    """catalog.duckdb rebuilt from the manifest (one table per published table, one view per sql/ file)."""
    publish.build_catalog(settings.warehouse)


@task(cache_policy=NO_CACHE)
def render_report(settings: Settings, week: dt.date) -> tuple[str, str]:
    """The week's report page rendered from the published warehouse: (where it was written, its markdown)."""
    rendered = report.build_report(settings.warehouse, week)
    return str(report.write_report(settings.warehouse, rendered)), rendered.markdown


@flow(name="weekly_report", log_prints=True)
def weekly_report(
    week: dt.date,
    settings: Settings | None = None,
    force: bool = True,
    accept_failed_audit: bool = False,
    feed_retries: int = 0,
    feed_retry_delay_seconds: float = 3600.0,
) -> WeekRun:
    """Ingests, attributes, audits and publishes one Monday-Sunday week; returns the run summary.
    A failed audit publishes nothing unless `accept_failed_audit`, which the manifest records. A
    late feed is waited for `feed_retries` times, `feed_retry_delay_seconds` apart, then fails."""
    settings = settings or load_settings()
    preflight.check_week(week, settings.timezone)
    preflight.check_key(settings)
    preflight.check_inventory(settings)
    with locks.one_run_at_a_time(week, settings.one_run_per_week, settings.lock_dir):
        return _run_week(week, settings, force, accept_failed_audit, feed_retries, feed_retry_delay_seconds)


def _run_week(
    week: dt.date,
    settings: Settings,
    force: bool,
    accept_failed_audit: bool,
    feed_retries: int,
    feed_retry_delay_seconds: float,
) -> WeekRun:
    logger = get_run_logger()
    window = WeekWindow(week, settings.timezone)
    base_run = publish.published_run(publish.read_manifest(settings.warehouse), week)
    if not force and base_run is not None:
        logger.info("week %s already published; skipping", week)
        return WeekRun(run_id="", week=str(week), skipped=True)
    run_id = new_run_id()
    removed = remove_stale_runs(settings.staging)
    if removed:
        logger.info("removed the staging folders of %d runs that are no longer running", len(removed))
    # Decoded flows and partials of the run are removed when it ends: every table they fed is
    # published (or the run failed and its summary and Data Docs are in the warehouse).
    with run_folder(settings.staging, run_id, keep=settings.keep_staging) as root, task_scratch() as scratch:
        local_root = storage.local_path(root) if storage.is_local(root) else scratch
        layout = StageLayout.of_run(root, settings.quarantine_path, "week", str(week), local_root)
        submitted: list[Any] = []
        try:
            return _run_stages(
                window,
                settings,
                layout,
                base_run,
                accept_failed_audit,
                feed_retries,
                feed_retry_delay_seconds,
                submitted,
            )
        except BaseException:
            # Tasks still running write into the staging folder: it is removed only once they end.
            for future in submitted:
                with contextlib.suppress(BaseException):
                    future.wait()
            raise


def _run_stages(
    window: WeekWindow,
    settings: Settings,
    layout: StageLayout,
    base_run: str | None,
    accept_failed_audit: bool,
    feed_retries: int,
    feed_retry_delay_seconds: float,
    submitted: list[Any],
) -> WeekRun:
    """The pipeline's stages in order: feeds, ingest, attribute, combine, reconcile, audit, publish,
    catalog, report, summary."""
    logger = get_run_logger()
    week, run_id = window.week, layout.run_id
    started = time.monotonic()
    stages = StageLog(logger, run_id, week)
    _preload_audit_library()
    exporters = wait_for_complete_feeds.with_options(
        retries=feed_retries, retry_delay_seconds=feed_retry_delay_seconds
    )(settings, window)
    stages.done("feeds", rows=len(exporters))

    interrupts.check("ingest")
    assignment_args = (settings, window, layout)
    assignment_future = build_assignments.submit(*assignment_args)
    ingest_transfers: list[TaskTransfer] = []
    if settings.dask_address:
        # On a cluster: a task per (exporter, day) group of files, then one per exporter that chains them.
        plans = {e: ingest_tasks.plan_file_groups(settings, week, e, layout) for e in exporters}
        group_args = [
            (settings, window.start, window.end, e, index, layout) for e in exporters for index in range(plans[e])
        ]
        group_futures = [ingest_tasks.ingest_file_group.submit(*args) for args in group_args]
        submitted += [assignment_future, *group_futures]
        decoded: list[tuple[int, str]] = _results(group_futures, settings)
        ingest_transfers += [
            _transfer("ingest_file_group", f"{a[3]}.{a[4]}", a, r) for a, r in zip(group_args, decoded, strict=True)
        ]
        digests: dict[str, list[str]] = {e: [] for e in exporters}
        for args, (_, digest) in zip(group_args, decoded, strict=True):
            digests[args[3]].append(digest)
        finish_args = [(settings, week, window.start, window.end, e, digests[e], layout) for e in exporters]
        flow_futures = [ingest_tasks.finish_exporter_ingest.submit(*args) for args in finish_args]
        submitted += flow_futures
        ingested: list[ExporterIngestResult] = _results(flow_futures, settings)
        ingest_transfers += [
            _transfer("finish_exporter_ingest", a[4], a, r) for a, r in zip(finish_args, ingested, strict=True)
        ]
    else:
        ingest_args = [(settings, week, window.start, window.end, e, layout) for e in exporters]
        flow_futures = [ingest_tasks.ingest_flows_of_exporter.submit(*args) for args in ingest_args]
        submitted += [assignment_future, *flow_futures]
        ingested = _results(flow_futures, settings)
        ingest_transfers += [
            _transfer("ingest_flows_of_exporter", a[4], a, r) for a, r in zip(ingest_args, ingested, strict=True)
        ]
    flow_info = [i.summary for i in ingested]
    assignment_info: AccountingSummary = _results([assignment_future], settings)[0]
    # Every ingest ended: the exporters' states become the next run's starting point.
    flow_ingest.commit_exporter_states(layout.exporter_state, settings.state_path, [i.exporter for i in flow_info])
    # Files (or their records) delivered by two exporters would count their traffic twice: the audit fails.
    duplicates = flow_ingest.duplicate_inputs(
        [(i.summary.exporter, list(i.digests), list(i.record_sets)) for i in ingested]
    )
    stages.done(
        "ingest",
        rows=sum(i.records for i in flow_info) + assignment_info.accounting_records,
        bytes_=sum(i.input_bytes for i in flow_info),
    )

    interrupts.check("attribution")
    try:
        lookup_digest, lookup_bytes = build_attribution_lookup(settings, window, layout)
        if lookup_bytes:
            logger.info("run=%s week=%s assignment lookup staged: %d bytes", run_id, week, lookup_bytes)
        task_records = settings.task_records if settings.dask_address else None
        attribute_args = [
            (settings, window, i.exporter, group, i.service, layout, index, lookup_digest)
            for i in flow_info
            for index, group in enumerate(attribute.group_parts(list(i.parts), list(i.part_records), task_records))
        ]
        partial_futures = [attribute_exporter.submit(*args) for args in attribute_args]
        submitted += partial_futures
        partials: list[AttributionPartials] = _results(partial_futures, settings)
    finally:
        with _lookups_lock:  # held by this process only if it built the lookup or its tasks ran here
            _built_lookups.pop(str(layout.lookup), None)
            _lookups.pop(str(layout.lookup), None)
    stages.done("attribute", rows=sum(i.records for i in flow_info))
    # What crossed between the flow and its tasks (to Dask workers, when configured): arguments
    # and results only, paths and counts, never the flows themselves.
    transfers = (
        [_transfer("build_assignments", "radius", assignment_args, assignment_info)]
        + ingest_transfers
        + [_transfer("attribute_exporter", f"{a[2]}.{a[6]}", a, r) for a, r in zip(attribute_args, partials)]
    )

    flow_days = read_flow_user_days(partials)
    tables = combine_tables(window, layout, partials, flow_days)
    tables["ingest_quality"] = week_tables.ingest_quality_table(window.week, flow_info, assignment_info)
    tables["exporter_day_records"] = week_tables.exporter_day_records_table(window.week, flow_info)
    tables = {name: registry.conform_to_table(name, tables[name]) for name in PUBLISHED_TABLES}
    stages.done("combine", rows=sum(t.height for t in tables.values()))
    reconciliation = reconcile_with_radius(layout, flow_days, settings)
    ingest = WeekIngest(tuple(flow_info), assignment_info, reconciliation, tuple(duplicates))
    stages.done("reconcile", rows=reconciliation.users_compared)

    interrupts.check("the audit")
    audit: AuditResult = audit_tables(tables, ingest, settings, layout)
    stages.done("audit", rows=len(audit.checks))
    failed = audit.failed
    run = WeekRun(
        run_id=run_id,
        week=str(week),
        audit_passed=audit.success,
        accepted_failed_audit=bool(failed) and accept_failed_audit,
        audit=audit,
        ingest=ingest,
        stages=stages.rows,
        transfers=transfers,
    )
    failpoints.reach("weekly:audited")
    interrupts.check("publication")
    rendered_markdown: str | None = None
    if audit.success or accept_failed_audit:
        record = PublicationRecord(
            audit_passed=audit.success,
            replaced_run=base_run,
            accepted_failed_audit=run.accepted_failed_audit,
            failed_checks=tuple(failed),
        )
        # From here a signal no longer stops the run: its files and manifest swap take seconds, and
        # a half-finished publication (catalog or report behind the manifest) helps nobody.
        with interrupts.publishing():
            run.removed_runs = publish.publish_week(
                settings.warehouse, week, run_id, tables, record, base_run, settings.keep_runs
            )
            run.published = True
            rebuild_catalog(settings)
            failpoints.reach("weekly:catalog-built")
            stages.done("publish", rows=sum(t.height for t in tables.values()))
            rendered_markdown = _render_report_or_warn(settings, run)
            stages.done("report")
        if interrupts.requested():
            logger.warning("interrupted during publication: week %s was published, catalog and report finished", week)
        if failed:
            logger.warning("week %s published with a FAILED audit, accepted by the operator: %s", week, failed)
    if failed:
        # The GX Data Docs of the failed run go beside its summary, for whoever reads the failure.
        docs = settings.warehouse / "reports" / str(week) / f"data_docs-{run_id}"
        storage.put_tree(layout.data_docs, docs)
        run.data_docs = f"{docs}/index.html"
    run.seconds = round(time.monotonic() - started, 1)
    summary = week_tables.markdown_summary(window.week, window.timezone, tables, run)
    summary_path = settings.warehouse / "reports" / str(week) / f"summary-{run_id}.md"
    storage.write_bytes(summary_path, summary.encode())
    create_markdown_artifact(summary, key=f"weekly-report-{week}", description=f"Week of {week}")
    if not run.published:
        raise AuditFailed(
            f"week {week}: audit failed, nothing published; {len(failed)} failed checks: "
            + "; ".join(failed[:8])
            + f"; report: {summary_path}, data docs: {run.data_docs}"
        )
    if rendered_markdown is not None:
        create_markdown_artifact(rendered_markdown, key=f"report-{week}", description=f"Report, week of {week}")
    logger.info("week %s published by run %s in %.1f s", week, run_id, run.seconds)
    return run


# distributed's errors for a cluster that went away under the run (by name: distributed is an
# optional dependency): the scheduler lost, the client's connection cut.
_CLUSTER_LOST = ("FutureCancelledError", "CommClosedError", "CancelledError", "TimeoutError")


def _results(futures: list[Any], settings: Settings) -> list[Any]:
    """The tasks' results; a Dask cluster lost meanwhile, or a task that kept killing its workers,
    is one RunFailed that says so, not a distributed error naming a task key."""
    try:
        return [future.result() for future in futures]
    except Exception as exc:
        if not settings.dask_address or type(exc).__module__.split(".")[0] not in ("distributed", "asyncio"):
            raise
        name = type(exc).__name__
        if name == "KilledWorker":
            raise RunFailed(
                f"a task of the week died with the Dask worker running it, on every worker that tried it "
                f"({one_line(exc)}); workers may be running out of memory (see deploy/README.md, sizing); "
                "nothing was published"
            ) from exc
        if name in _CLUSTER_LOST:
            raise RunFailed(
                f"the Dask cluster at {settings.dask_address} was lost while the week's tasks ran "
                f"({name}); nothing was published: run the week again once the cluster is back"
            ) from exc
        raise


# Set by a caller that renders the report once, after all its weeks are published (lookback-demo):
# a week's own report, rendered while earlier weeks are still running, would lack their look-back.
DEFER_REPORT: contextvars.ContextVar[bool] = contextvars.ContextVar("defer_report", default=False)


def _render_report_or_warn(settings: Settings, run: WeekRun) -> str | None:
    """Renders the published week's report; a failure leaves the run published and Completed, with
    the reason in the run summary, a warning in the log and a `report-failed-<week>` artifact."""
    if DEFER_REPORT.get():
        return None
    week = dt.date.fromisoformat(run.week)
    try:
        run.report, markdown = render_report(settings, week)
        return markdown
    except Exception as exc:
        run.report_error = f"{type(exc).__name__}: {one_line(exc)}"
        get_run_logger().warning(
            "week %s is published, but its report was not rendered (%s); `trafficreport report --week %s` retries it",
            week,
            run.report_error,
            week,
        )
        create_markdown_artifact(
            f"# Report of week {week} not rendered\n\nThe week is published (run `{run.run_id}`); rendering its "
            f"report failed: {run.report_error}.\n\nRetry with `trafficreport report --week {week}`.\n",
            key=f"report-failed-{week}",
            description=f"Week of {week}: published, report not rendered",
        )
        return None


def weekly_report_runner(settings: Settings) -> Any:
    """weekly_report, on the Dask cluster at `settings.dask_address` when one is configured (its
    per-exporter tasks then run on the cluster's workers), else on local threads."""
    if not settings.dask_address:
        return weekly_report
    from prefect_dask import DaskTaskRunner

    runner: Any = DaskTaskRunner(address=settings.dask_address)
    return weekly_report.with_options(task_runner=runner)


def scheduled_local_day(timezone: str) -> dt.date:
    """The local day this flow run was scheduled for (today, for a run started by hand): a late or
    retried scheduled run still works on the period its schedule meant."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    moment = scheduled if scheduled is not None else dt.datetime.now(dt.UTC)
    return moment.astimezone(ZoneInfo(timezone)).date()


@flow(name="scheduled_weekly_report")
def scheduled_weekly_report(
    today: dt.date | None = None,
    landing_zone: str | None = None,
    warehouse: str | None = None,
    staging: str | None = None,
    config: str | None = None,
    exporter_services: dict[str, str] | None = None,
    feed_retries: int = 12,
    feed_retry_delay_seconds: float = 3600.0,
) -> WeekRun:
    """The weekly_report of the last complete Monday-Sunday week before `today` (default: the day
    the run was scheduled for, local time, so a late or retried run still reports the same week).
    `exporter_services` maps exporter name patterns to broadband / mobile."""
    settings = load_settings(
        Path(config) if config else None,
        landing=landing_zone,
        warehouse=warehouse,
        staging=staging,
        exporter_services=exporter_services,
    )
    today = today or scheduled_local_day(settings.timezone)
    last_monday = today - dt.timedelta(days=today.weekday() + 7)
    return weekly_report_runner(settings)(
        last_monday, settings, feed_retries=feed_retries, feed_retry_delay_seconds=feed_retry_delay_seconds
    )
