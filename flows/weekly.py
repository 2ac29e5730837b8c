"""The weekly report flow: ingest -> assign -> attribute -> aggregate -> audit -> publish -> summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import os
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
from flows.failures import RunFailed, UsageError
from flows.settings import Settings, load_settings
from flows.staging import remove_stale_runs, run_folder
from transforms import attribution, ports, radius, reconcile, stats, subscribers, usage
from transforms.errors import InputFormatError

PUBLISHED_TABLES = (
    "user_day_usage",
    "user_week_usage",
    "usage_summary",
    "port_usage",
    "port_share",
    "traffic_hour",
    "port_bucket_hour",
    "ingest_quality",
)


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
        self.rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def done(self, stage: str, rows: int | None = None, bytes_: int | None = None) -> None:
        now = time.monotonic()
        row = {"stage": stage, "rows": rows, "bytes": bytes_, "seconds": round(now - self._last, 2)}
        self.rows.append(row)
        self._last = now
        self.logger.info(
            "run=%s week=%s stage=%s rows=%s bytes=%s seconds=%.2f",
            self.run_id,
            self.week,
            stage,
            rows if rows is not None else "-",
            bytes_ if bytes_ is not None else "-",
            row["seconds"],
        )


def _transfer(task_name: str, key: str, arguments: Any, result: Any) -> dict[str, Any]:
    import cloudpickle

    return {
        "task": task_name,
        "key": key,
        "bytes_in": len(cloudpickle.dumps(arguments)),
        "bytes_out": len(cloudpickle.dumps(result)),
    }


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _preload_audit_library() -> None:
    """Imports Great Expectations in the background (seconds of CPU) while the week is ingested,
    so that the audit does not wait for it; the audit's own import then finds it loaded."""

    def load() -> None:
        with contextlib.suppress(Exception):  # the audit's own import reports any real problem
            importlib.import_module("great_expectations.checkpoint")

    threading.Thread(target=load, name="preload-great-expectations", daemon=True).start()


def _call(function: Any, *args: Any) -> Any:
    return function(*args)


@task(cache_policy=NO_CACHE)
def ingest_flows_of_exporter(settings: Settings, window: WeekWindow, exporter: str, stage: Path) -> dict[str, Any]:
    """Decoded, sampling-resolved flows of one exporter for the week, staged as parquet."""
    # Flows starting late on the last day can sit in the next day's file.
    days = window.days + [window.week + dt.timedelta(days=7)]
    parts_dir = stage / "flows" / exporter
    # Each exporter in a process of its own (when running locally): decoding is CPU-bound.
    run: Any = processes.run_in_process if processes.processes_allowed() and not settings.dask_address else _call
    result = run(
        landing.ingest_exporter,
        settings.landing,
        exporter,
        days,
        window.start,
        window.end,
        settings.default_rate_of(exporter),
        settings.override_rate_of(exporter),
        settings.nfdump_timezone,
        settings.state_path,
        parts_dir,
    )
    quarantine = settings.quarantine_path / f"week={window.week}" / f"run={stage.name}"
    quarantine.mkdir(parents=True, exist_ok=True)
    result.quarantine.write_parquet(quarantine / f"flows.{exporter}.problems.parquet")
    unrated_records = 0
    for unrated in result.unrated:
        unrated_records += pl.scan_parquet(unrated).select(pl.len()).collect().item()
        unrated.replace(quarantine / f"flows.{exporter}.no_sampling_rate.{unrated.stem}.parquet")
    per_day = dict.fromkeys(map(str, window.days), 0)
    if result.parts:
        local_day = pl.col("first_ts").dt.convert_time_zone(settings.timezone).dt.date().cast(pl.String)
        counts = pl.scan_parquet(result.parts).group_by(local_day.alias("day")).len().collect()
        per_day.update({row["day"]: int(row["len"]) for row in counts.iter_rows(named=True) if row["day"] in per_day})
    return {
        "exporter": exporter,
        "service": settings.service_of(exporter),
        "parts": [str(p) for p in result.parts],
        "files": len(result.files),
        "formats": result.formats,
        "records": result.records,
        "messages": result.messages,
        "lost_records": result.lost_records,
        "lost_datagrams": result.lost_datagrams,
        "outside_window": result.outside_window,
        "duplicate_files": result.duplicate_files,
        "input_bytes": result.input_bytes,
        "unreadable_input_bytes": int(result.quarantine["input_bytes"].sum() or 0),
        "quarantined_records": int(result.quarantine["records"].sum() or 0),
        "quarantined_bytes": int(result.quarantine["bytes"].sum() or 0),
        "problems": [f"{p['source']}: {p['position']}: {p['reason']}" for p in result.quarantine.head(20).to_dicts()],
        "sampling": [
            {"source": source, "rate": rate, "records": count}
            for (source, rate), count in sorted(result.sampling.items())
        ],
        "raw_bytes": result.raw_bytes,
        "records_per_day": per_day,
        "unrated_records": unrated_records,
        "digests": result.digests,
        "record_sets": result.record_sets,
    }


