"""The assignment lookup: address ranks (IPv4 tables, IPv6 prefix ranges) over the time grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from transforms.attribution._grid import (
    BUCKET_HOURS,
    MASK32,
    MAX_BUCKET_CELLS,
    SessionTable,
    TimeGrid,
    cut_pieces,
    index_cells,
    number_user_days,
    seconds_since,
)
from transforms.mapping import Mapper


def _resolve_v6(v6: pl.DataFrame, epoch_s: int) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """Elementary ranges of the /64 line that some prefix covers (starts, inclusive ends) and their
    sessions (rank, from, to, user), the longest prefix winning where prefixes nest."""
    empty = np.zeros(0, dtype=np.uint64)
    schema = {"rid": pl.Int64, "from": pl.Int64, "to": pl.Int64, "user": pl.Int64}
    if v6.is_empty():
        return empty, empty, pl.DataFrame(schema=schema)
    length = v6["prefix_len"].to_numpy().astype(np.int64)
    start = v6["key"].to_numpy().astype(np.uint64)
    span = np.where(
        length >= 64, np.uint64(0), (np.uint64(1) << (64 - np.minimum(length, 63)).astype(np.uint64)) - np.uint64(1)
    )
    end = start + span
    # Elementary ranges: cut the /64 line at every prefix start and after every prefix end.
    cuts = np.unique(np.concatenate([start, end + np.uint64(1)]))
    range_starts = cuts[:-1]
    range_ends = cuts[1:] - np.uint64(1)
    first = np.searchsorted(range_starts, start, side="left")
    last = np.searchsorted(range_starts, end, side="right") - 1
    covered = last - first + 1
    rows = np.repeat(np.arange(start.size), covered)
    rid = np.repeat(first, covered) + (np.arange(rows.size) - np.repeat(np.cumsum(covered) - covered, covered))
    table = pl.DataFrame(
        {
            "rid": rid.astype(np.int64),
            "len": length[rows],
            "from": seconds_since(v6["valid_from"], epoch_s)[rows],
            "to": seconds_since(v6["valid_to"], epoch_s)[rows],
            "user": v6["user_index"].to_numpy().astype(np.int64)[rows],
        }
    )
    keep = np.unique(rid)  # ranges in the gaps between prefixes are nobody's
    nested = table.group_by("rid").agg(pl.col("len").n_unique().alias("n")).filter(pl.col("n") > 1)["rid"]
    resolved = table.filter(~pl.col("rid").is_in(nested.implode())).select("rid", "from", "to", "user")
    if nested.len():
        timeline = _longest_prefix_timeline(table.filter(pl.col("rid").is_in(nested.implode())))
        resolved = pl.concat([resolved, timeline.cast(resolved.schema)])  # type: ignore[arg-type]
    dense = np.searchsorted(keep, resolved["rid"].to_numpy())
    return range_starts[keep], range_ends[keep], resolved.with_columns(rid=pl.Series(dense, dtype=pl.Int64))


def _longest_prefix_timeline(table: pl.DataFrame) -> pl.DataFrame:
    """Per nested range: time pieces where the longest prefix with an active session owns the range."""
    out: list[tuple[int, int, int, int]] = []
    for (rid,), group in table.group_by("rid"):
        rows = sorted(group.iter_rows(named=True), key=lambda r: -r["len"])
        bounds = sorted({r["from"] for r in rows} | {r["to"] for r in rows})
        for a, b in zip(bounds[:-1], bounds[1:]):
            owner = next((r for r in rows if r["from"] <= a and b <= r["to"]), None)
            if owner is None:
                continue
            if out and out[-1][0] == rid and out[-1][3] == owner["user"] and out[-1][2] == a:
                out[-1] = (out[-1][0], out[-1][1], b, out[-1][3])
            else:
                out.append((int(rid), int(a), int(b), int(owner["user"])))  # type: ignore[arg-type]
    return pl.DataFrame(out, schema={"rid": pl.Int64, "from": pl.Int64, "to": pl.Int64, "user": pl.Int64}, orient="row")


NO_RANGE, SEVERAL_RANGES = -1, -2
MAX_RANGE_BUCKETS = 1 << 24


@dataclass(frozen=True)
class RangeIndex:
    """Sorted, disjoint ranges of /64s (starts, inclusive ends), then one that holds nothing, so
    that NO_RANGE (-1) picks it; and buckets of 2^shift /64s from the first range's start: the one
    range intersecting each bucket, NO_RANGE or SEVERAL_RANGES. Most addresses find their range in
    one lookup."""

    starts: np.ndarray
    ends: np.ndarray
    shift: np.uint64
    ranks: np.ndarray

    @classmethod
    def over(cls, starts: np.ndarray, ends: np.ndarray) -> RangeIndex:
        padded_starts = np.append(starts, np.uint64(np.iinfo(np.uint64).max))
        padded_ends = np.append(ends, np.uint64(0))
        if starts.size == 0:
            return cls(padded_starts, padded_ends, np.uint64(0), np.zeros(0, dtype=np.int32))
        span = int(ends[-1] - starts[0])
        most = min(MAX_RANGE_BUCKETS, 64 * starts.size)
        shift = max(0, span.bit_length() - most.bit_length() + 1)
        buckets = (span >> shift) + 1
        first = ((starts - starts[0]) >> np.uint64(shift)).astype(np.int64)
        last = ((ends - starts[0]) >> np.uint64(shift)).astype(np.int64)
        started = np.cumsum(np.bincount(first, minlength=buckets))
        ended_before = np.cumsum(np.bincount(last + 1, minlength=buckets + 1)[:buckets])
        count = started - ended_before
        # Ranges do not overlap, so a bucket that one range intersects holds the last one started.
        ranks = np.where(count == 1, started - 1, np.where(count == 0, NO_RANGE, SEVERAL_RANGES)).astype(np.int32)
        return cls(padded_starts, padded_ends, np.uint64(shift), ranks)

    @property
    def size(self) -> int:
        return self.starts.size - 1


@dataclass(frozen=True)
class AssignmentLookup:
    """Everything attribution needs, as numpy arrays; times are seconds since `epoch_s`."""

    epoch_s: int
    grid: TimeGrid  # its day_starts: the local midnights (seconds since the epoch)
    v4: SessionTable
    v4_block_of_16: np.ndarray  # int32 per /16: its block among the /16s with session addresses, -1 if none; then -1
    v4_slot_of_24: np.ndarray  # per (block, third octet): the /24's first slot; unused ones an empty /24's
    v4_rank_of_slot: np.ndarray  # int32 per slot (the /24, last octet): the address's rank, -1 if none
    v6_ranges: RangeIndex  # the elementary ranges of /64s (upper halves) that some prefix covers
    v6: SessionTable
    users: pl.DataFrame  # user_index -> user_key, service, customer_type
    user_day_user: np.ndarray  # per user-day: its user_index
    user_day_day: np.ndarray  # per user-day: its day

    @property
    def days(self) -> int:
        return self.grid.days


def _bucket_hours(days: int, ranks: int, max_cells: int) -> int:
    """The shortest bucket (in hours) whose (bucket x rank) cells stay within max_cells."""
    return next((h for h in BUCKET_HOURS if max(days, 1) * (24 // h) * ranks <= max_cells), 24)


IDENTITY = ["user_key", "service", "customer_type"]
# Two independently seeded 64-bit hashes of each identity: rows are grouped by the first, and any
# group whose rows disagree on the second (a collision of the first) sends the whole frame to the
# exact grouping of the strings. Two identities merge only if both hashes collide.
GROUP_SEED, CHECK_SEED = 0x7261_6666, 0x6963_7270


def index_users(assignments: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Distinct (user_index, user_key, service, customer_type) in order of first appearance, and
    each row's user_index (int64)."""
    hashes = assignments.select(
        pl.struct(IDENTITY).hash(GROUP_SEED).alias("group"), pl.struct(IDENTITY).hash(CHECK_SEED).alias("check")
    )
    return group_identities(assignments.select(IDENTITY), hashes)


