"""Port classification: the lower of the two ports for TCP/UDP, protocol rows for the rest."""

from __future__ import annotations

import polars as pl

WELL_KNOWN_LIMIT = 1024
PROTOCOL_NUMBERS = {"TCP": (6,), "UDP": (17,), "ESP": (50,), "GRE": (47,), "IP-ENCAP": (4,), "ICMP": (1, 58)}

# The report's rows, in its order (Table 3 broadband, Table 4 mobile).
BROADBAND_CATEGORIES = (
    "TCP",
    "TCP <1024",
    "TCP 443 (https)",
    "TCP 80 (http)",
    "TCP 183",
    "TCP 993 (imaps)",
    "TCP 22 (ssh)",
    "TCP >=1024",
    "TCP 31000",
    "TCP 1935 (rtmp)",
    "TCP 8080",
    "UDP",
    "UDP 443 (https/quic)",
    "UDP 4500 (nat-t)",
    "UDP 8801",
    "ESP",
    "GRE",
    "IP-ENCAP",
    "ICMP",
)
MOBILE_CATEGORIES = (
    "TCP",
    "TCP 443 (https)",
    "TCP 80 (http)",
    "TCP 993 (imaps)",
    "TCP 1935 (rtmp)",
    "UDP",
    "UDP 443 (https/quic)",
    "UDP 4500 (nat-t)",
    "UDP 51820",
    "UDP 53 (dns)",
    "UDP 8801",
    "ESP",
    "GRE",
    "ICMP",
)
CATEGORIES = {"broadband": BROADBAND_CATEGORIES, "mobile": MOBILE_CATEGORIES}
OTHER_CATEGORY = "Other"


def classify_port(flows: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `port`: the lower of src/dst port for TCP (6) and UDP (17), null for other protocols."""
    lower = pl.min_horizontal("src_port", "dst_port")
    return flows.with_columns(port=pl.when(pl.col("protocol").is_in([6, 17])).then(lower).otherwise(None))


def category_predicate(category: str) -> pl.Expr:
    """Rows of a port_usage frame (protocol, port) that fall in one report category."""
    name, _, rest = category.partition(" ")
    condition = pl.col("protocol").is_in(list(PROTOCOL_NUMBERS[name]))
    token = rest.split(" ")[0] if rest else ""
    if token == "<1024":
        condition &= pl.col("port") < WELL_KNOWN_LIMIT
    elif token == ">=1024":
        condition &= pl.col("port") >= WELL_KNOWN_LIMIT
    elif token.isdigit():
        condition &= pl.col("port") == int(token)
    return condition


def is_protocol_total(category: str) -> bool:
    """True for rows that are a whole protocol (they, plus Other, sum to 100%)."""
    return " " not in category


def share_by_category(port_usage: pl.DataFrame) -> pl.DataFrame:
    """Rows (service, position, category, is_protocol_total, bytes, share_pct): report rows, then Other."""
    rows: list[dict[str, object]] = []
    for service, categories in CATEGORIES.items():
        usage = port_usage.filter(pl.col("service") == service)
        total = float(usage["bytes"].sum() or 0)
        named_protocols = [p for c in categories if is_protocol_total(c) for p in PROTOCOL_NUMBERS[c.split(" ")[0]]]
        for position, category in enumerate((*categories, OTHER_CATEGORY), start=1):
            if category == OTHER_CATEGORY:
                selected = usage.filter(~pl.col("protocol").is_in(named_protocols))
            else:
                selected = usage.filter(category_predicate(category))
            volume = float(selected["bytes"].sum() or 0)
            rows.append(
                {
                    "service": service,
                    "position": position,
                    "category": category,
                    "is_protocol_total": is_protocol_total(category) or category == OTHER_CATEGORY,
                    "bytes": volume,
                    "share_pct": 100.0 * volume / total if total else 0.0,
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "service": pl.String,
            "position": pl.Int32,
            "category": pl.String,
            "is_protocol_total": pl.Boolean,
            "bytes": pl.Float64,
            "share_pct": pl.Float64,
        },
    )


# Figures 7 and 8: the report's port buckets over the week; "other" keeps the buckets' sum whole.
PORT_BUCKETS = ("TCP 80/443", "TCP >=1024", "UDP 443", "other")


def bucket_port_hours(port_hours: pl.DataFrame) -> pl.DataFrame:
    """Rows (service, day, hour, bucket, bytes): every (service, day, hour) of `port_hours`
    (service, protocol, port, day, hour, bytes) with all four buckets, zero where empty."""
    protocol, port = pl.col("protocol"), pl.col("port")
    bucket = (
        pl.when((protocol == 6) & port.is_in([80, 443]))
        .then(pl.lit(PORT_BUCKETS[0]))
        .when((protocol == 6) & (port >= WELL_KNOWN_LIMIT))
        .then(pl.lit(PORT_BUCKETS[1]))
        .when((protocol == 17) & (port == 443))
        .then(pl.lit(PORT_BUCKETS[2]))
        .otherwise(pl.lit(PORT_BUCKETS[3]))
    )
    summed = (
        port_hours.with_columns(bucket=bucket)
        .group_by("service", "day", "hour", "bucket")
        .agg(pl.col("bytes").sum().cast(pl.Float64))
    )
    grid = (
        port_hours.select("service", "day", "hour")
        .unique()
        .join(pl.DataFrame({"bucket": list(PORT_BUCKETS)}), how="cross")
    )
    return (
        grid.join(summed, on=["service", "day", "hour", "bucket"], how="left")
        .with_columns(pl.col("bytes").fill_null(0.0))
        .sort("service", "day", "hour", "bucket")
    )
