"""Attribution paths that only larger inputs take: thousands of addresses and users (wide packed
keys), sessions in any order, hash collisions of identities, and sparse user-day numbering."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from transforms.addresses import V4_MAPPED
from transforms.attribution import Totals, add_chunk, build_lookup, port_hour_volumes, user_day_volumes
from transforms.attribution._grid import Pieces, number_user_days
from transforms.attribution._lookup import group_identities

EPOCH = 1_717_000_000
DAY = 86_400
DAY_STARTS = [EPOCH + d * DAY for d in range(5)]


def _week(seed: int, addresses: int, users: int, flows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two sessions per address (the second from a reconnect at a random moment) over four days,
    and flows from random addresses (used or not) at random times, half of them from before the days."""
    rng = np.random.default_rng(seed)
    base = 0x0A00_0000 + rng.choice(1 << 20, addresses, replace=False)
    cut = rng.integers(1, 4 * DAY, addresses)
    starts = np.concatenate([np.zeros(addresses, dtype=np.int64), cut])
    ends = np.concatenate([cut - rng.integers(0, 600, addresses), np.full(addresses, 4 * DAY)])
    sessions = pl.DataFrame(
        {
            "user_key": pl.Series(rng.integers(0, users, 2 * addresses)).cast(pl.String),
            "service": "broadband_pppoe",
            "customer_type": "personal",
            "family": "v4",
            "key": (V4_MAPPED | np.concatenate([base, base])).astype(np.uint64),
            "prefix_len": 32,
            "valid_from": pl.from_epoch(pl.Series(EPOCH + starts), time_unit="s").dt.replace_time_zone("UTC"),
            "valid_to": pl.from_epoch(pl.Series(EPOCH + ends), time_unit="s").dt.replace_time_zone("UTC"),
        }
    ).filter(pl.col("valid_to") > pl.col("valid_from"))
    side = np.where(rng.random(flows) < 0.9, base[rng.integers(0, addresses, flows)], 0x0A00_0000 + (1 << 20))
    upload = rng.random(flows) < 0.5
    other = (V4_MAPPED | rng.integers(0x0800_0000, 0x0900_0000, flows)).astype(np.uint64)
    mine = (V4_MAPPED | side).astype(np.uint64)
    flows_frame = pl.DataFrame(
        {
            "first_ts": pl.from_epoch(
                pl.Series(EPOCH * 1000 + rng.integers(-DAY * 1000, 4 * DAY * 1000, flows)), time_unit="ms"
            ).dt.replace_time_zone("UTC"),
            "src_hi": np.zeros(flows, dtype=np.uint64),
            "src_lo": np.where(upload, mine, other),
            "dst_hi": np.zeros(flows, dtype=np.uint64),
            "dst_lo": np.where(upload, other, mine),
            "est_bytes": rng.integers(1, 10**6, flows).astype(np.uint64),
            "protocol": np.full(flows, 6, dtype=np.uint8),
            "src_port": np.full(flows, 443, dtype=np.uint16),
            "dst_port": np.full(flows, 50_000, dtype=np.uint16),
        }
    )
    return sessions, flows_frame


