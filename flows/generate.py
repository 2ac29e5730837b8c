"""Writes a synthetic week to a landing zone in real formats, with its ground truth beside it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from flows.storage import AnyPath
from transforms.accounting.radius import format_detail
from transforms.synth.exporter import ExportShape, encode_export_stream
from transforms.synth.week import SyntheticWeek, WeekSpec, generate_week

TRUTH_DIR = "_truth"


def truth_dir(landing: AnyPath, week: dt.date) -> AnyPath:
    """Where the ground truth of one generated week lives in a landing zone."""
    return landing / TRUTH_DIR / week.isoformat()


def generated_weeks(landing: AnyPath) -> list[dt.date]:
    """The weeks generated into a landing zone (those with ground truth), oldest first."""
    root = landing / TRUTH_DIR
    return sorted(dt.date.fromisoformat(p.name) for p in root.glob("????-??-??") if (p / "spec.json").exists())


def write_week(week: SyntheticWeek, out: Path, shape: ExportShape | None = None) -> dict[str, int]:
    """Writes flows/, radius/, directory/ and _truth/ under `out`; returns file and record counts.

    Flow files are one day of stored datagrams per exporter, framed as `shape` says (by default as
    exporters send them: MTU-sized messages flushed by a timer, two observation domains)."""
    shape = shape or ExportShape()
    spec = week.spec
    tz = ZoneInfo(spec.timezone)
    counts = {"ipfix_files": 0, "flow_records": 0, "detail_files": 0, "accounting_records": 0}
    for exporter in spec.exporters:
        flows = week.flows[exporter.name].with_columns(
            day=pl.from_epoch("first_ts", time_unit="ms")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(spec.timezone)
            .dt.date()
        )
        sequences: dict[int, int] = {}
        for (day,), part in sorted(flows.partition_by("day", as_dict=True).items()):
            # Domains of different exporters never share an id: domain ids are scoped per exporter
            # by the pipeline anyway, but distinct ids keep a mixed capture readable.
            data = encode_export_stream(
                part, shape, exporter.domain_id * 16, exporter.sampling_style, exporter.sampling_rate, sequences
            )
            path = out / "flows" / exporter.name / day.isoformat() / f"{exporter.name}-{day:%Y%m%d}.ipfix"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            counts["ipfix_files"] += 1
            counts["flow_records"] += part.height
    for nas, records in week.radius.items():
        by_day = records.with_columns(
            day=pl.from_epoch(pl.col("event_ms") + pl.col("delay_s") * 1000, time_unit="ms")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(spec.timezone)
            .dt.date()
        )
        for (day,), part in sorted(by_day.partition_by("day", as_dict=True).items()):
            path = out / "radius" / nas / day.isoformat() / f"detail-{day:%Y%m%d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(format_detail(part, spec.timezone))
            counts["detail_files"] += 1
            counts["accounting_records"] += part.height
    # A dated snapshot, as a directory export of that day: weeks of other years can share the zone.
    snapshot = out / "directory" / spec.week.isoformat() / "subscribers.csv"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    week.directory.write_csv(snapshot)
    truth = out / TRUTH_DIR / spec.week.isoformat()
    truth.mkdir(parents=True, exist_ok=True)
    week.truth_user_day.write_parquet(truth / "user_day.parquet")
    week.truth_port_bytes.write_parquet(truth / "port_bytes.parquet")
    week.truth_hourly.write_parquet(truth / "hourly.parquet")
    (truth / "spec.json").write_text(
        json.dumps(
            {
                "week": spec.week.isoformat(),
                "year": spec.year,
                "seed": spec.seed,
                "timezone": spec.timezone,
                "broadband_users": spec.broadband_users,
                "mobile_phones": spec.mobile_phones,
                "generated_at": dt.datetime.now(tz).isoformat(timespec="seconds"),
                **counts,
            },
            indent=2,
        )
    )
    return counts


def generate_to(
    out: Path,
    week: dt.date,
    year: int | None = None,
    broadband_users: int = 3000,
    mobile_phones: int = 3000,
    seed: int = 1,
    timezone: str = "Asia/Tokyo",
    message_size: int = 1400,
) -> dict[str, int]:
    """Generates and writes one week; `year` (calibration) defaults to the week's year."""
    if week.weekday() != 0:
        raise ValueError(f"--week must be a Monday, got {week} ({week:%A})")
    spec = WeekSpec(
        week=week,
        year=year or week.year,
        broadband_users=broadband_users,
        mobile_phones=mobile_phones,
        seed=seed,
        timezone=timezone,
    )
    return write_week(generate_week(spec), out, ExportShape(message_size=message_size))
