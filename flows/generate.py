"""Writes a synthetic week to a landing zone in real formats, with its ground truth beside it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from flows.storage import AnyPath
from transforms import ipfix
from transforms.radius import format_detail
from transforms.synth.week import ExporterSpec, SyntheticWeek, WeekSpec, generate_week

TRUTH_DIR = "_truth"


def _ipfix_for_day(flows: pl.DataFrame, exporter: ExporterSpec, sequence: int) -> tuple[bytes, int]:
    """One day's IPFIX file: templates + sampling options first, then data by hour, v4 and v6."""
    options = ipfix.sampling_options_template(exporter.sampling_style)
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, ipfix.FLOW_TEMPLATE_V6, options])
    if exporter.sampling_style == "interval":
        option_values = {
            ipfix.IE_SELECTOR_ID: np.array([1]),
            ipfix.IE_SAMPLING_INTERVAL: np.array([exporter.sampling_rate]),
        }
    else:
        option_values = {
            ipfix.IE_SELECTOR_ID: np.array([1]),
            ipfix.IE_SAMPLING_PACKET_INTERVAL: np.array([1]),
            ipfix.IE_SAMPLING_PACKET_SPACE: np.array([exporter.sampling_rate - 1]),
        }
    first_ts = int(flows["first_ts"].to_numpy().min()) // 1000
    out = bytearray()
    chunk, sequence = ipfix.encode_messages(
        exporter.domain_id, first_ts, sequence, header, options, ipfix.pack_records(options, option_values)
    )
    out += chunk
    hours = flows.with_columns(hour_bin=pl.col("first_ts") // 3_600_000).partition_by("hour_bin", maintain_order=True)
    for hour in hours:
        export_time = int(hour["last_ts"].to_numpy().max()) // 1000
        for template, is_v6 in ((ipfix.FLOW_TEMPLATE_V4, False), (ipfix.FLOW_TEMPLATE_V6, True)):
            part = hour.filter(pl.col("is_v6") == is_v6)
            if part.is_empty():
                continue
            columns: dict[int, np.ndarray] = {
                ipfix.IE_START_MS: part["first_ts"].to_numpy(),
                ipfix.IE_END_MS: part["last_ts"].to_numpy(),
                ipfix.IE_SRC_PORT: part["src_port"].to_numpy(),
                ipfix.IE_DST_PORT: part["dst_port"].to_numpy(),
                ipfix.IE_PROTOCOL: part["protocol"].to_numpy(),
                ipfix.IE_PACKETS: part["packets"].to_numpy(),
                ipfix.IE_OCTETS: part["bytes"].to_numpy(),
            }
            if is_v6:
                columns[ipfix.IE_SRC_V6] = np.stack([part["src_hi"].to_numpy(), part["src_lo"].to_numpy()], axis=1)
                columns[ipfix.IE_DST_V6] = np.stack([part["dst_hi"].to_numpy(), part["dst_lo"].to_numpy()], axis=1)
            else:
                columns[ipfix.IE_SRC_V4] = part["src_lo"].to_numpy() & np.uint64(0xFFFF_FFFF)
                columns[ipfix.IE_DST_V4] = part["dst_lo"].to_numpy() & np.uint64(0xFFFF_FFFF)
            chunk, sequence = ipfix.encode_messages(
                exporter.domain_id, export_time, sequence, b"", template, ipfix.pack_records(template, columns)
            )
            out += chunk
    return bytes(out), sequence


def truth_dir(landing: AnyPath, week: dt.date) -> AnyPath:
    """Where the ground truth of one generated week lives in a landing zone."""
    return landing / TRUTH_DIR / week.isoformat()


def generated_weeks(landing: AnyPath) -> list[dt.date]:
    """The weeks generated into a landing zone (those with ground truth), oldest first."""
    root = landing / TRUTH_DIR
    return sorted(dt.date.fromisoformat(p.name) for p in root.glob("????-??-??") if (p / "spec.json").exists())


def write_week(week: SyntheticWeek, out: Path) -> dict[str, int]:
    """Writes flows/, radius/, directory/ and _truth/ under `out`; returns file and record counts."""
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
        sequence = 0
        for (day,), part in sorted(flows.partition_by("day", as_dict=True).items()):
            data, sequence = _ipfix_for_day(part, exporter, sequence)
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
    return write_week(generate_week(spec), out)
