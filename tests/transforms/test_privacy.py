"""Pseudonyms: one keyed HMAC per distinct identity, joined back in the rows' order."""

from __future__ import annotations

import polars as pl

from transforms.accounting.privacy import pseudonym, pseudonymize

KEY = b"a-test-key-of-20-bytes"


def test_each_row_gets_the_pseudonym_of_its_identity_in_order_and_null_stays_null() -> None:
    identities = ["mobile|8190", "broadband|BB1|pppoe", None, "mobile|8190", "broadband|BB1|ipoe"]
    frame = pl.DataFrame({"identity": identities})
    out = frame.with_columns(user_key=pseudonymize(frame["identity"], KEY))
    assert out["user_key"].to_list() == [None if i is None else pseudonym(KEY, i) for i in identities]
    assert out["user_key"][0] == out["user_key"][3] != out["user_key"][1]


def test_another_key_gives_other_pseudonyms() -> None:
    frame = pl.DataFrame({"identity": ["mobile|8190"]})
    first = pseudonymize(frame["identity"], KEY).item()
    assert first != pseudonymize(frame["identity"], b"another-key-of-20-bytes").item()
    assert len(first) == 32 and int(first, 16) >= 0
