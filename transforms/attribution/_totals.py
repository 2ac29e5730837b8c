"""Per-chunk attribution of flows to user-days, and the volumes summed from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from transforms.attribution._grid import (
    EXACT_FLOAT_SUM,
    LAST_SECOND,
    NO_PIECE,
    SOME_PIECES,
    TICKS_PER_SECOND,
    V4_MAPPED_HIGH,
    SessionTable,
    _advance,
)
from transforms.attribution._lookup import SEVERAL_RANGES, AssignmentLookup


@dataclass
class Totals:
    """Running sums over any number of flow chunks: per user-day, per (day, hour), per port-hour."""

    in_bytes: np.ndarray
    out_bytes: np.ndarray
    # Exported (sampled) packets per user-day: how many samples each volume estimate rests on.
    in_packets: np.ndarray
    out_packets: np.ndarray
    hour_in: np.ndarray
    hour_out: np.ndarray
    hour_all: np.ndarray
    hour_both: np.ndarray
    # Dense over (hour slot, port code); np.zeros maps pages lazily, so only the hours with
    # traffic take memory.
    ports: np.ndarray
    flows: int = 0

    @classmethod
    def empty(cls, lookup: AssignmentLookup) -> Totals:
        hours = lookup.days * 24 + 1  # the last slot holds flows outside the days

        def zeros(n: int) -> np.ndarray:
            return np.zeros(n, dtype=np.uint64)

        user_days = lookup.user_day_user.size
        return cls(
            zeros(user_days),
            zeros(user_days),
            zeros(user_days),
            zeros(user_days),
            zeros(hours),
            zeros(hours),
            zeros(hours),
            zeros(hours),
            zeros(hours * PORT_CODES),
        )


def _v4_ranks(hi: np.ndarray, lo: np.ndarray, lookup: AssignmentLookup) -> tuple[np.ndarray, np.ndarray]:
    """(rows, ranks) of one side's addresses (int64 views of the upper and lower halves) that are
    IPv4 addresses some session held."""
    # The low half of ::ffff:a.b.c.d is 0xFFFF_aabb_ccdd: less 0xFFFF_0000, its upper 48 bits are
    # the /16 for IPv4-mapped addresses and outside [0, 2^16) for any other, which all meet the
    # table's last entry. One lookup finds the /16 and rules out most of the other side's addresses.
    sixteen = lo >> 16
    sixteen -= V4_MAPPED_HIGH << 16
    unsigned = sixteen.view(np.uint64)
    np.minimum(unsigned, 1 << 16, out=unsigned)
    block = lookup.v4_block_of_16[sixteen]
    rows = np.flatnonzero(block >= 0)
    rows = rows[hi[rows] == 0]
    low = lo[rows]
    slot = lookup.v4_slot_of_24[block[rows] * 256 + ((low >> 8) & 0xFF)]
    rank = lookup.v4_rank_of_slot[slot + (low & 0xFF)]
    held = np.flatnonzero(rank >= 0)
    return rows[held], rank[held]


def _v6_ranks(hi: np.ndarray, lo: np.ndarray, lookup: AssignmentLookup) -> tuple[np.ndarray, np.ndarray]:
    """(rows, ranks) of one side's addresses (int64 views of the halves) in a delegated prefix's range."""
    ranges = lookup.v6_ranges
    if ranges.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    starts, ends = ranges.starts, ranges.ends
    upper = hi.view(np.uint64)
    candidate = (upper >= starts[0]) & (upper <= ends[-2])
    if starts[0] == 0:  # a range at the bottom of the line would take in IPv4-mapped addresses
        candidate &= ~((hi == 0) & ((lo >> 32) == V4_MAPPED_HIGH))
    rows = np.flatnonzero(candidate)
    upper = upper[rows]
    rank = ranges.ranks[((upper - starts[0]) >> ranges.shift).view(np.int64)]
    # Buckets that several ranges share: a binary search over all of them, for those rows only.
    several = np.flatnonzero(rank == SEVERAL_RANGES)
    rank[several] = np.searchsorted(starts[:-1], upper[several], side="right") - 1
    # One test for all: NO_RANGE (and a search that found none) picks the range that holds nothing.
    inside = np.flatnonzero((upper >= starts[rank]) & (upper <= ends[rank]))
    return rows[inside], rank[inside]


def _find_user_days(
    table: SessionTable, rank: np.ndarray, ticks: np.ndarray, per_second: int, bucket: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positions into rank, user-days) of the sides held by some session at their time."""
    if table.size == 0 or rank.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64)
    index = bucket.astype(np.int64) * table.ranks if table.cell.size >= (1 << 31) else bucket * table.ranks
    index += rank
    found = table.cell[index]
    some = np.flatnonzero(found <= SOME_PIECES)
    if some.size:
        # Where the bucket is not one piece's (a reconnect within it): the last piece of the flow's
        # (day, rank) that started by its time, stepping from the first overlapping the bucket; the
        # packed key stops the steps at the next (day, rank) and the sentinel at the end.
        seconds = ticks[some] // per_second
        np.clip(seconds, -1, LAST_SECOND, out=seconds)
        flow_key = (table.bucket_offset[bucket[some]] + rank[some]) << 32
        flow_key += seconds
        after = (SOME_PIECES - found[some]).astype(np.int64) + 1
        _advance(after, table.size, table.key, flow_key)
        piece = after - 1
        held = (table.key[piece] <= flow_key) & (seconds < table.end_s[piece])
        found[some] = np.where(held, table.user_day[piece], NO_PIECE)
    hit = np.flatnonzero(found >= 0)
    return hit, found[hit]


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """The parts end to end, without a copy when there is one."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _sum_by_index(
    key: np.ndarray, values: np.ndarray, exact_in_float: bool, size: int | None = None
) -> tuple[int, np.ndarray]:
    """(first key, uint64 sums of values per key from it to the last key present); with `size`,
    from key 0 to size - 1."""
    if key.size == 0:
        return 0, np.zeros(size or 0, dtype=np.uint64)
    lowest, highest = (0, size - 1) if size else (int(key.min()), int(key.max()))
    index = key - lowest if lowest else key
    if exact_in_float:
        return lowest, np.bincount(index, weights=values, minlength=highest - lowest + 1).astype(np.uint64)
    grouped = pl.DataFrame({"p": index, "v": values}).group_by("p").agg(pl.col("v").sum())
    sums = np.zeros(highest - lowest + 1, dtype=np.uint64)
    sums[grouped["p"].to_numpy()] = grouped["v"].to_numpy()
    return lowest, sums


def _nonzero(first: int, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, sums) of the non-zero sums of keys first, first + 1, ..."""
    # A boolean mask first: numpy's nonzero on a float or integer array is several times slower.
    present = np.flatnonzero(sums != 0)
    return present + first, sums[present]


