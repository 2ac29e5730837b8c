import datetime as dt

import polars as pl
import pytest

from transforms.addresses import V4_MAPPED, address_key
from transforms.attribution import Totals, add_chunk, build_lookup, hourly_volumes, port_hour_volumes, user_day_volumes

UTC = dt.UTC
MONDAY = int(dt.datetime(2024, 6, 3, tzinfo=UTC).timestamp())
DAYS = [MONDAY + d * 86_400 for d in range(3)]  # two days, cut at midnight UTC


def ts(hour: int, minute: int = 0, day: int = 0) -> dt.datetime:
    return dt.datetime(2024, 6, 3 + day, hour, minute, tzinfo=UTC)


def key(text: str) -> int:
    parsed = address_key(text)
    assert parsed is not None
    return int(parsed["key"])  # type: ignore[call-overload]


def assignments(rows: list[tuple[str, str, int, int, dt.datetime, dt.datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "user_key": u,
                "service": "broadband_pppoe",
                "customer_type": "personal",
                "family": f,
                "key": k,
                "prefix_len": n,
                "valid_from": a,
                "valid_to": b,
            }
            for u, f, k, n, a, b in rows
        ]
    ).with_columns(
        pl.col("key").cast(pl.UInt64),
        pl.col("valid_from").dt.cast_time_unit("ms"),
        pl.col("valid_to").dt.cast_time_unit("ms"),
    )


def flows(rows: list[tuple[dt.datetime, int, int, int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "first_ts": t,
                "src_hi": sh,
                "src_lo": sl,
                "dst_hi": dh,
                "dst_lo": dl,
                "est_bytes": b,
                "protocol": 6,
                "src_port": 443,
                "dst_port": 50000,
            }
            for t, sh, sl, dh, dl, b in rows
        ],
        schema={
            "first_ts": pl.Datetime("ms", "UTC"),
            "src_hi": pl.UInt64,
            "src_lo": pl.UInt64,
            "dst_hi": pl.UInt64,
            "dst_lo": pl.UInt64,
            "est_bytes": pl.UInt64,
            "protocol": pl.UInt8,
            "src_port": pl.UInt16,
            "dst_port": pl.UInt16,
        },
    )


def run(table: pl.DataFrame, data: pl.DataFrame) -> tuple[dict[tuple[str, int], tuple[int, int]], pl.DataFrame]:
    lookup = build_lookup(table, MONDAY - 86_400, DAYS)
    totals = Totals.empty(lookup)
    add_chunk(totals, data, lookup)
    per_user = user_day_volumes(lookup, totals).join(
        lookup.users.with_columns(pl.col("user_index").cast(pl.UInt32)), on="user_index"
    )
    volumes = {(r["user_key"], r["day_index"]): (r["in_bytes"], r["out_bytes"]) for r in per_user.iter_rows(named=True)}
    return volumes, hourly_volumes(lookup, totals)


REMOTE = V4_MAPPED | 0xC6120001