@task(cache_policy=NO_CACHE)
def build_assignments(settings: Settings, window: WeekWindow, stage: Path) -> dict[str, Any]:
    """Address assignments and the week's users from RADIUS accounting, plus mobile billing usage."""
    try:
        return _build_assignments(settings, window, stage)
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


def _build_assignments(settings: Settings, window: WeekWindow, stage: Path) -> dict[str, Any]:
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
    stage.mkdir(parents=True, exist_ok=True)
    identified_sessions = subscribers.identify_assignments(sessions, directory, key)
    reconcile.radius_week_volumes(records, identified_sessions, window.start, window.end).write_parquet(
        stage / "radius_user_week.parquet"
    )
    assignments.drop("nas", "session_id").write_parquet(stage / "assignments.parquet")
    users.write_parquet(stage / "users.parquet")
    billing.filter(pl.col("known")).select(
        "user_key", "service", "customer_type", "day", "in_bytes", "out_bytes", pl.lit("billing").alias("source")
    ).write_parquet(stage / "billing_user_day.parquet")
    # The quarantine keeps the reason and where, not the record: it would hold clear identities.
    quarantine_dir = settings.quarantine_path / f"week={window.week}" / f"run={stage.name}"
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    quarantine.write_parquet(quarantine_dir / "radius.problems.parquet")
    return {
        "accounting_records": records.height,
        "sessions": sessions.height,
        "assignments": assignments.height,
        "address_conflicts": int(assignments["conflict"].sum()),
        "unknown_identities": int((~assignments["known"]).sum()),
        "users": users.height,
        "sessions_closed_by_nas_reset": int((sessions["closed_by"] == "nas_reset").sum()),
        "sessions_without_stop": int((sessions["closed_by"] == "open").sum()),
        "quarantined_records": quarantine.height,
        # A file read not at all (or cut short) holds an unknown number of records: the audit fails.
        "unreadable_files": int((quarantine["position"] == "line 0").sum()),
        "problems": [f"{p['source']}: {p['position']}: {p['reason']}" for p in quarantine.head(20).to_dicts()],
    }


def _day_starts(window: WeekWindow) -> list[int]:
    zone = ZoneInfo(window.timezone)
    return [
        int(dt.datetime.combine(window.week + dt.timedelta(days=d), dt.time(0), zone).timestamp()) for d in range(8)
    ]


