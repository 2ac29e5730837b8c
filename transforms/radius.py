"""FreeRADIUS `detail` accounting: parsing, writing, sessions -> address assignments, billing usage."""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms.addresses import parse_address_column

GIGAWORD = 1 << 32
STATUS_TYPES = ("Start", "Stop", "Interim-Update", "Accounting-On", "Accounting-Off", "Alive")
# RFC 2866/2867 values the pipeline does not use: a problem may name them (any other value
# is not shown: a broken line could put an identity there).
OTHER_STATUS_TYPES = (
    "Tunnel-Start",
    "Tunnel-Stop",
    "Tunnel-Reject",
    "Tunnel-Link-Start",
    "Tunnel-Link-Stop",
    "Tunnel-Link-Reject",
    "Failed",
)
NOT_UTF8 = "bytes that are not UTF-8"
UNDECODED = "\ufffd"

# Attributes the pipeline reads; everything else in a record is kept out of the frame.
ATTRIBUTES = {
    "Acct-Status-Type": "status",
    "Acct-Session-Id": "session_id",
    "User-Name": "user_name",
    "NAS-Identifier": "nas_identifier",
    "NAS-IP-Address": "nas_ip",
    "Framed-Protocol": "framed_protocol",
    "Framed-IP-Address": "framed_ip",
    "Framed-IPv6-Prefix": "framed_ipv6_prefix",
    "Delegated-IPv6-Prefix": "delegated_prefix",
    "Calling-Station-Id": "calling_station_id",
    "Acct-Session-Time": "session_time_s",
    "Acct-Input-Octets": "in_octets",
    "Acct-Output-Octets": "out_octets",
    "Acct-Input-Gigawords": "in_gigawords",
    "Acct-Output-Gigawords": "out_gigawords",
    "Event-Timestamp": "event_timestamp",
    "Acct-Delay-Time": "delay_s",
    "Timestamp": "timestamp",
}
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "line": pl.Int64(),
    "status": pl.String(),
    "session_id": pl.String(),
    "user_name": pl.String(),
    "nas": pl.String(),
    "framed_protocol": pl.String(),
    "framed_ip": pl.String(),
    "framed_ipv6_prefix": pl.String(),
    "delegated_prefix": pl.String(),
    "calling_station_id": pl.String(),
    "event_ts": pl.Datetime("ms", "UTC"),
    "session_time_s": pl.Int64(),
    "in_octets": pl.Int64(),
    "out_octets": pl.Int64(),
}


def _event_time(timezone: str) -> pl.Expr:
    """Event time in UTC: Event-Timestamp (epoch or FreeRADIUS text), else Timestamp - delay."""
    text = pl.col("event_timestamp").str.strip_chars('"').str.strip_chars()
    epoch = text.cast(pl.Int64, strict=False)
    zone = text.str.extract(r"\s([A-Za-z][A-Za-z0-9+-]*)$")
    stamp = text.str.replace(r"\s[A-Za-z][A-Za-z0-9+-]*$", "").str.replace_all(r"\s+", " ")
    local = stamp.str.strptime(pl.Datetime("ms"), "%b %d %Y %H:%M:%S", strict=False)
    from_text = (
        pl.when(zone.is_in(["UTC", "GMT", "Z"]))
        .then(local.dt.replace_time_zone("UTC"))
        .otherwise(
            local.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")
        )
    )
    received = pl.col("timestamp").cast(pl.Int64, strict=False) - pl.col("delay_s").cast(
        pl.Int64, strict=False
    ).fill_null(0)
    return (
        pl.coalesce(
            pl.from_epoch(epoch, time_unit="s").dt.replace_time_zone("UTC"),
            from_text,
            pl.from_epoch(received, time_unit="s").dt.replace_time_zone("UTC"),
        )
        .dt.cast_time_unit("ms")
        .alias("event_ts")
    )


