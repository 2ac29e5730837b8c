"""`nfdump -o csv` exports: the legacy 48-column header (nfdump <= 1.7.4) and the 1.7.5+ header.

nfdump prints local time without a zone and has already multiplied counts by the sampling
rate, so rows get sampling_rate 1 with source `nfdump`.
"""

from __future__ import annotations

import io

import polars as pl

from transforms._records import FLOW_FIELDS, NO_SELECTOR
from transforms.addresses import V4_MAPPED
from transforms.errors import InputFormatError

LEGACY = {
    "first": "ts",
    "last": "te",
    "src": "sa",
    "dst": "da",
    "sport": "sp",
    "dport": "dp",
    "proto": "pr",
    "packets": "ipkt",
    "bytes": "ibyt",
    "rpackets": "opkt",
    "rbytes": "obyt",
}
MODERN = {
    "first": "firstSeen",
    "duration": "duration",
    "src": "srcAddr",
    "dst": "dstAddr",
    "sport": "srcPort",
    "dport": "dstPort",
    "proto": "proto",
    "packets": "packets",
    "bytes": "bytes",
}
PROTOCOL_NAMES = {
    "TCP": 6,
    "UDP": 17,
    "ICMP": 1,
    "ICMP6": 58,
    "IPV6-ICMP": 58,
    "GRE": 47,
    "ESP": 50,
    "AH": 51,
    "IPIP": 4,
    "IP-ENCAP": 4,
    "IPV6": 41,
    "SCTP": 132,
    "OSPF": 89,
    "PIM": 103,
    "IGMP": 2,
}


def is_nfdump_csv(data: bytes) -> bool:
    head = data[:64].lstrip()
    return head.startswith(b"ts,te,td,sa,da") or head.startswith(b"firstSeen,")


def _split_address() -> pl.Expr:
    return pl.col("_addr").map_elements(_address_halves, return_dtype=pl.List(pl.UInt64), skip_nulls=True)


def _address_halves(text: str) -> list[int] | None:
    import ipaddress

    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 4:
        return [0, V4_MAPPED | int(address)]
    value = int(address)
    return [value >> 64, value & ((1 << 64) - 1)]


# Octets without leading zeros (as Python's ipaddress, which reads "01.2.3.4" as ambiguous).
DOTTED_QUAD = r"^(0|[1-9]\d{0,2})(\.(0|[1-9]\d{0,2})){3}$"


def _ipv4_value() -> pl.Expr:
    """The 32-bit value of a dotted-quad `_addr` (null if not one, or an octet above 255), in columns."""
    text = pl.col("_addr").str.strip_chars()
    octets = text.str.split(".")
    parts = [octets.list.get(i, null_on_oob=True).cast(pl.UInt64, strict=False) for i in range(4)]
    valid = text.str.contains(DOTTED_QUAD) & pl.all_horizontal(p <= 255 for p in parts)
    value = parts[0] * 16_777_216 + parts[1] * 65_536 + parts[2] * 256 + parts[3]
    return pl.when(valid).then(value).otherwise(None)


def _addresses(frame: pl.DataFrame, column: str, prefix: str) -> pl.DataFrame:
    """`<prefix>_hi` / `<prefix>_lo` of each row's address: IPv4 parsed in columns, the rest (IPv6,
    unusual forms) by Python's ipaddress once per distinct text."""
    distinct = frame.select(pl.col(column).alias("_addr")).unique().with_columns(_v4=_ipv4_value())
    v4 = distinct.filter(pl.col("_v4").is_not_null()).select(
        "_addr",
        pl.lit(0, dtype=pl.UInt64).alias(f"{prefix}_hi"),
        (pl.col("_v4") | V4_MAPPED).alias(f"{prefix}_lo"),
    )
    other = (
        distinct.filter(pl.col("_v4").is_null() & pl.col("_addr").is_not_null())
        .with_columns(_halves=_split_address())
        .select(
            "_addr",
            pl.col("_halves").list.get(0, null_on_oob=True).alias(f"{prefix}_hi"),
            pl.col("_halves").list.get(1, null_on_oob=True).alias(f"{prefix}_lo"),
        )
    )
    lookup = pl.concat([v4, other])
    return frame.join(lookup, left_on=column, right_on="_addr", how="left")


