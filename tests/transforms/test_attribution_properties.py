"""The direct-index attribution against a brute-force reference on small random inputs."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.addresses import V4_MAPPED, prefix_mask
from transforms.attribution import Totals, add_chunk, build_lookup, hourly_volumes, user_day_volumes

EPOCH = 1_717_000_000
V6_BASE = 0x2400_4050_0000_0000


def _ts(seconds: list[int]) -> pl.Series:
    return pl.Series([dt.datetime.fromtimestamp(EPOCH + s, dt.UTC) for s in seconds]).cast(pl.Datetime("ms", "UTC"))


@st.composite
def scenarios(
    draw: st.DrawFn, scale: int = 1, far_prefixes: bool = False, largest_bytes: int = 10**9
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Assignments and flows; times are drawn in units of `scale` seconds. `far_prefixes` spreads the
    IPv6 prefixes over distant blocks (ranges share index buckets); `largest_bytes` bounds est_bytes."""
    rows = []
    # IPv4: a few addresses, each a sequence of non-overlapping sessions of random users.
    for address in range(draw(st.integers(1, 4))):
        t = draw(st.integers(0, 50))
        for _ in range(draw(st.integers(1, 4))):
            length = draw(st.integers(1, 200))
            rows.append(
                (
                    f"u{draw(st.integers(0, 5))}",
                    "v4",
                    V4_MAPPED | (0xC0000200 + address),
                    32,
                    t * scale,
                    (t + length) * scale,
                )
            )
            t += length + draw(st.integers(0, 30))
    # IPv6: prefixes of /48../64 inside one /40, possibly nested, each with one session.
    for _ in range(draw(st.integers(0, 5))):
        length = draw(st.sampled_from([48, 56, 60, 64]))
        key = V6_BASE | (draw(st.integers(0, 3)) << 16) | (draw(st.integers(0, 3)) << 8) | draw(st.integers(0, 3))
        if far_prefixes:
            key |= draw(st.sampled_from([0, 1 << 40, 1 << 44]))
        key &= prefix_mask(length)
        start = draw(st.integers(0, 300))
        end = start + draw(st.integers(1, 300))
        rows.append((f"u{draw(st.integers(0, 5))}", "v6", key, length, start * scale, end * scale))
    # Same-key, same-length duplicates are resolved upstream (latest start wins): drop overlaps here.
    kept: list[tuple[str, str, int, int, int, int]] = []
    for r in rows:
        if not any(k[1:4] == r[1:4] and k[4] < r[5] and r[4] < k[5] for k in kept):
            kept.append(r)
    assignments = pl.DataFrame(
        {
            "user_key": [r[0] for r in kept],
            "service": "broadband_pppoe",
            "customer_type": "personal",
            "family": [r[1] for r in kept],
            "key": pl.Series([r[2] for r in kept], dtype=pl.UInt64),
            "prefix_len": [r[3] for r in kept],
            "valid_from": _ts([r[4] for r in kept]),
            "valid_to": _ts([r[5] for r in kept]),
        }
    )
    n = draw(st.integers(1, 60))
    # Plus addresses nobody held: another /16, an unused /24 of a used /16, an unused address of a used /24.
    nobody = [(0, V4_MAPPED | 1), (0, V4_MAPPED | 0xC0000901), (0, V4_MAPPED | 0xC00002FF)]
    addresses = [(0, r[2]) if r[1] == "v4" else (r[2] | draw(st.integers(0, 0xFFFF)) & 0xFF, 7) for r in kept] + nobody
    flows = []
    for _ in range(n):
        src = draw(st.sampled_from(addresses))
        dst = draw(st.sampled_from(addresses))
        flows.append((draw(st.integers(0, 600)) * scale, *src, *dst, draw(st.integers(1, largest_bytes))))
    flow_frame = pl.DataFrame(
        {
            "first_ts": _ts([f[0] for f in flows]),
            "src_hi": pl.Series([f[1] for f in flows], dtype=pl.UInt64),
            "src_lo": pl.Series([f[2] for f in flows], dtype=pl.UInt64),
            "dst_hi": pl.Series([f[3] for f in flows], dtype=pl.UInt64),
            "dst_lo": pl.Series([f[4] for f in flows], dtype=pl.UInt64),
            "est_bytes": pl.Series([f[5] for f in flows], dtype=pl.UInt64),
        }
    ).with_columns(
        protocol=pl.lit(6, dtype=pl.UInt8),
        src_port=pl.lit(443, dtype=pl.UInt16),
        dst_port=pl.lit(50000, dtype=pl.UInt16),
    )
    return assignments, flow_frame


