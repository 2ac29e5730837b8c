"""The week's published tables, built from the attribution's partial aggregates and the ingest
summaries, and the run's summary page."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import polars as pl

from transforms.run_records import AccountingSummary, ExporterSummary, WeekRun, as_json_dict
from transforms.tables import ports, stats, usage


def _of_week(frame: pl.DataFrame, week: dt.date) -> pl.DataFrame:
    return frame.with_columns(pl.lit(week).alias("week"))


def combine_week_tables(
    week: dt.date,
    users: pl.DataFrame,
    flow_days: pl.DataFrame,
    billing_days: pl.DataFrame,
    port_partials: Sequence[pl.DataFrame],
    hour_partials: Sequence[pl.DataFrame],
    bucket_partials: Sequence[pl.DataFrame],
) -> dict[str, pl.DataFrame]:
    """The week's tables by name: user_day_usage, user_week_usage, usage_summary, port_usage,
    port_share, traffic_hour, port_bucket_hour (each with `week`), from the exporters' partials."""
    broadband_days = (
        flow_days.filter(pl.col("service") != "mobile")
        .group_by("user_key", "service", "customer_type", "day")
        .agg(pl.col("in_bytes").sum(), pl.col("out_bytes").sum(), pl.col("source").first())
    )
    columns = [
        "day",
        "service",
        "user_key",
        "customer_type",
        pl.col("in_bytes").cast(pl.Float64),
        pl.col("out_bytes").cast(pl.Float64),
        "source",
    ]
    user_day = _of_week(pl.concat([broadband_days.select(columns), billing_days.select(columns)]), week).sort(
        "day", "service", "user_key"
    )
    user_week = usage.user_week_usage(user_day, users, week)
    summary = _of_week(stats.summarize_usage(user_week), week)
    port_usage = _of_week(
        pl.concat(port_partials).group_by("service", "protocol", "port").agg(pl.col("bytes").sum()), week
    ).sort("service", "protocol", "port")
    port_share = _of_week(ports.share_by_category(port_usage), week)
    traffic_hour = _of_week(
        pl.concat(hour_partials)
        .group_by("service", "day", "hour")
        .agg(pl.col("in_bytes").sum(), pl.col("out_bytes").sum(), pl.col("unattributed_bytes").sum()),
        week,
    ).sort("service", "day", "hour")
    port_bucket_hour = _of_week(
        pl.concat(bucket_partials).group_by("service", "day", "hour", "bucket").agg(pl.col("bytes").sum()), week
    ).sort("service", "day", "hour", "bucket")
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
    week: dt.date, flow_info: Sequence[ExporterSummary], radius_info: AccountingSummary
) -> pl.DataFrame:
    """Rows (week, feed_type, feed, service, records, quarantined_records, quarantined_pct, sampling):
    one per exporter and one for RADIUS, for the report's data-quality section."""
    rows = []
    for info in flow_info:
        total = sum(s.records for s in info.sampling) or 1
        rows.append(
            {
                "feed_type": "flows",
                "feed": info.exporter,
                "service": info.service,
                "records": info.records,
                "quarantined_records": info.quarantined_records + info.unrated_records,
                "sampling": "; ".join(
                    f"1:{s.rate} from {s.source} ({100 * s.records / total:.1f}%)" for s in info.sampling
                ),
            }
        )
    rows.append(
        {
            "feed_type": "radius",
            "feed": "accounting",
            "service": "broadband+mobile",
            "records": radius_info.accounting_records,
            "quarantined_records": radius_info.quarantined_records,
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
        week=pl.lit(week),
    ).sort("feed_type", "feed")


def exporter_day_records_table(week: dt.date, flow_info: Sequence[ExporterSummary]) -> pl.DataFrame:
    """Rows (exporter, service, day, records, week): every exporter x every day of the week, 0 for
    a day without flows, so a silent exporter shows as a gap in the warehouse, not a missing row."""
    rows = [
        {"exporter": info.exporter, "service": info.service, "day": dt.date.fromisoformat(day), "records": records}
        for info in flow_info
        for day, records in info.records_per_day.items()
    ]
    schema = {"exporter": pl.String, "service": pl.String, "day": pl.Date, "records": pl.Int64}
    return _of_week(pl.DataFrame(rows, schema=schema), week).sort("exporter", "day")


def markdown_summary(week: dt.date, timezone: str, tables: dict[str, pl.DataFrame], run: WeekRun) -> str:
    """The run's summary: Tables 1-4 rows, ingest counts, audit result."""
    lines = [
        f"# Broadband Traffic Report, week of {week} ({timezone})",
        "",
        f"run `{run.run_id}`: audit **{'passed' if run.audit_passed else 'FAILED'}**, "
        f"published: {run.published}"
        + (" (failed audit accepted by the operator)" if run.accepted_failed_audit else ""),
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
    for stage in run.stages:
        lines.append(f"| {stage.stage} | {stage.rows or ''} | {stage.bytes or ''} | {stage.seconds} |")
    lines += ["", "## Bytes between the flow and its tasks", "", "| task | of | in | out |", "|---|---|---:|---:|"]
    for transfer in run.transfers:
        lines.append(f"| {transfer.task} | {transfer.key} | {transfer.bytes_in:,} | {transfer.bytes_out:,} |")
    ingest = as_json_dict(run.ingest) if run.ingest is not None else {}
    lines += [
        "",
        "## Ingest",
        "",
        "```",
        json.dumps(ingest, indent=1, default=str)[:4000],
        "```",
        "",
        "## Audit",
        "",
    ]
    for check in run.audit.checks if run.audit is not None else ():
        lines.append(f"- {'ok  ' if check.success else 'FAIL'} {check.table}: {check.check} {check.detail}")
    if run.report_error:
        lines += ["", "## Report", "", f"not rendered: {run.report_error}"]
    return "\n".join(lines) + "\n"
