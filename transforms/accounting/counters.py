"""Interface octet counters (SNMP ifHCInOctets / ifHCOutOctets polls) to monthly average traffic.

A poller's CSV export has one row per poll: `time` (ISO 8601 with offset, or epoch seconds),
`device`, `interface`, `in_octets`, `out_octets` (cumulative 64-bit counters). On customer-facing
interfaces the interface's IN is the users' upload (the report's IN) and its OUT their download.
"""

from __future__ import annotations

import io

import polars as pl

POLL_SCHEMA = {
    "time_s": pl.Int64,
    "device": pl.String,
    "interface": pl.String,
    "in_octets": pl.UInt64,
    "out_octets": pl.UInt64,
}
QUARANTINE_SCHEMA = {"source": pl.String, "position": pl.String, "reason": pl.String}
REQUIRED_COLUMNS = ("time", "device", "interface", "in_octets", "out_octets")


def parse_counter_csv(data: bytes, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(polls: time_s, device, interface, in_octets, out_octets; quarantine: source, position, reason)
    from one CSV export; a row that does not parse is set aside naming its line, never dropped."""
    try:
        raw = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{source}: not a CSV file: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{source}: line 1: missing columns {missing}")
    text_time = pl.col("time").str.strip_chars()
    epoch = text_time.cast(pl.Int64, strict=False)
    # A local time without its offset is ambiguous (which zone? which side of a DST change?): refused.
    has_offset = text_time.str.contains(r"(Z|[+-]\d{2}:?\d{2})$")
    iso = pl.when(has_offset).then(text_time.str.to_datetime(time_zone="UTC", strict=False).dt.epoch("s"))
    parsed = raw.with_columns(
        line=pl.int_range(2, pl.len() + 2),
        time_s=pl.coalesce(epoch, iso),
        in_value=pl.col("in_octets").str.strip_chars().cast(pl.UInt64, strict=False),
        out_value=pl.col("out_octets").str.strip_chars().cast(pl.UInt64, strict=False),
    )
    reason = (
        pl.when(pl.col("time_s").is_null())
        .then(pl.lit("time is neither ISO 8601 with an offset nor epoch seconds"))
        .when(pl.col("device").is_null() | pl.col("interface").is_null())
        .then(pl.lit("device or interface missing"))
        .when(pl.col("in_value").is_null() | pl.col("out_value").is_null())
        .then(pl.lit("octet counter is not a non-negative integer"))
    )
    checked = parsed.with_columns(reason=reason)
    bad = checked.filter(pl.col("reason").is_not_null()).select(
        pl.lit(source).alias("source"), pl.format("line {}", "line").alias("position"), "reason"
    )
    good = checked.filter(pl.col("reason").is_null()).select(
        "time_s", "device", "interface", pl.col("in_value").alias("in_octets"), pl.col("out_value").alias("out_octets")
    )
    return good.cast(POLL_SCHEMA), bad.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def count_traffic_in_window(polls: pl.DataFrame, start_s: int, end_s: int) -> pl.DataFrame:
    """Rows (device, interface, in_bytes, out_bytes, covered_s, counter_resets): per interface, the
    octets counted in [start_s, end_s) and the seconds they cover. An interval between two polls
    that crosses an edge counts in proportion to its overlap; an interval whose counter went
    down (device reboot, counter reset) is not counted, and is reported."""
    ordered = polls.unique(subset=["device", "interface", "time_s"], keep="first").sort("device", "interface", "time_s")
    key = ["device", "interface"]
    intervals = ordered.with_columns(
        t0=pl.col("time_s").shift(1).over(key),
        in0=pl.col("in_octets").shift(1).over(key),
        out0=pl.col("out_octets").shift(1).over(key),
    ).filter(pl.col("t0").is_not_null())
    reset = (pl.col("in_octets") < pl.col("in0")) | (pl.col("out_octets") < pl.col("out0"))
    overlap = (pl.min_horizontal("time_s", pl.lit(end_s)) - pl.max_horizontal("t0", pl.lit(start_s))).clip(0)
    share = overlap / (pl.col("time_s") - pl.col("t0"))
    counted = intervals.with_columns(reset=reset, overlap=overlap, share=share).filter(pl.col("overlap") > 0)
    valid = ~pl.col("reset")
    return (
        counted.group_by(key)
        .agg(
            ((pl.col("in_octets") - pl.col("in0")).cast(pl.Float64) * pl.col("share"))
            .filter(valid)
            .sum()
            .alias("in_bytes"),
            ((pl.col("out_octets") - pl.col("out0")).cast(pl.Float64) * pl.col("share"))
            .filter(valid)
            .sum()
            .alias("out_bytes"),
            pl.col("overlap").filter(valid).sum().cast(pl.Int64).alias("covered_s"),
            pl.col("reset").sum().cast(pl.Int64).alias("counter_resets"),
        )
        .sort(key)
    )


def average_traffic_by_service(
    interface_traffic: pl.DataFrame, inventory: pl.DataFrame, start_s: int, end_s: int
) -> pl.DataFrame:
    """Rows (service, in_bps, out_bps, coverage, interfaces, counter_resets): each service's average
    bit rate over [start_s, end_s), every inventory interface scaled up from the time it covers;
    coverage is the least-covered interface's share of the window (0 for one never polled)."""
    seconds = end_s - start_s
    joined = inventory.select("device", "interface", "service").join(
        interface_traffic, on=["device", "interface"], how="left"
    )
    filled = joined.with_columns(
        pl.col("in_bytes", "out_bytes").fill_null(0.0), pl.col("covered_s", "counter_resets").fill_null(0)
    )
    scale = pl.when(pl.col("covered_s") > 0).then(seconds / pl.col("covered_s")).otherwise(0.0)
    return (
        filled.group_by("service")
        .agg(
            (pl.col("in_bytes") * scale).sum().mul(8 / seconds).alias("in_bps"),
            (pl.col("out_bytes") * scale).sum().mul(8 / seconds).alias("out_bps"),
            (pl.col("covered_s").min() / seconds).alias("coverage"),
            pl.len().cast(pl.Int64).alias("interfaces"),
            pl.col("counter_resets").sum().cast(pl.Int64),
        )
        .sort("service")
    )


def unknown_interfaces(polls: pl.DataFrame, inventory: pl.DataFrame) -> pl.DataFrame:
    """Rows (device, interface, polls) of polled interfaces the inventory does not map to a service."""
    return (
        polls.join(inventory.select("device", "interface"), on=["device", "interface"], how="anti")
        .group_by("device", "interface")
        .agg(pl.len().cast(pl.Int64).alias("polls"))
        .sort("device", "interface")
    )
