"""Cross-source reconciliation: per broadband user, the volume estimated from sampled flows against
the octet counters the access server reported in RADIUS accounting over the same week.

Always-on sessions cross the week's edges, so each session's week volume is the difference of its
counters at the last accounting record at or before the week's start (zero for a session that
began inside the week) and at or before its end (or its Stop). Traffic between those records and
the edges is where the two sources may honestly differ; its share of the compared time is added
to the tolerance. A sampled estimate built on n sampled packets has a relative standard error of
about 1/sqrt(n), so the tolerance is `floor + edge share + z / sqrt(n)`, n being the samples the
counted volume should have given (the week's sampled packets per byte); the floor absorbs what
differs by definition (link-layer overhead, flows straddling a record).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

DIRECTIONS = ("in", "out")


def radius_week_volumes(
    records: pl.DataFrame, sessions: pl.DataFrame, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Rows (user_key, service, radius_in_bytes, radius_out_bytes, sessions, edge_share) of known
    broadband users with sessions in [start, end). `records`: RECORD_SCHEMA accounting records;
    `sessions`: nas, session_id, user_key, service, known (identified sessions)."""
    lo = pl.lit(start).cast(pl.Datetime("ms", "UTC"))
    hi = pl.lit(end).cast(pl.Datetime("ms", "UTC"))
    counted = records.filter(
        pl.col("session_id").is_not_null() & pl.col("status").is_in(["Start", "Interim-Update", "Stop"])
    ).with_columns(pl.col("in_octets", "out_octets").fill_null(0))
    before_start = pl.col("event_ts") <= lo
    before_end = pl.col("event_ts") <= hi
    per_session = (
        counted.sort("event_ts")
        .group_by("nas", "session_id")
        .agg(
            (pl.col("event_ts") - pl.duration(seconds=pl.col("session_time_s").fill_null(0))).min().alias("began"),
            pl.col("event_ts").filter(before_start).last().alias("t_a"),
            pl.col("in_octets").filter(before_start).last().alias("in_a"),
            pl.col("out_octets").filter(before_start).last().alias("out_a"),
            pl.col("event_ts").filter(before_end).last().alias("t_b"),
            pl.col("in_octets").filter(before_end).last().alias("in_b"),
            pl.col("out_octets").filter(before_end).last().alias("out_b"),
            (pl.col("status").filter(before_end).last() == "Stop").alias("stopped"),
        )
        .filter(pl.col("t_b").is_not_null() & (pl.col("t_b") > lo))
    )
    # Seconds where counters and the week disagree: [t_a, start) counted but outside the week,
    # [t_b, end) inside the week but not yet counted (unless the session stopped at t_b).
    seconds = pl.duration(seconds=1)
    windows = per_session.with_columns(
        radius_in_bytes=(pl.col("in_b") - pl.col("in_a").fill_null(0)).clip(0).cast(pl.Float64),
        radius_out_bytes=(pl.col("out_b") - pl.col("out_a").fill_null(0)).clip(0).cast(pl.Float64),
        edge_s=(
            pl.when(pl.col("t_a").is_not_null()).then((lo - pl.col("t_a")) / seconds).otherwise(0.0)
            + pl.when(pl.col("stopped")).then(0.0).otherwise((hi - pl.col("t_b")) / seconds)
        ),
        span_s=(
            (pl.when(pl.col("stopped")).then(pl.col("t_b")).otherwise(hi) - pl.max_horizontal("began", lo)) / seconds
        ).clip(1.0),
    )
    broadband = sessions.filter(pl.col("known") & (pl.col("service") != "mobile")).select(
        "nas", "session_id", "user_key", "service"
    )
    return (
        windows.join(broadband, on=["nas", "session_id"], how="inner")
        .group_by("user_key", "service")
        .agg(
            pl.col("radius_in_bytes").sum(),
            pl.col("radius_out_bytes").sum(),
            pl.len().alias("sessions"),
            (pl.col("edge_s").sum() / pl.col("span_s").sum()).alias("edge_share"),
        )
    )


def compare_flows_to_radius(flow_week: pl.DataFrame, radius_week: pl.DataFrame, z: float, floor: float) -> pl.DataFrame:
    """One row per user with RADIUS counters: flow and RADIUS bytes, sampled packets, relative
    error, tolerance and `within` per direction. `flow_week`: user_key, service, in_bytes, out_bytes,
    in_packets, out_packets (users without flows count as zero)."""
    joined = radius_week.join(flow_week, on=["user_key", "service"], how="left").with_columns(
        pl.col(c).fill_null(0) for c in ("in_bytes", "out_bytes", "in_packets", "out_packets")
    )
    columns = []
    for d in DIRECTIONS:
        radius_bytes, flow_bytes = pl.col(f"radius_{d}_bytes"), pl.col(f"{d}_bytes").cast(pl.Float64)
        error = (flow_bytes - radius_bytes).abs() / pl.max_horizontal(radius_bytes, pl.lit(1.0))
        # Samples expected for the counted volume (the week's sampled packets per estimated byte),
        # not those seen: a user the flows missed entirely must not earn a wide tolerance.
        per_byte = pl.col(f"{d}_packets").sum().cast(pl.Float64) / pl.max_horizontal(flow_bytes.sum(), pl.lit(1.0))
        expected = radius_bytes * per_byte
        sampling = z / pl.max_horizontal(expected, pl.lit(1.0)).sqrt()
        tolerance = floor + pl.col("edge_share") + sampling
        columns += [error.alias(f"{d}_error"), tolerance.alias(f"{d}_tolerance")]
    compared = joined.with_columns(columns)
    return compared.with_columns(
        (pl.col(f"{d}_error") <= pl.col(f"{d}_tolerance")).alias(f"{d}_within") for d in DIRECTIONS
    )
