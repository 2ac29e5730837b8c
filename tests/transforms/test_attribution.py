import datetime as dt

import polars as pl

from transforms.addresses import V4_MAPPED, address_key
from transforms.attribution import attribute_flows_to_users
from transforms.usage import user_day_from_flows

UTC = dt.UTC


def ts(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 6, 3, hour, minute, tzinfo=UTC)


def v4(text: str) -> int:
    key = address_key(text)
    assert key is not None
    return int(key["key"])  # type: ignore[call-overload]


def assignments(rows: list[tuple[str, str, str, int, dt.datetime, dt.datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "user_key": u,
                "service": s,
                "customer_type": "personal",
                "family": f,
                "key": k,
                "prefix_len": 32 if f == "v4" else None,
                "valid_from": a,
                "valid_to": b,
            }
            for u, s, f, k, a, b in rows
        ]
    ).with_columns(
        pl.col("key").cast(pl.UInt64),
        pl.col("valid_from").cast(pl.Datetime("ms", "UTC")),
        pl.col("valid_to").cast(pl.Datetime("ms", "UTC")),
    )


def flows(rows: list[tuple[dt.datetime, int, int, int, int, int]]) -> pl.LazyFrame:
    return pl.LazyFrame(
        [
            {"first_ts": t, "src_hi": sh, "src_lo": sl, "dst_hi": dh, "dst_lo": dl, "est_bytes": b}
            for t, sh, sl, dh, dl, b in rows
        ],
        schema={
            "first_ts": pl.Datetime("ms", "UTC"),
            "src_hi": pl.UInt64,
            "src_lo": pl.UInt64,
            "dst_hi": pl.UInt64,
            "dst_lo": pl.UInt64,
            "est_bytes": pl.UInt64,
        },
    )


def test_an_address_that_moves_mid_day_is_attributed_by_time() -> None:
    addr = v4("203.0.113.7")
    table = assignments(
        [
            ("alice", "broadband_pppoe", "v4", addr, ts(0), ts(11, 30)),
            ("bob", "broadband_pppoe", "v4", addr, ts(11, 31), ts(23, 59)),
        ]
    ).with_columns(pl.lit(32).alias("prefix_len"))
    remote = V4_MAPPED | 0xC6120001
    out = attribute_flows_to_users(
        flows(
            [
                (ts(9), 0, remote, 0, addr, 100),  # to alice: OUT
                (
                    ts(
                        11,
                        30,
                    ),
                    0,
                    remote,
                    0,
                    addr,
                    7,
                ),  # in the gap between sessions: nobody
                (ts(12), 0, addr, 0, remote, 30),  # from bob: IN
                (ts(18), 0, remote, 0, addr, 500),  # to bob: OUT
            ]
        ),
        table,
    ).collect()
    assert out["dst_user_key"].to_list() == ["alice", None, None, "bob"]
    assert out["src_user_key"].to_list() == [None, None, "bob", None]
    days = user_day_from_flows(out.lazy().with_columns(pl.lit(dt.date(2024, 6, 3)).alias("day"))).collect()
    by_user = {r["user_key"]: (r["in_bytes"], r["out_bytes"]) for r in days.iter_rows(named=True)}
    assert by_user == {"alice": (0, 100), "bob": (30, 500)}


def test_ipv6_longest_delegated_prefix_wins() -> None:
    wide = address_key("2400:4050:1200::/48")
    narrow = address_key("2400:4050:1200:3400::/56")
    assert wide is not None and narrow is not None
    table = pl.concat(
        [
            assignments([("isp-pool", "broadband_ipoe", "v6", int(wide["key"]), ts(0), ts(23))]).with_columns(
                pl.lit(48).alias("prefix_len")
            ),  # type: ignore[call-overload]
            assignments([("carol", "broadband_ipoe", "v6", int(narrow["key"]), ts(0), ts(23))]).with_columns(
                pl.lit(56).alias("prefix_len")
            ),  # type: ignore[call-overload]
        ]
    )
    inside_narrow = 0x2400_4050_1200_3412
    inside_wide_only = 0x2400_4050_1200_9900
    out = attribute_flows_to_users(
        flows(
            [
                (ts(5), inside_narrow, 1, 0x2001_0DB8_0000_0001, 2, 10),
                (ts(6), inside_wide_only, 1, 0x2001_0DB8_0000_0001, 2, 10),
            ]
        ),
        table,
    ).collect()
    assert out["src_user_key"].to_list() == ["carol", "isp-pool"]


def test_traffic_between_two_users_is_in_for_one_and_out_for_the_other() -> None:
    a, b = v4("198.51.100.1"), v4("198.51.100.2")
    table = assignments(
        [
            ("dave", "broadband_pppoe", "v4", a, ts(0), ts(23)),
            ("erin", "broadband_pppoe", "v4", b, ts(0), ts(23)),
        ]
    ).with_columns(pl.lit(32).alias("prefix_len"))
    out = attribute_flows_to_users(flows([(ts(3), 0, a, 0, b, 40)]), table).collect()
    days = user_day_from_flows(out.lazy().with_columns(pl.lit(dt.date(2024, 6, 3)).alias("day"))).collect()
    by_user = {r["user_key"]: (r["in_bytes"], r["out_bytes"]) for r in days.iter_rows(named=True)}
    assert by_user == {"dave": (40, 0), "erin": (0, 40)}
