"""Addresses as two unsigned 64-bit halves (IPv4 mapped into ::ffff:0:0/96) and prefix keys."""

from __future__ import annotations

import ipaddress

import polars as pl

V4_MAPPED = 0xFFFF_0000_0000


def prefix_mask(length: int) -> int:
    """Mask of the upper `length` bits of a 64-bit half (length 0..64)."""
    return ((1 << 64) - 1) ^ ((1 << (64 - length)) - 1) if length else 0


def address_key(text: str | None) -> dict[str, object] | None:
    """family/key/prefix_len of an IPv4 address or an IPv6 prefix of length <= 64; None if unreadable."""
    if text is None:
        return None
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    if network.version == 4:
        return {"family": "v4", "key": V4_MAPPED | int(network.network_address), "prefix_len": 32}
    length = min(network.prefixlen, 64)  # delegated prefixes are /48../64: the upper half decides
    upper = int(network.network_address) >> 64
    return {"family": "v6", "key": upper & prefix_mask(length), "prefix_len": length}


def parse_addresses(texts: pl.Series) -> pl.DataFrame:
    """Columns family, key, prefix_len (null where unreadable) of textual IPv4 addresses / IPv6
    prefixes, row for row; each distinct text is parsed once."""
    # In Python, not in a polars callback: a callback waits for the GIL inside polars' thread pool,
    # which another thread holding the GIL may be waiting for (a deadlock).
    distinct = texts.drop_nulls().unique().to_list()
    keys = [address_key(text) or {"family": None, "key": None, "prefix_len": None} for text in distinct]
    table = pl.DataFrame(
        {
            "_text": pl.Series(distinct, dtype=pl.String),
            "family": pl.Series([k["family"] for k in keys], dtype=pl.String),
            "key": pl.Series([k["key"] for k in keys], dtype=pl.UInt64),
            "prefix_len": pl.Series([k["prefix_len"] for k in keys], dtype=pl.Int64),
        }
    )
    joined = texts.cast(pl.String).to_frame("_text").join(table, on="_text", how="left", maintain_order="left")
    return joined.drop("_text")


def format_address(hi: int, lo: int) -> str:
    """Text form of an address kept as two 64-bit halves."""
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))