# Port-hour keys: hour slot * PORT_CODES + port code, where the code is the lower port for TCP,
# 65536 + the lower port for UDP and 131072 + the protocol number for protocols without ports.
UDP_CODE = 1 << 16
PORTLESS_CODE = 1 << 17
PORT_CODES = PORTLESS_CODE + 256
PORT_CODE_BASE = np.array([PORTLESS_CODE + p for p in range(256)], dtype=np.int32)
PORT_CODE_BASE[6], PORT_CODE_BASE[17] = 0, UDP_CODE
PORT_MASK = np.zeros(256, dtype=np.int32)
PORT_MASK[6] = PORT_MASK[17] = 0xFFFF


@dataclass(frozen=True)
class ChunkTotals:
    """One chunk's sums: per Totals user-day array, (first user-day, sums of the user-days from it);
    dense per hour slot; and (port-hour keys, their sums) where not zero. Its size follows the
    chunk, not the week's sessions."""

    user_days: dict[str, tuple[int, np.ndarray]]
    hour_in: np.ndarray
    hour_out: np.ndarray
    hour_all: np.ndarray
    hour_both: np.ndarray
    ports: tuple[np.ndarray, np.ndarray]
    flows: int


def attribute_chunk(flows: pl.DataFrame, lookup: AssignmentLookup) -> ChunkTotals:
    """Sums of a chunk of flows (first_ts, src_/dst_ hi/lo, est_bytes, protocol, src_port, dst_port,
    optionally packets: the exported, sampled count) per user-day and direction, per hour slot
    and per (protocol, lower port, hour slot)."""
    stamps = flows["first_ts"]
    # In the column's own unit: a cast would cost a pass and a copy per chunk.
    per_second = TICKS_PER_SECOND[stamps.dtype.time_unit]  # type: ignore[attr-defined]
    ticks = stamps.to_physical().to_numpy() - lookup.epoch_s * per_second
    est = flows["est_bytes"].to_numpy().astype(np.uint64, copy=False)
    packets = flows["packets"].to_numpy().astype(np.uint64, copy=False) if "packets" in flows.columns else None
    exact = float(est.sum(dtype=np.float64)) < EXACT_FLOAT_SUM and (
        packets is None or float(packets.sum(dtype=np.float64)) < EXACT_FLOAT_SUM
    )
    # bincount sums float64 weights: convert once, not once per sum.
    volume = est.astype(np.float64) if exact else est
    hours = lookup.days * 24 + 1  # the last slot holds flows outside the days
    slots, buckets = lookup.grid.locate(ticks, per_second)

    user_days: dict[str, tuple[int, np.ndarray]] = {}
    # 1 where the flow's source matched a user, 2 where its destination did.
    matched = np.zeros(flows.height, dtype=np.int32)
    for side, direction, flag in (("src", "in", 1), ("dst", "out", 2)):
        # Signed views: the bit operations below only look at bits that keep their meaning.
        hi = flows[f"{side}_hi"].to_numpy().view(np.int64)
        lo = flows[f"{side}_lo"].to_numpy().view(np.int64)
        found_rows, found_user_days = [], []
        for find_ranks, table in ((_v4_ranks, lookup.v4), (_v6_ranks, lookup.v6)):
            if table.size:
                rows, rank = find_ranks(hi, lo, lookup)
                hit, user_day = _find_user_days(table, rank, ticks[rows], per_second, buckets[rows])
                found_rows.append(rows[hit])
                found_user_days.append(user_day)
        rows, user_day = _joined(found_rows, np.intp), _joined(found_user_days, np.int64)
        user_days[f"{direction}_bytes"] = _sum_by_index(user_day, volume[rows], exact)
        if packets is not None:
            user_days[f"{direction}_packets"] = _sum_by_index(user_day, packets[rows], exact)
        matched[rows] |= flag
    # One pass sums every hour slot by whether the flow matched a user on its source and on its
    # destination side: a flow between two users is IN for one and OUT for the other, and knowing
    # which matched both gives the unattributed volume exactly.
    matched += slots * 4
    by_hour = _sum_by_index(matched, volume, exact, hours * 4)[1].reshape(hours, 4)
    protocol = flows["protocol"].to_numpy()
    lower = np.minimum(flows["src_port"].to_numpy(), flows["dst_port"].to_numpy())
    port_key = slots * PORT_CODES
    port_key += PORT_CODE_BASE[protocol]
    port_key += lower & PORT_MASK[protocol]
    return ChunkTotals(
        user_days,
        by_hour[:, 1] + by_hour[:, 3],
        by_hour[:, 2] + by_hour[:, 3],
        by_hour.sum(axis=1, dtype=np.uint64),
        by_hour[:, 3].copy(),
        _nonzero(*_sum_by_index(port_key, volume, exact)),
        flows.height,
    )