@task(cache_policy=NO_CACHE)
def attribute_exporter(
    settings: Settings, window: WeekWindow, exporter: str, parts: list[str], service: str, stage: Path
) -> dict[str, str]:
    """User-day, port and hourly partial aggregates of one exporter's flows, attributed chunk by chunk
    on two threads (flows.attribute), so memory stays bounded whatever the week's size."""
    assignments = pl.read_parquet(stage / "assignments.parquet").filter(pl.col("known"))
    day_starts = _day_starts(window)
    with processes.two_core_step("attribution"), attribute.keeping_freed_memory():
        lookup = attribution.build_lookup(assignments, day_starts[0] - 2 * 86_400, day_starts)
        totals = attribute.attribute_files(
            [Path(p) for p in parts],
            lookup,
            prepare=usage.estimate_volume,
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
        path = stage / "partials" / f"{table}.{exporter}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        out[table] = str(path)
    return out


def read_flow_user_days(partials: list[dict[str, str]]) -> pl.DataFrame:
    """Flow-attributed user-day rows of every exporter (read once: the tables and the RADIUS
    reconciliation both use them)."""
    return pl.concat([pl.read_parquet(p["user_day"]) for p in partials]) if partials else pl.DataFrame()


def combine_tables(
    window: WeekWindow, stage: Path, partials: list[dict[str, str]], flow_days: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """The published tables of the week from the per-exporter partial aggregates."""
    users = pl.read_parquet(stage / "users.parquet")
    broadband_days = (
        flow_days.filter(pl.col("service") != "mobile")
        .group_by("user_key", "service", "customer_type", "day")
        .agg(pl.col("in_bytes").sum(), pl.col("out_bytes").sum(), pl.col("source").first())
    )
    billing_days = pl.read_parquet(stage / "billing_user_day.parquet")
    columns = [
        "day",
        "service",
        "user_key",
        "customer_type",
        pl.col("in_bytes").cast(pl.Float64),
        pl.col("out_bytes").cast(pl.Float64),
        "source",
    ]
    user_day = (
        pl.concat([broadband_days.select(columns), billing_days.select(columns)])
        .with_columns(pl.lit(window.week).alias("week"))
        .sort("day", "service", "user_key")
    )
    user_week = usage.user_week_usage(user_day, users, window.week)
    summary = stats.summarize_usage(user_week).with_columns(pl.lit(window.week).alias("week"))
    port_usage = (
        pl.concat([pl.read_parquet(p["port"]) for p in partials])
        .group_by("service", "protocol", "port")
        .agg(pl.col("bytes").sum())
        .with_columns(pl.lit(window.week).alias("week"))
        .sort("service", "protocol", "port")
    )
    port_share = ports.share_by_category(port_usage).with_columns(pl.lit(window.week).alias("week"))
    traffic_hour = (
        pl.concat([pl.read_parquet(p["hour"]) for p in partials])
        .group_by("service", "day", "hour")
        .agg(pl.col("in_bytes").sum(), pl.col("out_bytes").sum(), pl.col("unattributed_bytes").sum())
        .with_columns(pl.lit(window.week).alias("week"))
        .sort("service", "day", "hour")
    )
    port_bucket_hour = (
        pl.concat([pl.read_parquet(p["port_bucket"]) for p in partials])
        .group_by("service", "day", "hour", "bucket")
        .agg(pl.col("bytes").sum())
        .with_columns(pl.lit(window.week).alias("week"))
        .sort("service", "day", "hour", "bucket")
    )
    return {
        "user_day_usage": user_day,
        "user_week_usage": user_week,
        "usage_summary": summary,
        "port_usage": port_usage.with_columns(pl.col("port").cast(pl.Int32)),
        "port_share": port_share,
        "traffic_hour": traffic_hour,
        "port_bucket_hour": port_bucket_hour,
    }


def ingest_quality_table(
    window: WeekWindow, flow_info: list[dict[str, Any]], radius_info: dict[str, Any]
) -> pl.DataFrame:
    """Rows (week, feed_type, feed, service, records, quarantined_records, quarantined_pct, sampling):
    one per exporter and one for RADIUS, for the report's data-quality section."""
    rows = []
    for info in flow_info:
        total = sum(int(s["records"]) for s in info["sampling"]) or 1
        rows.append(
            {
                "feed_type": "flows",
                "feed": info["exporter"],
                "service": info["service"],
                "records": int(info["records"]),
                "quarantined_records": int(info["quarantined_records"]) + int(info["unrated_records"]),
                "sampling": "; ".join(
                    f"1:{s['rate']} from {s['source']} ({100 * int(s['records']) / total:.1f}%)"
                    for s in info["sampling"]
                ),
            }
        )
    rows.append(
        {
            "feed_type": "radius",
            "feed": "accounting",
            "service": "broadband+mobile",
            "records": int(radius_info["accounting_records"]),
            "quarantined_records": int(radius_info["quarantined_records"]),
            "sampling": "",
        }
    )
    frame = pl.DataFrame(
        rows,
        schema={
            "feed_type": pl.String,
            "feed": pl.String,
            "service": pl.String,
            "records": pl.Int64,
            "quarantined_records": pl.Int64,
            "sampling": pl.String,
        },
    )
    seen = pl.col("records") + pl.col("quarantined_records")
    return frame.with_columns(
        quarantined_pct=pl.when(seen > 0).then(100 * pl.col("quarantined_records") / seen).otherwise(0.0),
        week=pl.lit(window.week),
    ).sort("feed_type", "feed")


def reconcile_with_radius(stage: Path, flow_days: pl.DataFrame, settings: Settings) -> dict[str, Any]:
    """Per broadband user: flow-estimated vs RADIUS-counted volume of the week; the counts go to
    the audit, the rows to the staging area."""
    flow_week = (
        flow_days.filter(pl.col("service") != "mobile")
        .group_by("user_key", "service")
        .agg(pl.col("in_bytes", "out_bytes", "in_packets", "out_packets").sum())
    )
    compared = reconcile.compare_flows_to_radius(
        flow_week, pl.read_parquet(stage / "radius_user_week.parquet"), settings.reconcile_z, settings.reconcile_floor
    )
    compared.write_parquet(stage / "reconciliation.parquet")
    outside = compared.filter(~pl.col("in_within") | ~pl.col("out_within"))
    return {
        "users_compared": compared.height,
        "users_outside_tolerance": outside.height,
        "median_error_in": compared["in_error"].median() if compared.height else None,
        "median_error_out": compared["out_error"].median() if compared.height else None,
    }


@task(cache_policy=NO_CACHE)
def audit_tables(
    tables: dict[str, pl.DataFrame], ingest: dict[str, Any], settings: Settings, stage: Path
) -> dict[str, Any]:
    """Runs every table's Great Expectations suite, the run-level gates and the drift checks
    against the previously published week; never raises."""
    from expectations.audit import audit_week

    week = tables["usage_summary"]["week"][0]
    previous = publish.previous_published(
        settings.warehouse, week, ("usage_summary", "port_share"), settings.drift_window_weeks
    )
    limits = {
        name: float(getattr(settings, name))
        for name in (
            "max_quarantined_share",
            "max_unattributed_share",
            "max_user_change",
            "max_mean_change",
            "max_port_share_change",
            "max_unreconciled_share",
        )
    }
    return audit_week(tables, ingest, limits, previous, docs_dir=stage / "data_docs")


def markdown_summary(window: WeekWindow, tables: dict[str, pl.DataFrame], run: dict[str, Any]) -> str:
    """The run's summary: Tables 1-4 rows, ingest counts, audit result."""
    lines = [
        f"# Broadband Traffic Report, week of {window.week} ({window.timezone})",
        "",
        f"run `{run['run_id']}`: audit **{'passed' if run['audit_passed'] else 'FAILED'}**, "
        f"published: {run['published']}"
        + (" (failed audit accepted by the operator)" if run.get("accepted_failed_audit") else ""),
        "",
    ]
    summary = tables["usage_summary"]
    for service, title in (
        ("broadband", "Table 1: broadband daily usage (MB/day)"),
        ("mobile", "Table 2: mobile daily usage (MB/day)"),
    ):
        lines += [
            f"## {title}",
            "",
            "| direction | users | mean | median | mode | top 1% | top 10% |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in summary.filter(pl.col("service") == service).iter_rows(named=True):
            lines.append(
                f"| {row['direction'].upper()} | {row['users']} | {row['mean_mb']:.1f} | {row['median_mb']:.1f} | "
                f"{row['mode_mb']:.1f} | {100 * row['top1_share']:.1f}% | {100 * row['top10_share']:.1f}% |"
            )
        lines.append("")
    for service, title in (
        ("broadband", "Table 3: broadband usage by port (%)"),
        ("mobile", "Table 4: mobile usage by port (%)"),
    ):
        lines += [f"## {title}", "", "| category | share |", "|---|---:|"]
        for row in (
            tables["port_share"]
            .filter((pl.col("service") == service) & (pl.col("category") != ports.OTHER_CATEGORY))
            .iter_rows(named=True)
        ):
            lines.append(f"| {row['category']} | {row['share_pct']:.1f} |")
        lines.append("")
    lines += ["## Stages", "", "| stage | rows | bytes | seconds |", "|---|---:|---:|---:|"]
    for row in run.get("stages", []):
        lines.append(f"| {row['stage']} | {row['rows'] or ''} | {row['bytes'] or ''} | {row['seconds']} |")
    lines += ["", "## Bytes between the flow and its tasks", "", "| task | of | in | out |", "|---|---|---:|---:|"]
    for row in run.get("transfers", []):
        lines.append(f"| {row['task']} | {row['key']} | {row['bytes_in']:,} | {row['bytes_out']:,} |")
    lines += [
        "",
        "## Ingest",
        "",
        "```",
        json.dumps(run["ingest"], indent=1, default=str)[:4000],
        "```",
        "",
        "## Audit",
        "",
    ]
    for check in run["audit"]["checks"]:
        lines.append(
            f"- {'ok  ' if check['success'] else 'FAIL'} {check['table']}: {check['check']} {check.get('detail', '')}"
        )
    return "\n".join(lines) + "\n"


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
    landing.check_feeds(settings.landing, exporters, window.days)
    return exporters


@flow(name="weekly_report", log_prints=True)
def weekly_report(
    week: dt.date,
    settings: Settings | None = None,
    force: bool = True,
    accept_failed_audit: bool = False,
    feed_retries: int = 0,
    feed_retry_delay_seconds: float = 3600.0,
) -> dict[str, Any]:
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
) -> dict[str, Any]:
    logger = get_run_logger()
    window = WeekWindow(week, settings.timezone)
    base_run = publish.published_run(publish.read_manifest(settings.warehouse), week)
    if not force and base_run is not None:
        logger.info("week %s already published; skipping", week)
        return {"week": str(week), "published": False, "skipped": True}
    run_id = new_run_id()
    removed = remove_stale_runs(settings.staging)
    if removed:
        logger.info("removed the staging folders of %d runs that are no longer running", len(removed))
    # Decoded flows and partials of the run are removed when it ends: every table they fed is
    # published (or the run failed and its summary and Data Docs are in the warehouse).
    with run_folder(settings.staging, run_id, keep=settings.keep_staging) as stage:
        submitted: list[Any] = []
        try:
            return _run_stages(
                window,
                settings,
                run_id,
                stage,
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
    run_id: str,
    stage: Path,
    base_run: str | None,
    accept_failed_audit: bool,
    feed_retries: int,
    feed_retry_delay_seconds: float,
    submitted: list[Any],
) -> dict[str, Any]:
    logger = get_run_logger()
    week = window.week
    started = time.monotonic()
    stages = StageLog(logger, run_id, week)
    _preload_audit_library()
    exporters = wait_for_complete_feeds.with_options(
        retries=feed_retries, retry_delay_seconds=feed_retry_delay_seconds
    )(settings, window)
    stages.done("feeds", rows=len(exporters))
    interrupts.check("ingest")
    assignment_args = (settings, window, stage)
    assignment_future = build_assignments.submit(*assignment_args)
    ingest_args = [(settings, window, e, stage) for e in exporters]
    flow_futures = [ingest_flows_of_exporter.submit(*args) for args in ingest_args]
    submitted += [assignment_future, *flow_futures]
    flow_info = [f.result() for f in flow_futures]
    assignment_info = assignment_future.result()
    # Files (or their records) delivered by two exporters would count their traffic twice: the audit fails.
    duplicates = landing.duplicate_inputs(
        [(str(i["exporter"]), i.pop("digests"), i.pop("record_sets")) for i in flow_info]
    )
    stages.done(
        "ingest",
        rows=sum(int(i["records"]) for i in flow_info) + int(assignment_info["accounting_records"]),
        bytes_=sum(int(i["input_bytes"]) for i in flow_info),
    )
    interrupts.check("attribution")
    attribute_args = [
        (settings, window, str(info["exporter"]), list(info["parts"]), str(info["service"]), stage)
        for info in flow_info
    ]
    partials = [attribute_exporter.submit(*args) for args in attribute_args]
    submitted += partials
    partial_paths = [p.result() for p in partials]
    stages.done("attribute", rows=sum(int(i["records"]) for i in flow_info))
    # What crossed between the flow and its tasks (to Dask workers, when configured): arguments
    # and results only, paths and counts, never the flows themselves.
    transfers = (
        [_transfer("build_assignments", "radius", assignment_args, assignment_info)]
        + [_transfer("ingest_flows_of_exporter", a[2], a, i) for a, i in zip(ingest_args, flow_info)]
        + [_transfer("attribute_exporter", a[2], a, r) for a, r in zip(attribute_args, partial_paths)]
    )
    flow_days = read_flow_user_days(partial_paths)
    tables = combine_tables(window, stage, partial_paths, flow_days)
    tables["ingest_quality"] = ingest_quality_table(window, flow_info, assignment_info)
    stages.done("combine", rows=sum(t.height for t in tables.values()))
    reconciliation = reconcile_with_radius(stage, flow_days, settings)
    ingest: dict[str, Any] = {
        "exporters": flow_info,
        "radius": assignment_info,
        "reconciliation": reconciliation,
        "duplicate_inputs": duplicates,
    }
    stages.done("reconcile", rows=int(reconciliation["users_compared"]))
    interrupts.check("the audit")
    audit = audit_tables(tables, ingest, settings, stage)
    stages.done("audit", rows=len(audit["checks"]))
    failed = [f"{c['table']}: {c['check']} (observed {c['detail']})" for c in audit["checks"] if not c["success"]]
    run: dict[str, Any] = {
        "run_id": run_id,
        "week": str(week),
        "audit_passed": audit["success"],
        "accepted_failed_audit": bool(failed) and accept_failed_audit,
        "audit": audit,
        "ingest": ingest,
        "published": False,
        "seconds": 0.0,
        "stages": stages.rows,
        "transfers": transfers,
    }
    failpoints.reach("weekly:audited")
    interrupts.check("publication")
    if audit["success"] or accept_failed_audit:
        record = {
            "audit_passed": audit["success"],
            "accepted_failed_audit": run["accepted_failed_audit"],
            "failed_checks": failed,
            "replaced_run": base_run,
        }
        # From here a signal no longer stops the run: its files and manifest swap take seconds, and
        # a half-finished publication (catalog or report behind the manifest) helps nobody.
        with interrupts.publishing():
            run["removed_runs"] = publish.publish_week(
                settings.warehouse, week, run_id, tables, record, base_run, settings.keep_runs
            )
            publish.build_catalog(settings.warehouse)
            failpoints.reach("weekly:catalog-built")
            run["published"] = True
            stages.done("publish", rows=sum(t.height for t in tables.values()))
            rendered = report.build_report(settings.warehouse, week)
            run["report"] = str(report.write_report(settings.warehouse, rendered))
            stages.done("report", bytes_=len(rendered.html))
        if interrupts.requested():
            logger.warning("interrupted during publication: week %s was published, catalog and report finished", week)
        if failed:
            logger.warning("week %s published with a FAILED audit, accepted by the operator: %s", week, failed)
    if failed:
        # The GX Data Docs of the failed run go beside its summary, for whoever reads the failure.
        docs = settings.warehouse / "reports" / str(week) / f"data_docs-{run_id}"
        storage.put_tree(stage / "data_docs", docs)
        run["data_docs"] = f"{docs}/index.html"
    run["seconds"] = round(time.monotonic() - started, 1)
    summary = markdown_summary(window, tables, run)
    summary_path = settings.warehouse / "reports" / str(week) / f"summary-{run_id}.md"
    storage.write_bytes(summary_path, summary.encode())
    create_markdown_artifact(summary, key=f"weekly-report-{week}", description=f"Week of {week}")
    if not run["published"]:
        raise AuditFailed(
            f"week {week}: audit failed, nothing published; {len(failed)} failed checks: "
            + "; ".join(failed[:8])
            + f"; report: {summary_path}, data docs: {run['data_docs']}"
        )
    create_markdown_artifact(rendered.markdown, key=f"report-{week}", description=f"Report, week of {week}")
    logger.info("week %s published by run %s in %.1f s", week, run_id, run["seconds"])
    return run


def weekly_report_runner(settings: Settings) -> Any:
    """weekly_report, on the Dask cluster at `settings.dask_address` when one is configured (its
    per-exporter tasks then run on the cluster's workers), else on local threads."""
    if not settings.dask_address:
        return weekly_report
    from prefect_dask import DaskTaskRunner

    runner: Any = DaskTaskRunner(address=settings.dask_address)
    return weekly_report.with_options(task_runner=runner)


class AuditFailed(RuntimeError):
    """A week whose checkpoints failed: nothing of it was published."""


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
) -> dict[str, Any]:
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