def brute_force(assignments: pl.DataFrame, flows: pl.DataFrame) -> tuple[dict[str, list[int]], int]:
    """Per user [in, out] bytes, and bytes matched on neither side, by checking every pair."""
    rows = assignments.with_columns(
        pl.col("valid_from").dt.epoch("s") - EPOCH, pl.col("valid_to").dt.epoch("s") - EPOCH
    ).to_dicts()
    volumes: dict[str, list[int]] = {}
    unattributed = 0
    for flow in flows.with_columns(pl.col("first_ts").dt.epoch("s") - EPOCH).to_dicts():
        hits = 0
        for side, slot in (("src", 0), ("dst", 1)):
            hi, lo, t = flow[f"{side}_hi"], flow[f"{side}_lo"], flow["first_ts"]
            best = None
            for r in rows:
                if not r["valid_from"] <= t < r["valid_to"]:
                    continue
                if r["family"] == "v4":
                    hit = hi == 0 and lo == r["key"]
                else:
                    hit = not (hi == 0 and (lo >> 32) == 0xFFFF) and (hi & prefix_mask(r["prefix_len"])) == r["key"]
                if hit and (best is None or r["prefix_len"] > best["prefix_len"]):
                    best = r
            if best is not None:
                hits += 1
                volumes.setdefault(best["user_key"], [0, 0])[slot] += flow["est_bytes"]
        if hits == 0:
            unattributed += flow["est_bytes"]
    return volumes, unattributed


def _run(
    assignments: pl.DataFrame,
    flows: pl.DataFrame,
    chunks: int = 1,
    day_starts: list[int] | None = None,
    max_bucket_cells: int = 1 << 25,
) -> tuple[dict[str, list[int]], int]:
    lookup = build_lookup(assignments, EPOCH, day_starts, max_bucket_cells)
    totals = Totals.empty(lookup)
    size = -(-flows.height // chunks)
    for start in range(0, flows.height, size):
        add_chunk(totals, flows.slice(start, size), lookup)
    per_user = user_day_volumes(lookup, totals).join(
        lookup.users.with_columns(pl.col("user_index").cast(pl.UInt32)), on="user_index"
    )
    got: dict[str, list[int]] = {}
    for r in per_user.iter_rows(named=True):
        pair = got.setdefault(r["user_key"], [0, 0])
        pair[0] += r["in_bytes"]
        pair[1] += r["out_bytes"]
    return got, int(hourly_volumes(lookup, totals)["unattributed_bytes"].sum())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 3))
def test_sort_merge_matches_brute_force(case: tuple[pl.DataFrame, pl.DataFrame], chunks: int) -> None:
    assignments, flows = case
    got, unattributed = _run(assignments, flows, chunks)
    expected, expected_unattributed = brute_force(assignments, flows)
    assert got == {k: v for k, v in expected.items() if v != [0, 0]}
    assert unattributed == expected_unattributed


# Uneven "days" (2.5 to 4 hours, like a DST day is 23 or 25) that cut sessions and buckets of an
# hour, over flows spread across 10 hours: the bucket tables, not just one all-time bucket.
DAY_STARTS = [EPOCH - 7_200, EPOCH + 10_800, EPOCH + 19_800, EPOCH + 34_200, EPOCH + 46_800]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(scale=60, far_prefixes=True), st.integers(1, 3), st.sampled_from([1, 40, 1 << 25]))
def test_matches_brute_force_across_days_buckets_and_distant_prefixes(
    case: tuple[pl.DataFrame, pl.DataFrame], chunks: int, max_bucket_cells: int
) -> None:
    """Buckets of 1 hour, or longer ones shared by several pieces when the cells are few."""
    assignments, flows = case
    got, unattributed = _run(assignments, flows, chunks, DAY_STARTS, max_bucket_cells)
    expected, expected_unattributed = brute_force(assignments, flows)
    assert got == {k: v for k, v in expected.items() if v != [0, 0]}
    assert unattributed == expected_unattributed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(largest_bytes=1 << 56))
def test_sums_stay_exact_beyond_float_precision(case: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    assignments, flows = case
    got, unattributed = _run(assignments, flows, 1, DAY_STARTS)
    expected, expected_unattributed = brute_force(assignments, flows)
    assert got == {k: v for k, v in expected.items() if v != [0, 0]}
    assert unattributed == expected_unattributed


def test_nested_prefixes_the_longest_active_one_wins_over_time() -> None:
    wide, narrow = V6_BASE, V6_BASE | 0x0000_0000_0000_3400
    assignments = pl.DataFrame(
        {
            "user_key": ["enterprise", "home"],
            "service": "broadband_ipoe",
            "customer_type": "personal",
            "family": "v6",
            "key": pl.Series([wide, narrow], dtype=pl.UInt64),
            "prefix_len": [48, 56],
            "valid_from": _ts([0, 100]),
            "valid_to": _ts([1000, 200]),
        }
    )
    address = narrow | 0x12
    flows = pl.DataFrame(
        {
            "first_ts": _ts([50, 150, 250]),
            "src_hi": pl.Series([address] * 3, dtype=pl.UInt64),
            "src_lo": pl.Series([1, 1, 1], dtype=pl.UInt64),
            "dst_hi": pl.Series([0] * 3, dtype=pl.UInt64),
            "dst_lo": pl.Series([V4_MAPPED | 9] * 3, dtype=pl.UInt64),
            "est_bytes": pl.Series([1, 10, 100], dtype=pl.UInt64),
        }
    )
    got, unattributed = _run(
        assignments,
        flows.with_columns(
            protocol=pl.lit(6, dtype=pl.UInt8),
            src_port=pl.lit(443, dtype=pl.UInt16),
            dst_port=pl.lit(50000, dtype=pl.UInt16),
        ),
    )
    assert got == {"enterprise": [101, 0], "home": [10, 0]}
    assert unattributed == 0