def test_an_address_that_moves_mid_day_is_attributed_by_time() -> None:
    addr = key("203.0.113.7")
    table = assignments(
        [
            ("alice", "v4", addr, 32, ts(0), ts(11, 30)),
            ("bob", "v4", addr, 32, ts(11, 31), ts(23, 59)),
        ]
    )
    volumes, hours = run(
        table,
        flows(
            [
                (ts(9), 0, REMOTE, 0, addr, 100),  # to alice: OUT
                (ts(11, 30), 0, REMOTE, 0, addr, 7),  # in the gap between sessions: nobody's
                (ts(12), 0, addr, 0, REMOTE, 30),  # from bob: IN
                (ts(18), 0, REMOTE, 0, addr, 500),  # to bob: OUT
            ]
        ),
    )
    assert volumes == {("alice", 0): (0, 100), ("bob", 0): (30, 500)}
    assert hours.filter(pl.col("hour") == 11)["unattributed_bytes"].sum() == 7
    assert hours.filter(pl.col("hour") == 12)["in_bytes"].sum() == 30


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_flow_times_are_read_in_their_own_unit_to_the_second(unit: str) -> None:
    addr = key("203.0.113.9")
    table = assignments([("alice", "v4", addr, 32, ts(0), ts(11, 30)), ("bob", "v4", addr, 32, ts(11, 31), ts(23))])
    tick = dt.timedelta(microseconds=1)
    rows = [
        (ts(11, 30) - tick, 0, REMOTE, 0, addr, 100),  # alice's last second: OUT
        (ts(11, 30), 0, REMOTE, 0, addr, 7),  # her session has ended: nobody's
        (ts(11, 31) - tick, 0, addr, 0, REMOTE, 9),  # not yet bob's
        (ts(11, 31), 0, addr, 0, REMOTE, 30),  # bob's first second: IN
        (ts(12) - tick, 0, REMOTE, 0, addr, 500),  # still hour 11: OUT
    ]
    # flows() stores milliseconds; these keep the microseconds and then take the unit under test.
    stamps = pl.Series([row[0] for row in rows], dtype=pl.Datetime("us", "UTC")).dt.cast_time_unit(unit)  # type: ignore[arg-type]
    volumes, hours = run(table, flows(rows).with_columns(first_ts=stamps))
    assert volumes == {("alice", 0): (0, 100), ("bob", 0): (30, 500)}
    hour_11 = hours.filter(pl.col("hour") == 11)
    assert hour_11["unattributed_bytes"].sum() == 16
    assert hour_11["out_bytes"].sum() == 600


def test_a_session_across_midnight_splits_its_volume_into_both_days() -> None:
    addr = key("203.0.113.8")
    table = assignments([("carol", "v4", addr, 32, ts(22), ts(2, day=1))])
    volumes, _ = run(table, flows([(ts(23), 0, REMOTE, 0, addr, 5), (ts(1, day=1), 0, REMOTE, 0, addr, 11)]))
    assert volumes == {("carol", 0): (0, 5), ("carol", 1): (0, 11)}


def test_ipv6_longest_delegated_prefix_wins() -> None:
    table = assignments(
        [
            ("isp-pool", "v6", key("2400:4050:1200::/48"), 48, ts(0), ts(23)),
            ("dave", "v6", key("2400:4050:1200:3400::/56"), 56, ts(0), ts(23)),
        ]
    )
    remote_hi = 0x2001_0DB8_0000_0001
    volumes, _ = run(
        table,
        flows(
            [
                (ts(5), 0x2400_4050_1200_3412, 1, remote_hi, 2, 10),
                (ts(6), 0x2400_4050_1200_9900, 1, remote_hi, 2, 20),
            ]
        ),
    )
    assert volumes == {("dave", 0): (10, 0), ("isp-pool", 0): (20, 0)}


def test_traffic_between_two_users_is_in_for_one_and_out_for_the_other() -> None:
    a, b = key("198.51.100.1"), key("198.51.100.2")
    table = assignments([("erin", "v4", a, 32, ts(0), ts(23)), ("frank", "v4", b, 32, ts(0), ts(23))])
    volumes, hours = run(table, flows([(ts(3), 0, a, 0, b, 40), (ts(3), 0, REMOTE, 0, V4_MAPPED | 0x0A000001, 9)]))
    assert volumes == {("erin", 0): (40, 0), ("frank", 0): (0, 40)}
    assert hours["unattributed_bytes"].sum() == 9
    assert hours["in_bytes"].sum() == 40 and hours["out_bytes"].sum() == 40


def test_port_hours_use_the_lower_port_and_no_port_for_other_protocols() -> None:
    addr = key("203.0.113.9")
    table = assignments([("gina", "v4", addr, 32, ts(0), ts(23))])
    data = flows([(ts(4), 0, addr, 0, REMOTE, 10), (ts(4, 30), 0, addr, 0, REMOTE, 5)]).with_columns(
        protocol=pl.Series([6, 50], dtype=pl.UInt8)
    )
    lookup = build_lookup(table, MONDAY - 86_400, DAYS)
    totals = Totals.empty(lookup)
    add_chunk(totals, data, lookup)
    rows = port_hour_volumes(lookup, totals).sort("protocol").rows()
    assert rows == [(6, 443, 0, 4, 10), (50, None, 0, 4, 5)]
