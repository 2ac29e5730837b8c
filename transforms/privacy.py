"""Pseudonyms: subscriber ids and phone numbers become keyed HMAC-SHA256 user keys."""

from __future__ import annotations

import hashlib
import hmac

import polars as pl

USER_KEY_HEX = 32


def pseudonym(key: bytes, identity: str) -> str:
    """First 128 bits (hex) of HMAC-SHA256(key, identity)."""
    return hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()[:USER_KEY_HEX]


def pseudonymize(identities: pl.Expr, key: bytes) -> pl.Expr:
    """user_key for each identity string (e.g. 'broadband|BB0000001|pppoe', 'mobile|8190...')."""
    return identities.map_elements(lambda v: pseudonym(key, v), return_dtype=pl.String, skip_nulls=True)