def group_identities(identities: pl.DataFrame, hashes: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """As index_users, from the identity columns and two hashes of each row (group, check)."""
    # Grouping 64-bit integers is several times faster than grouping tens of millions of strings;
    # a first-appearance `unique` and a join, faster again than a group-by with aggregations.
    firsts = hashes.with_row_index("row").unique(subset="group", keep="first", maintain_order=True)
    numbered = firsts.select("group", "check").with_row_index("user_index")
    joined = hashes.select("group").join(numbered, on="group", how="left", maintain_order="left")
    user_index = joined["user_index"].to_numpy().astype(np.int64)
    # Every row of a group must carry its first row's second hash; one that does not is a
    # collision of the first, and the strings decide.
    if not np.array_equal(joined["check"].to_numpy(), hashes["check"].to_numpy()):
        grouped = identities.with_row_index("row").group_by(IDENTITY, maintain_order=True).agg("row")
        user_index = np.empty(identities.height, dtype=np.int64)
        user_index[grouped["row"].explode().to_numpy()] = np.repeat(
            np.arange(grouped.height), grouped["row"].list.len().to_numpy()
        )
        return grouped.select(IDENTITY).with_row_index("user_index"), user_index
    return identities[firsts["row"]].with_row_index("user_index"), user_index


def build_lookup(
    assignments: pl.DataFrame,
    epoch_s: int,
    day_starts_s: list[int] | None = None,
    max_bucket_cells: int = MAX_BUCKET_CELLS,
    mapper: Mapper = map,
) -> AssignmentLookup:
    """Lookup tables from assignment rows (user_key, service, customer_type, family, key, prefix_len,
    valid_from, valid_to). `epoch_s` is the time origin in epoch seconds; `day_starts_s` are the
    local midnights (epoch seconds) that cut sessions into days (default: one day, all time);
    buckets are as short as `max_bucket_cells` (bucket x address rank) cells allow; independent
    index work runs through `mapper`."""
    users, user_index = index_users(assignments)
    bounds = np.array([s - epoch_s for s in day_starts_s] if day_starts_s else [0, (1 << 32) - 1], dtype=np.int64)
    is_v4 = (assignments["family"] == "v4").to_numpy()
    v4 = assignments.filter(is_v4).select("key", "valid_from", "valid_to")
    addresses = (v4["key"].to_numpy().astype(np.uint64) & MASK32).astype(np.int64)
    distinct = np.sort(pl.Series(addresses).unique().to_numpy())
    # Three small tables instead of one per address: /16 -> its block (or -1), (block, third octet)
    # -> the /24's first slot (unused /24s share a last, empty one), slot -> rank (or -1).
    sixteens, twenty_fours = np.unique(distinct >> 16), np.unique(distinct >> 8)
    width = np.int32 if twenty_fours.size < (1 << 22) else np.int64
    block_of_16 = np.full((1 << 16) + 1, -1, dtype=np.int32)  # + one for every address not IPv4-mapped
    block_of_16[sixteens] = np.arange(sixteens.size, dtype=np.int32)
    slot_of_24 = np.full(sixteens.size * 256, twenty_fours.size * 256, dtype=width)
    slot_of_24[block_of_16[twenty_fours >> 8] * 256 + (twenty_fours & 255)] = np.arange(twenty_fours.size) * 256
    rank_of_slot = np.full((twenty_fours.size + 1) * 256, -1, dtype=np.int32)
    rank_of_slot[np.searchsorted(twenty_fours, distinct >> 8) * 256 + (distinct & 255)] = np.arange(
        distinct.size, dtype=np.int32
    )
    v4_ranks = rank_of_slot[
        slot_of_24[block_of_16[addresses >> 16] * 256 + ((addresses >> 8) & 255)] + (addresses & 255)
    ]
    is_v6 = (assignments["family"] == "v6").to_numpy()
    range_starts, range_ends, v6 = _resolve_v6(
        assignments.filter(is_v6)
        .select("key", "prefix_len", "valid_from", "valid_to")
        .with_columns(user_index=pl.Series(user_index[is_v6])),
        epoch_s,
    )
    grid = TimeGrid.for_days(
        bounds, _bucket_hours(bounds.size - 1, distinct.size + range_starts.size, max_bucket_cells)
    )
    v4_pieces = cut_pieces(
        v4_ranks.astype(np.int64),
        seconds_since(v4["valid_from"], epoch_s),
        seconds_since(v4["valid_to"], epoch_s),
        user_index[is_v4],
        int(distinct.size),
        grid,
    )
    v6_pieces = cut_pieces(
        v6["rid"].to_numpy(),
        v6["from"].to_numpy(),
        v6["to"].to_numpy(),
        v6["user"].to_numpy(),
        int(range_starts.size),
        grid,
    )
    user_day_user, user_day_day, (v4_user_day, v6_user_day) = number_user_days(
        users.height, grid.days, [v4_pieces, v6_pieces]
    )
    # Computed once here rather than raced for by the threads that share the lookup.
    _ = grid._padded_hours, grid._padded_buckets
    return AssignmentLookup(
        epoch_s,
        grid,
        index_cells(v4_pieces, v4_user_day, grid, mapper),
        block_of_16,
        slot_of_24,
        rank_of_slot,
        RangeIndex.over(range_starts, range_ends),
        index_cells(v6_pieces, v6_user_day, grid, mapper),
        users,
        user_day_user.astype(np.uint32),
        user_day_day.astype(np.int32),
    )