def _timestamp(column: str, timezone: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    parsed = pl.coalesce(
        text.str.strptime(pl.Datetime("ms"), "%Y-%m-%d %H:%M:%S%.f", strict=False),
        text.str.strptime(pl.Datetime("ms"), "%Y-%m-%d %H:%M:%S", strict=False),
    )
    return parsed.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


def decode_nfdump_csv(
    data: bytes, exporter: str, source: str, timezone: str
) -> tuple[pl.DataFrame, list[InputFormatError]]:
    """Flows (FLOW_SCHEMA plus sampling) of an nfdump CSV export, and the lines that could not be read."""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    end = next((i for i, line in enumerate(lines) if line.strip() in ("Summary", "No matching flows")), len(lines))
    problems: list[InputFormatError] = []
    if end == len(lines) > 1 and lines[-1]:
        # nfdump ends every line: a last line without one was cut off, and its last field may read
        # as a smaller number (98765 bytes cut to 98). Before a Summary trailer nothing is cut.
        start = data.rindex(b"\n") + 1
        reason = f"truncated: the line at byte {start} has no line end, the file ends after {len(data)}"
        problems.append(InputFormatError(source, f"line {len(lines)}", reason, len(data) - start))
        end -= 1
    body = "\n".join(line for line in lines[:end] if line.strip())
    frame = pl.read_csv(io.StringIO(body), infer_schema=False, truncate_ragged_lines=True).with_row_index(
        "_line", offset=2
    )
    names = LEGACY if "ts" in frame.columns else MODERN
    missing = [
        c
        for key, c in names.items()
        if key not in ("rpackets", "rbytes", "duration", "last") and c not in frame.columns
    ]
    if missing:
        raise InputFormatError(source, "line 1", f"nfdump CSV header lacks {missing}")
    proto_text = pl.col(names["proto"]).str.strip_chars().str.to_uppercase()
    frame = frame.with_columns(
        first_ts=_timestamp(names["first"], timezone),
        protocol=pl.coalesce(
            proto_text.cast(pl.UInt8, strict=False),
            proto_text.replace_strict(PROTOCOL_NAMES, default=None, return_dtype=pl.UInt8),
        ),
        src_port=pl.col(names["sport"]).str.strip_chars().cast(pl.Float64, strict=False).cast(pl.UInt16, strict=False),
        dst_port=pl.col(names["dport"]).str.strip_chars().cast(pl.Float64, strict=False).cast(pl.UInt16, strict=False),
        packets=pl.col(names["packets"]).str.strip_chars().cast(pl.UInt64, strict=False),
        bytes=pl.col(names["bytes"]).str.strip_chars().cast(pl.UInt64, strict=False),
    )
    if names is LEGACY:
        frame = frame.with_columns(last_ts=_timestamp("te", timezone))
    else:
        duration_ms = (pl.col("duration").str.strip_chars().cast(pl.Float64, strict=False).fill_null(0) * 1000).cast(
            pl.Int64
        )
        frame = frame.with_columns(last_ts=pl.col("first_ts") + pl.duration(milliseconds=duration_ms))
    frame = _addresses(_addresses(frame, names["src"], "src"), names["dst"], "dst").sort("_line")
    required = ["first_ts", "protocol", "src_port", "dst_port", "packets", "bytes", "src_lo", "dst_lo"]
    bad = frame.filter(pl.any_horizontal(pl.col(c).is_null() for c in required))
    for row in bad.head(1000).iter_rows(named=True):
        column = next(c for c in required if row[c] is None)
        problems.append(InputFormatError(source, f"line {row['_line']}", f"unreadable {column}"))
    if bad.height > 1000:
        problems.append(InputFormatError(source, "lines", f"{bad.height - 1000} more unreadable lines"))
    good = frame.join(bad.select("_line"), on="_line", how="anti")
    forward = good.select("first_ts", "last_ts", *FLOW_FIELDS)
    parts = [forward]
    if names is LEGACY and "obyt" in good.columns:
        # Bidirectional records (NSEL) carry the reverse direction in opkt/obyt.
        reverse = good.with_columns(
            rp=pl.col("opkt").str.strip_chars().cast(pl.UInt64, strict=False).fill_null(0),
            rb=pl.col("obyt").str.strip_chars().cast(pl.UInt64, strict=False).fill_null(0),
        ).filter(pl.col("rb") > 0)
        parts.append(
            reverse.select(
                "first_ts",
                "last_ts",
                pl.col("dst_hi").alias("src_hi"),
                pl.col("dst_lo").alias("src_lo"),
                pl.col("src_hi").alias("dst_hi"),
                pl.col("src_lo").alias("dst_lo"),
                pl.col("dst_port").alias("src_port"),
                pl.col("src_port").alias("dst_port"),
                "protocol",
                pl.col("rp").alias("packets"),
                pl.col("rb").alias("bytes"),
            )
        )
    flows = pl.concat(parts).select(
        pl.lit(exporter).alias("exporter"),
        pl.lit("nfdump").alias("origin"),
        pl.lit(0, dtype=pl.UInt32).alias("domain_id"),
        pl.lit(NO_SELECTOR, dtype=pl.UInt64).alias("selector_id"),
        pl.lit(1, dtype=pl.UInt32).alias("record_rate"),
        pl.lit("nfdump").alias("record_rate_source"),
        pl.col("first_ts").dt.cast_time_unit("ms"),
        pl.col("last_ts").dt.cast_time_unit("ms"),
        *FLOW_FIELDS,
    )
    return flows, problems