def _detail_lines(detail: bytes | str) -> pl.DataFrame:
    """(line, text, not_utf8) per line of a detail file; a line ends with LF or CRLF.

    Valid UTF-8 costs one decode. Only a file that is not gets decoded again with U+FFFD in place
    of the bytes that are not UTF-8, and its lines holding U+FFFD are flagged: a Latin-1 name
    read as U+FFFD would become another (unknown) user.
    """
    not_utf8 = False
    if isinstance(detail, bytes):
        try:
            text = detail.decode("utf-8")
        except UnicodeDecodeError:
            text, not_utf8 = detail.decode("utf-8", errors="replace"), True
    else:
        text = detail
    # Split by polars (2.5x faster than str.split into a list), in one string below 2 GiB.
    if len(text) < 1 << 31:
        split = pl.DataFrame({"text": [text]}).select(pl.col("text").str.split("\n").explode())
    else:
        split = pl.DataFrame({"text": text.split("\n")})
    lines = split.with_columns(pl.col("text").str.strip_suffix("\r")).with_row_index("line", offset=1)
    flag = pl.col("text").str.contains(UNDECODED, literal=True) if not_utf8 else pl.lit(False)
    return lines.with_columns(not_utf8=flag)


def parse_detail(detail: bytes | str, source: str, timezone: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Accounting records (RECORD_SCHEMA) of a detail file (its bytes, or text already decoded), and
    problems (source, line, reason) in line order. Problems never quote the record: it would carry
    clear identities (User-Name, Calling-Station-Id).

    A record holding a line that is not UTF-8 is set aside as a whole (reason NOT_UTF8, the first
    such line), whatever else it holds.
    """
    lines = _detail_lines(detail)
    lines = lines.with_columns(
        is_header=(pl.col("text").str.len_chars() > 0)
        & ~pl.col("text").str.starts_with("\t")
        & ~pl.col("text").str.starts_with(" "),
    ).with_columns(record=pl.col("is_header").cum_sum())
    attrs = (
        lines.filter(~pl.col("is_header") & (pl.col("text").str.strip_chars().str.len_chars() > 0))
        .with_columns(parts=pl.col("text").str.strip_chars().str.extract_groups(r"^([A-Za-z0-9-]+)\s*=\s*(.*)$"))
        .unnest("parts")
        .rename({"1": "name", "2": "value"})
    )
    problems = [
        attrs.filter(pl.col("name").is_null()).select(
            pl.lit(source).alias("source"), "line", pl.lit("attribute line is not `Name = value`").alias("reason")
        ),
        attrs.filter(pl.col("record") == 0)
        .select(
            pl.lit(source).alias("source"), "line", pl.lit("attribute before the first record header").alias("reason")
        )
        .head(1),
    ]
    wanted = attrs.filter(pl.col("name").is_in(list(ATTRIBUTES)) & (pl.col("record") > 0))
    wanted = wanted.with_columns(
        pl.col("name").replace_strict(ATTRIBUTES),
        pl.col("value").str.strip_chars('"'),
    )
    # A repeated attribute keeps its first value (RFC 2866 allows at most one of each we read).
    # RFC 2866 allows at most one of each attribute we read: an exact repeat is harmless, a
    # repeat with another value makes the record ambiguous.
    grouped = wanted.group_by("record", "name").agg(
        pl.col("value").first(), pl.col("value").n_unique().alias("_values")
    )
    conflicting = (
        grouped.filter(pl.col("_values") > 1).group_by("record").agg(pl.col("name").sort().first().alias("_conflict"))
    )
    wide = grouped.pivot(on="name", index="record", values="value")
    headers = lines.filter(pl.col("is_header")).select("record", "line")
    for column in ATTRIBUTES.values():
        if column not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    records = headers.join(wide, on="record", how="left").with_columns(
        _event_time(timezone),
        pl.coalesce("nas_identifier", "nas_ip").alias("nas"),
        (
            pl.col("in_gigawords").cast(pl.Int64, strict=False).fill_null(0) * GIGAWORD
            + pl.col("in_octets").cast(pl.Int64, strict=False)
        ).alias("in_octets"),
        (
            pl.col("out_gigawords").cast(pl.Int64, strict=False).fill_null(0) * GIGAWORD
            + pl.col("out_octets").cast(pl.Int64, strict=False)
        ).alias("out_octets"),
        pl.col("session_time_s").cast(pl.Int64, strict=False),
        pl.col("status").replace({"Alive": "Interim-Update"}),
        pl.lit(source).alias("source"),
    )
    records = records.join(conflicting, on="record", how="left")
    undecodable = lines.filter(pl.col("not_utf8")).group_by("record").agg(pl.col("line").min())
    problems.append(undecodable.select(pl.lit(source).alias("source"), "line", pl.lit(NOT_UTF8).alias("reason")))
    records = records.join(undecodable.select("record"), on="record", how="anti")
    known_status = pl.col("status").is_in(list(STATUS_TYPES))
    nas_event = pl.col("status").is_in(["Accounting-On", "Accounting-Off"])
    counters_unreadable = (
        pl.col("status").is_in(["Interim-Update", "Stop"])
        & (pl.col("in_octets").is_null() | pl.col("out_octets").is_null())
        & (pl.col("in_octets").is_not_null() | pl.col("out_octets").is_not_null())
    )
    bad = records.filter(
        pl.col("status").is_null()
        | (pl.col("session_id").is_null() & ~nas_event)
        | pl.col("event_ts").is_null()
        | pl.col("_conflict").is_not_null()
        | ~known_status
        | counters_unreadable
    )
    problems.append(
        bad.select(
            "source",
            "line",
            pl.when(pl.col("status").is_null())
            .then(pl.lit("record without Acct-Status-Type"))
            .when(
                ~known_status
                & (pl.col("status").is_in(list(OTHER_STATUS_TYPES)) | pl.col("status").str.contains(r"^\d{1,3}$"))
            )
            .then(pl.format("unknown Acct-Status-Type {}", "status"))
            .when(~known_status)
            .then(pl.lit("unknown Acct-Status-Type (value not shown)"))
            .when(pl.col("session_id").is_null())
            .then(pl.lit("record without Acct-Session-Id"))
            .when(pl.col("event_ts").is_null())
            .then(pl.lit("record without a readable Event-Timestamp or Timestamp"))
            .when(pl.col("_conflict").is_not_null())
            .then(pl.format("attribute {} repeated with different values", "_conflict"))
            .otherwise(pl.lit("unreadable Acct-Input/Output-Octets"))
            .alias("reason"),
        )
    )
    good = records.join(bad.select("record"), on="record", how="anti")
    found = pl.concat(problems).cast({"line": pl.Int64}).sort("line", maintain_order=True)
    return good.select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA), found  # type: ignore[arg-type]


def format_detail(records: pl.DataFrame, timezone: str) -> str:
    """FreeRADIUS rlm_detail text for rows of the generator's accounting frames."""
    received = (
        pl.from_epoch(pl.col("event_ms") + pl.col("delay_s") * 1000, time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(timezone)
    )
    event = pl.from_epoch(pl.col("event_ms"), time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)

    def line(name: str, value: pl.Expr, quoted: bool = False) -> pl.Expr:
        q = '"' if quoted else ""
        return pl.concat_str([pl.lit(f"\t{name} = {q}"), value.cast(pl.String), pl.lit(q)])

    def counter(column: str, gigawords: bool) -> pl.Expr:
        return (pl.col(column) // GIGAWORD) if gigawords else (pl.col(column) % GIGAWORD)

    not_start = pl.col("status") != "Start"
    record = pl.concat_str(
        [
            received.dt.strftime("%a %b %e %H:%M:%S %Y"),
            line("Acct-Session-Id", pl.col("session_id"), True),
            line("Acct-Status-Type", pl.col("status")),
            line("User-Name", pl.col("user_name"), True),
            line("NAS-IP-Address", pl.col("nas_ip")),
            line("NAS-Identifier", pl.col("nas_identifier"), True),
            line("Framed-Protocol", pl.col("framed_protocol")),
            line("Framed-IP-Address", pl.col("framed_ip")),
            line("Delegated-IPv6-Prefix", pl.col("delegated_prefix")),
            line("Calling-Station-Id", pl.col("calling_station_id"), True),
            pl.when(not_start).then(line("Acct-Session-Time", pl.col("session_time_s"))),
            pl.when(not_start).then(line("Acct-Input-Octets", counter("in_octets", False))),
            pl.when(not_start).then(line("Acct-Output-Octets", counter("out_octets", False))),
            pl.when(not_start).then(line("Acct-Input-Gigawords", counter("in_octets", True))),
            pl.when(not_start).then(line("Acct-Output-Gigawords", counter("out_octets", True))),
            line("Event-Timestamp", event.dt.strftime("%b %e %Y %H:%M:%S %Z"), True),
            line("Acct-Delay-Time", pl.col("delay_s")),
            line("Timestamp", (pl.col("event_ms") // 1000 + pl.col("delay_s"))),
        ],
        separator="\n",
        ignore_nulls=True,
    )
    return "\n\n".join(records.select(record.alias("r"))["r"].to_list()) + "\n\n"


def build_sessions(records: pl.DataFrame) -> pl.DataFrame:
    """One row per (nas, session_id): start, stop (or null), last seen (UTC), identity, addresses, counters.

    A NAS that sends Accounting-On/Off has rebooted: its sessions without a Stop end there.
    """
    nas_events = (
        records.filter(pl.col("status").is_in(["Accounting-On", "Accounting-Off"]))
        .select("nas", pl.col("event_ts").alias("nas_reset_ts"))
        .sort("nas_reset_ts")
    )
    sessions = (
        records.filter(
            pl.col("session_id").is_not_null() & ~pl.col("status").is_in(["Accounting-On", "Accounting-Off"])
        )
        .sort("event_ts")
        .group_by("nas", "session_id")
        .agg(
            (pl.col("event_ts") - pl.duration(seconds=pl.col("session_time_s").fill_null(0))).min().alias("start_ts"),
            pl.col("event_ts").filter(pl.col("status") == "Stop").min().alias("stop_ts"),
            pl.col("event_ts").max().alias("last_seen_ts"),
            pl.col("user_name").drop_nulls().first(),
            pl.col("calling_station_id").drop_nulls().first(),
            pl.col("framed_protocol").drop_nulls().first(),
            pl.col("framed_ip").drop_nulls().first(),
            pl.coalesce("delegated_prefix", "framed_ipv6_prefix").drop_nulls().first().alias("ipv6_prefix"),
            pl.col("in_octets").max().alias("in_octets"),
            pl.col("out_octets").max().alias("out_octets"),
        )
        .sort("last_seen_ts")
    )
    return (
        sessions.join_asof(
            nas_events,
            left_on="last_seen_ts",
            right_on="nas_reset_ts",
            by="nas",
            strategy="forward",
            check_sortedness=False,
        )
        .with_columns(
            stop_ts=pl.when(pl.col("stop_ts").is_null()).then(pl.col("nas_reset_ts")).otherwise(pl.col("stop_ts")),
            closed_by=pl.when(pl.col("stop_ts").is_not_null())
            .then(pl.lit("stop"))
            .when(pl.col("nas_reset_ts").is_not_null())
            .then(pl.lit("nas_reset"))
            .otherwise(pl.lit("open")),
        )
        .drop("nas_reset_ts")
    )


def sessions_to_assignments(sessions: pl.DataFrame, max_silence: dt.timedelta) -> pl.DataFrame:
    """Assignment rows (identity, family, key, prefix_len, valid_from, valid_to, conflict), half-open.

    A session without Stop holds its address until the next session on the same address starts,
    or `max_silence` after its last record; overlapping sessions on one address resolve to the
    latest Start, and the overlap is flagged as a conflict.
    """
    v4 = sessions.filter(pl.col("framed_ip").is_not_null()).with_columns(address=pl.col("framed_ip"))
    v6 = sessions.filter(pl.col("ipv6_prefix").is_not_null()).with_columns(address=pl.col("ipv6_prefix"))
    rows = pl.concat([v4, v6]).with_columns(parse_address_column(pl.col("address")).alias("parsed")).unnest("parsed")
    rows = rows.filter(pl.col("family").is_not_null())
    silence_end = pl.col("last_seen_ts") + pl.duration(seconds=int(max_silence.total_seconds()))
    rows = rows.with_columns(valid_to=pl.coalesce("stop_ts", silence_end)).sort("start_ts")
    rows = rows.with_columns(
        next_start=pl.col("start_ts").shift(-1).over("family", "key", "prefix_len", order_by="start_ts"),
    ).with_columns(
        conflict=pl.col("next_start").is_not_null() & (pl.col("next_start") < pl.col("valid_to")),
        valid_to=pl.min_horizontal("valid_to", pl.coalesce("next_start", "valid_to")),
    )
    return rows.select(
        "user_name",
        "calling_station_id",
        "framed_protocol",
        "family",
        "key",
        "prefix_len",
        pl.col("start_ts").alias("valid_from"),
        "valid_to",
        "conflict",
        "closed_by",
        "nas",
        "session_id",
    ).filter(pl.col("valid_to") > pl.col("valid_from"))


def split_backward_counters(records: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(records whose counters never go below an earlier record of their session; the others + reason)."""
    ordered = records.sort("event_ts").with_columns(
        _prior_in=pl.col("in_octets").cum_max().shift(1).over("nas", "session_id", order_by="event_ts"),
        _prior_out=pl.col("out_octets").cum_max().shift(1).over("nas", "session_id", order_by="event_ts"),
    )
    backwards = (pl.col("in_octets") < pl.col("_prior_in")) | (pl.col("out_octets") < pl.col("_prior_out"))
    bad = ordered.filter(backwards.fill_null(False))
    good = ordered.filter(~backwards.fill_null(False)).drop("_prior_in", "_prior_out")
    problems = bad.select(
        "source", "line", pl.lit("accounting counters went backwards within the session").alias("reason")
    )
    return good, problems


def billing_usage_by_day(records: pl.DataFrame, week_start: dt.datetime, timezone: str) -> pl.DataFrame:
    """Per (calling_station_id, local day of the week): in/out bytes from cumulative counters.

    Each counter delta is spread over the time between two records (counters that went
    backwards are removed beforehand by split_backward_counters).
    """
    week_end = week_start + dt.timedelta(days=7)
    phones = records.filter(
        pl.col("calling_station_id").is_not_null() & pl.col("status").is_in(["Start", "Interim-Update", "Stop"])
    )
    # A Start carries no counters: the session has moved nothing yet.
    is_start = pl.col("status") == "Start"
    phones = phones.with_columns(
        pl.when(is_start).then(pl.col(c).fill_null(0)).otherwise(pl.col(c)).alias(c)
        for c in ("in_octets", "out_octets")
    ).filter(pl.col("in_octets").is_not_null() & pl.col("out_octets").is_not_null())
    ordered = phones.sort("event_ts").with_columns(
        start_ts=(pl.col("event_ts") - pl.duration(seconds=pl.col("session_time_s").fill_null(0)))
        .min()
        .over("nas", "session_id"),
    )
    intervals = ordered.with_columns(
        prev_ts=pl.col("event_ts").shift(1).over("nas", "session_id", order_by="event_ts"),
        d_in=pl.col("in_octets")
        - pl.col("in_octets").shift(1, fill_value=0).over("nas", "session_id", order_by="event_ts"),
        d_out=pl.col("out_octets")
        - pl.col("out_octets").shift(1, fill_value=0).over("nas", "session_id", order_by="event_ts"),
    ).with_columns(prev_ts=pl.coalesce("prev_ts", "start_ts"))
    intervals = intervals.with_columns(
        d_in=pl.col("d_in").clip(lower_bound=0),
        d_out=pl.col("d_out").clip(lower_bound=0),
        span_ms=(pl.col("event_ts") - pl.col("prev_ts")).dt.total_milliseconds().clip(lower_bound=1),
    )
    days = pl.date_ranges(
        pl.col("prev_ts").dt.convert_time_zone(timezone).dt.date(),
        pl.col("event_ts").dt.convert_time_zone(timezone).dt.date(),
        interval="1d",
    )
    exploded = (
        intervals.with_columns(day=days)
        .explode("day")
        .with_columns(
            day_start=pl.col("day")
            .cast(pl.Datetime("ms"))
            .dt.replace_time_zone(timezone, ambiguous="earliest")
            .dt.convert_time_zone("UTC"),
        )
        .with_columns(
            day_end=pl.col("day_start").dt.offset_by("1d"),
        )
    )
    week_lo = pl.lit(week_start).cast(pl.Datetime("ms", "UTC"))
    week_hi = pl.lit(week_end).cast(pl.Datetime("ms", "UTC"))
    overlap_ms = (
        (pl.min_horizontal("event_ts", "day_end", week_hi) - pl.max_horizontal("prev_ts", "day_start", week_lo))
        .dt.total_milliseconds()
        .clip(lower_bound=0)
    )
    share = overlap_ms / pl.col("span_ms")
    return (
        exploded.with_columns(share=share)
        .filter(pl.col("share") > 0)
        .group_by("calling_station_id", "day")
        .agg(
            (pl.col("d_in") * pl.col("share")).sum().alias("in_bytes"),
            (pl.col("d_out") * pl.col("share")).sum().alias("out_bytes"),
        )
    )