def _reference(sessions: pl.DataFrame, flows: pl.DataFrame) -> pl.DataFrame:
    """(user_key, day, in_bytes, out_bytes) by a straightforward as-of join per side."""
    table = sessions.select(pl.col("key").alias("k"), "valid_from", "valid_to", "user_key").sort("valid_from")
    parts = []
    for side, column in (("src_lo", "in_bytes"), ("dst_lo", "out_bytes")):
        joined = (
            flows.select(pl.col("first_ts").dt.cast_time_unit("us"), "est_bytes", pl.col(side).alias("k"))
            .sort("first_ts")
            .join_asof(table, left_on="first_ts", right_on="valid_from", by="k", strategy="backward")
            .filter(pl.col("user_key").is_not_null() & (pl.col("first_ts") < pl.col("valid_to")))
        )
        parts.append(
            joined.group_by("user_key", ((pl.col("first_ts").dt.epoch("s") - EPOCH) // DAY).alias("day")).agg(
                pl.col("est_bytes").sum().alias(column)
            )
        )
    return (
        pl.concat(parts, how="diagonal")
        .group_by("user_key", "day")
        .agg(pl.col("in_bytes").sum(), pl.col("out_bytes").sum())
        .with_columns(pl.col("in_bytes", "out_bytes").fill_null(0).cast(pl.UInt64))
        .sort("user_key", "day")
    )


def _attribute(sessions: pl.DataFrame, flows: pl.DataFrame) -> pl.DataFrame:
    lookup = build_lookup(sessions, EPOCH - DAY, DAY_STARTS)
    totals = Totals.empty(lookup)
    for start in range(0, flows.height, 7_000):
        add_chunk(totals, flows.slice(start, 7_000), lookup)
    return (
        user_day_volumes(lookup, totals)
        .join(lookup.users.with_columns(pl.col("user_index").cast(pl.UInt32)), on="user_index")
        .select("user_key", pl.col("day_index").cast(pl.Int64).alias("day"), "in_bytes", "out_bytes")
        .sort("user_key", "day")
    )


def test_thousands_of_addresses_and_users_in_any_session_order_match_an_as_of_join() -> None:
    # 12,000 addresses over 4 days and 30,000 users: the packed piece keys and the user-day
    # numbering go far past 16-bit products of day and rank or user.
    sessions, flows = _week(seed=3, addresses=12_000, users=30_000, flows=40_000)
    expected = _reference(sessions, flows)
    assert expected.height > 10_000
    in_order = _attribute(sessions.sort("key", "valid_from"), flows)
    shuffled = _attribute(sessions.sample(fraction=1.0, shuffle=True, seed=1), flows)
    assert in_order.equals(expected)
    assert shuffled.equals(expected)


@pytest.mark.parametrize("largest_bytes", [10**6, 1 << 46], ids=["float sums", "beyond float precision"])
def test_port_hours_summed_across_chunks_match_a_group_by(largest_bytes: int) -> None:
    sessions, flows = _week(seed=5, addresses=500, users=400, flows=60_000)
    rng = np.random.default_rng(6)
    flows = flows.with_columns(
        est_bytes=pl.Series(rng.integers(1, largest_bytes, flows.height).astype(np.uint64)),
        protocol=pl.Series(rng.choice(np.array([6, 17, 1, 47], dtype=np.uint8), flows.height)),
        src_port=pl.Series(rng.integers(0, 65536, flows.height).astype(np.uint16)),
        dst_port=pl.Series(rng.integers(0, 65536, flows.height).astype(np.uint16)),
    )
    lookup = build_lookup(sessions, EPOCH - DAY, DAY_STARTS)
    totals = Totals.empty(lookup)
    for start in range(0, flows.height, 4_000):
        add_chunk(totals, flows.slice(start, 4_000), lookup)
    got = port_hour_volumes(lookup, totals).sort("protocol", "port", "day_index", "hour")

    seconds = pl.col("first_ts").dt.epoch("s") - EPOCH
    expected = (
        flows.filter((seconds >= 0) & (seconds < 4 * DAY))
        .group_by(
            "protocol",
            pl.when(pl.col("protocol").is_in([6, 17])).then(pl.min_horizontal("src_port", "dst_port")).alias("port"),
            (seconds // DAY).alias("day_index"),
            (seconds % DAY // 3600).alias("hour"),
        )
        .agg(pl.col("est_bytes").sum().alias("bytes"))
        .sort("protocol", "port", "day_index", "hour")
    )
    assert got.height > 20_000
    assert got.select(pl.all().cast(pl.UInt64)).equals(expected.select(pl.all().cast(pl.UInt64)))


def test_identities_sharing_a_hash_are_still_told_apart() -> None:
    identities = pl.DataFrame(
        {
            "user_key": ["a", "b", "a", "c", "b"],
            "service": ["broadband_pppoe", "broadband_pppoe", "broadband_pppoe", "mobile", "broadband_ipoe"],
            "customer_type": "personal",
        }
    )
    honest = pl.DataFrame(
        {"group": [1, 2, 1, 3, 4], "check": [10, 20, 10, 30, 40]}, schema=[("group", pl.UInt64), ("check", pl.UInt64)]
    )
    # Every row's first hash collides; the second tells them apart, so the strings are grouped.
    colliding = honest.with_columns(pl.lit(7, dtype=pl.UInt64).alias("group"))
    for hashes in (honest, colliding):
        users, user_index = group_identities(identities, hashes)
        assert users.drop("user_index").rows() == [
            ("a", "broadband_pppoe", "personal"),
            ("b", "broadband_pppoe", "personal"),
            ("c", "mobile", "personal"),
            ("b", "broadband_ipoe", "personal"),
        ]
        assert user_index.tolist() == [0, 1, 0, 2, 3]


def test_user_days_number_the_same_with_a_dense_table_or_a_sort() -> None:
    rng = np.random.default_rng(5)

    def pieces(n: int) -> Pieces:
        day = rng.integers(0, 7, n).astype(np.int16)
        return Pieces(np.zeros(n, dtype=np.int64), day, np.zeros(n, dtype=np.int64), rng.integers(0, 50_000, n), 1)

    tables = [pieces(3_000), pieces(500)]
    dense = number_user_days(50_000, 7, tables)  # 350,000 cells: a dense table
    sparse = number_user_days(50_000, 7, tables, dense_limit=0)
    for a, b in zip([dense[0], dense[1], *dense[2]], [sparse[0], sparse[1], *sparse[2]], strict=True):
        assert np.array_equal(a, b)
    user, day, (first, second) = dense
    # In (day, user) order, one per distinct pair, and each piece points at its own pair.
    assert np.all(np.diff(day.astype(np.int64) * 50_000 + user) > 0)
    assert np.array_equal(user[first], tables[0].user) and np.array_equal(day[first], tables[0].day)
    assert np.array_equal(user[second], tables[1].user) and np.array_equal(day[second], tables[1].day)


def test_days_that_do_not_start_on_quarter_hours_are_refused() -> None:
    sessions, _ = _week(seed=1, addresses=10, users=5, flows=1)
    with pytest.raises(ValueError, match="quarter hours"):
        build_lookup(sessions, EPOCH - DAY, [EPOCH, EPOCH + DAY + 600, EPOCH + 2 * DAY])
