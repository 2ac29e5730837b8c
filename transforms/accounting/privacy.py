"""Pseudonyms: subscriber ids and phone numbers become keyed HMAC-SHA256 user keys."""

from __future__ import annotations

import hashlib
import hmac

import polars as pl

USER_KEY_HEX = 32


def pseudonym(key: bytes, identity: str) -> str:
    """First 128 bits (hex) of HMAC-SHA256(key, identity)."""
    return hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()[:USER_KEY_HEX]


def pseudonymize(identities: pl.Series, key: bytes) -> pl.Series:
    """user_key for each identity string (e.g. 'broadband|BB0000001|pppoe', 'mobile|8190...'), null
    for null, row for row. Each distinct identity is hashed once (accounting repeats one per
    session record), in Python: not in a polars callback, which waits for the GIL inside polars'
    thread pool while another thread holding the GIL may wait for that pool (a deadlock)."""
    distinct = identities.drop_nulls().unique()
    keys = pl.Series([pseudonym(key, value) for value in distinct.to_list()], dtype=pl.String)
    table = pl.DataFrame({"identity": distinct, "user_key": keys})
    joined = identities.to_frame("identity").join(table, on="identity", how="left", maintain_order="left")
    return joined["user_key"]