def add_chunk(totals: Totals, flows: pl.DataFrame, lookup: AssignmentLookup) -> None:
    """Adds a chunk of flows (first_ts, src_/dst_ hi/lo, est_bytes, protocol, src_port, dst_port) to the totals."""
    accumulate(totals, attribute_chunk(flows, lookup))


def user_day_volumes(lookup: AssignmentLookup, totals: Totals) -> pl.DataFrame:
    """Rows (user_index, day_index, in_bytes, out_bytes, in_packets, out_packets) with traffic;
    packets are the exported (sampled) packets the byte estimates rest on."""
    return pl.DataFrame(
        {
            "user_index": lookup.user_day_user,
            "day_index": lookup.user_day_day,
            "in_bytes": totals.in_bytes,
            "out_bytes": totals.out_bytes,
            "in_packets": totals.in_packets,
            "out_packets": totals.out_packets,
        }
    ).filter((pl.col("in_bytes") > 0) | (pl.col("out_bytes") > 0))


def hourly_volumes(lookup: AssignmentLookup, totals: Totals) -> pl.DataFrame:
    """Rows (day_index, hour, in_bytes, out_bytes, unattributed_bytes) of the days (outside slot dropped)."""
    slots = lookup.days * 24
    unattributed = totals.hour_all - totals.hour_in - totals.hour_out + totals.hour_both
    return pl.DataFrame(
        {
            "day_index": np.arange(slots) // 24,
            "hour": np.arange(slots) % 24,
            "in_bytes": totals.hour_in[:slots],
            "out_bytes": totals.hour_out[:slots],
            "unattributed_bytes": unattributed[:slots],
        }
    )


def port_hour_volumes(lookup: AssignmentLookup, totals: Totals) -> pl.DataFrame:
    """Rows (protocol, port, day_index, hour, bytes) of the days with traffic; port is null for
    protocols without ports."""
    slots = lookup.days * 24  # the slot after them holds flows outside the days
    key, sums = _nonzero(0, totals.ports[: slots * PORT_CODES])
    slot, code = pl.col("key") // PORT_CODES, pl.col("key") % PORT_CODES
    return pl.DataFrame({"key": key, "bytes": sums}).select(
        pl.when(code < UDP_CODE)
        .then(6)
        .when(code < PORTLESS_CODE)
        .then(17)
        .otherwise(code - PORTLESS_CODE)
        .cast(pl.UInt8)
        .alias("protocol"),
        pl.when(code < PORTLESS_CODE).then(code % UDP_CODE).cast(pl.UInt16).alias("port"),
        (slot // 24).alias("day_index"),
        (slot % 24).alias("hour"),
        "bytes",
    )


def accumulate(into: Totals, part: ChunkTotals) -> Totals:
    """Adds a chunk's sums into running totals (in place) and returns them; the chunk can go."""
    for name, (first, sums) in part.user_days.items():
        getattr(into, name)[first : first + sums.size] += sums
    for name in ("hour_in", "hour_out", "hour_all", "hour_both"):
        getattr(into, name)[:] += getattr(part, name)
    keys, sums = part.ports
    into.ports[keys] += sums  # keys are distinct
    into.flows += part.flows
    return into
