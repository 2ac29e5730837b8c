"""Attribution at scale: flows x address assignments by direct indexing, with no sort and no join.

Sessions are cut at local midnights into pieces, one per (session, day), ordered by (day, rank,
start) and packed into one 64-bit key each. The rank is the dense index of the session's IPv4
address or, for IPv6, of the elementary range of delegated prefixes that holds the address's upper
64 bits. A flow side finds its user-day by array lookups, one vectorised pass each over the chunk:
its address's rank (three small tables for IPv4; for IPv6 a bucket table over the prefixes' span),
its time's bucket (an hour or a few, from a quarter-hour table), then one int32 cell per (bucket,
rank) that names the user-day of the one piece holding the whole bucket, or the first of the pieces
to step through when an address changed hands within it. Volumes are summed per user-day (one
number per user and local day, shared by IPv4 and IPv6) by one bincount over the user-days the
chunk touched. A chunk costs O(chunk) whatever the week's sessions, and chunks are independent
(sums add up), which bounds memory.

Sessions on one address never overlap (the assignment step resolves conflicts); among nested
IPv6 prefixes the longest prefix with a session at that moment wins, resolved once per range.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

MASK32 = np.uint64(0xFFFF_FFFF)
LOW32 = np.int64(0xFFFF_FFFF)  # the start seconds of a packed piece key
V4_MAPPED_HIGH = 0xFFFF  # the upper half of ::ffff:a.b.c.d's low 64 bits
SECONDS_PER_HOUR = 3600
QUARTER_HOUR = 900
# Buckets are as short as this many (bucket x rank) cells allow: shorter buckets mean fewer
# pieces per cell when addresses churn, at 4 bytes per cell (512 MB at most).
MAX_BUCKET_CELLS = 1 << 27
BUCKET_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)
# bincount sums in float64, exact while a chunk's total stays below 2^53.
EXACT_FLOAT_SUM = float(1 << 52)


@dataclass(frozen=True)
class TimeGrid:
    """Maps seconds since the epoch to day * 24 + local hour and to a time bucket (a few local
    hours within one day) through quarter-hour tables: every real time zone's local hours start on
    a UTC quarter hour. Times outside the days get the hour slot `outside` and the bucket after the last."""

    origin: int
    hour_of_quarter: np.ndarray
    bucket_of_quarter: np.ndarray
    bucket_starts: np.ndarray  # seconds since the epoch, one more than the buckets
    bucket_day: np.ndarray
    outside: int
    day_starts: np.ndarray  # seconds since the epoch, one more than the days

    @classmethod
    def for_days(cls, day_starts: np.ndarray, bucket_hours: int) -> TimeGrid:
        days = day_starts.size - 1
        starts = day_starts.astype(np.int64)
        origin = int(starts[0])
        if int(starts[-1]) - origin > 400 * 86_400:  # the open-ended "day" used when no days are given
            one = np.zeros(1, dtype=np.int64)
            return cls(origin, one, one, starts.copy(), one, 0, starts.copy())
        if np.any((starts - origin) % QUARTER_HOUR):
            raise ValueError("days must start on quarter hours of one another (every real time zone's midnights do)")
        offsets = np.arange(0, 24, bucket_hours, dtype=np.int64) * SECONDS_PER_HOUR
        cuts = np.minimum(starts[:-1, None] + offsets[None, :], starts[1:, None])
        bucket_starts = np.unique(np.concatenate([cuts.ravel(), starts[-1:]]))
        bucket_day = np.searchsorted(starts, bucket_starts[:-1], side="right") - 1
        quarters = np.arange(origin, int(starts[-1]), QUARTER_HOUR, dtype=np.int64)
        day = np.searchsorted(starts, quarters, side="right") - 1
        hour = np.minimum((quarters - starts[day]) // SECONDS_PER_HOUR, 23)
        bucket = np.searchsorted(bucket_starts, quarters, side="right") - 1
        return cls(origin, day * 24 + hour, bucket, bucket_starts, bucket_day, days * 24, starts.copy())

    @property
    def days(self) -> int:
        return int(self.day_starts.size - 1)

    def day_of(self, seconds: np.ndarray) -> np.ndarray:
        """The day (int64) of each time in seconds since the epoch; times before the first day get
        the first, times after the last the last."""
        if self.hour_of_quarter.size == 1:
            return np.zeros(seconds.size, dtype=np.int64)
        quarter = (seconds - self.origin) // QUARTER_HOUR
        np.clip(quarter, 0, self.hour_of_quarter.size - 1, out=quarter)
        return self._day_of_quarter[quarter]

    @property
    def buckets(self) -> int:
        return int(self.bucket_starts.size - 1)

    def locate(self, ticks: np.ndarray, per_second: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(hour slot, bucket) per time in int64 ticks (per_second to a second) since the epoch, as
        int32; outside the days, the slot `outside` and the bucket after the last (`buckets`)."""
        if self.hour_of_quarter.size == 1:
            return np.zeros(ticks.size, dtype=np.int32), np.zeros(ticks.size, dtype=np.int32)
        # One division and two lookups; the tables carry an "outside" entry at either end.
        index = (ticks - self.origin * per_second) // (QUARTER_HOUR * per_second) + 1
        np.clip(index, 0, self.hour_of_quarter.size + 1, out=index)
        return self._padded_hours[index], self._padded_buckets[index]

    @cached_property
    def _padded_hours(self) -> np.ndarray:
        return np.concatenate([[self.outside], self.hour_of_quarter, [self.outside]]).astype(np.int32)

    @cached_property
    def _day_of_quarter(self) -> np.ndarray:
        return self.hour_of_quarter // 24

    @cached_property
    def _padded_buckets(self) -> np.ndarray:
        return np.concatenate([[self.buckets], self.bucket_of_quarter, [self.buckets]]).astype(np.int32)


NO_PIECE, SOME_PIECES = -1, -2
TICKS_PER_SECOND = {"ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
LAST_SECOND = (1 << 32) - 1


@dataclass(frozen=True)
class SessionTable:
    """Non-overlapping session pieces of one key space, ordered by (day, rank, start): [start, end)
    whole seconds since the epoch, and each piece's user-day. `key` packs
    (day * ranks + rank) << 32 | start, ascending, with one sentinel after the last piece. For cell
    i = bucket * ranks + rank, `cell[i]` is the user-day of the one piece that holds the whole
    bucket, NO_PIECE, or SOME_PIECES - p where the pieces overlapping the bucket start at piece p.
    `cell` has one more bucket, of NO_PIECE, for times outside the days; `bucket_offset` is each
    bucket's day * ranks."""

    key: np.ndarray
    end_s: np.ndarray
    user_day: np.ndarray
    ranks: int
    cell: np.ndarray
    bucket_offset: np.ndarray

    @property
    def size(self) -> int:
        return int(self.end_s.size)


def seconds_since(ts: pl.Series, epoch_s: int) -> np.ndarray:
    """Whole seconds (int64) of UTC timestamps since epoch_s, clipped to [0, 2^32)."""
    values = ts.dt.epoch("s").to_numpy() - epoch_s
    np.clip(values, 0, LAST_SECOND, out=values)
    return values


@dataclass(frozen=True)
class Pieces:
    """Sessions cut at local midnights: one row per (session, day) in (day, rank, start) order;
    `key` is (day * ranks + rank) << 32 | start."""

    key: np.ndarray
    day: np.ndarray
    end: np.ndarray
    user: np.ndarray
    ranks: int


def cut_pieces(
    rank: np.ndarray, start: np.ndarray, end: np.ndarray, user: np.ndarray, ranks: int, grid: TimeGrid
) -> Pieces:
    """Sessions (int64 arrays, [start, end) seconds) cut at the grid's days into pieces; pieces
    outside the days are dropped."""
    if grid.days * ranks >= 1 << 31:
        raise ValueError(f"{ranks} addresses over {grid.days} days do not fit the 31 bits of a packed piece key")
    # In (rank, start) order, each day's pieces are its sessions in the same order: one pass per
    # day picks them, with no sort of the pieces. Sessions often arrive in that order already.
    session_key = rank << 32
    session_key |= start
    if session_key.size > 1 and not bool(np.all(session_key[1:] >= session_key[:-1])):
        order = pl.Series(session_key).arg_sort().to_numpy()
        session_key, end, user = session_key[order], end[order], user[order]
        start = session_key & LOW32
    first = grid.day_of(start)
    last = grid.day_of(np.maximum(end, start + 1) - 1)
    # Each day's pieces are written straight into arrays sized for every (session, day) pair, and
    # the arrays cut to what was kept: a concatenation would copy them all again.
    pairs = int(np.sum(last - first)) + last.size  # day_of keeps both within the days
    keys, ends = np.empty(pairs, dtype=np.int64), np.empty(pairs, dtype=np.int64)
    users, days = np.empty(pairs, dtype=user.dtype), np.empty(pairs, dtype=np.int16)
    filled = 0
    for day in range(grid.days):
        opens, closes = max(int(grid.day_starts[day]), 0), int(grid.day_starts[day + 1])
        rows = np.flatnonzero((first <= day) & (last >= day))
        piece_end = np.minimum(end[rows], closes)
        key = session_key[rows]
        # A piece starts at its session's start or at midnight: the low 32 bits of the key.
        np.maximum(key, (key & ~LOW32) | opens, out=key)
        key += (day * ranks) << 32
        kept = np.flatnonzero(piece_end > (key & LOW32))  # sessions before or after the days
        upto = filled + kept.size
        np.take(key, kept, out=keys[filled:upto])
        np.take(piece_end, kept, out=ends[filled:upto])
        np.take(user, rows[kept], out=users[filled:upto])
        days[filled:upto] = day
        filled = upto
    return Pieces(keys[:filled], days[:filled], ends[:filled], users[:filled], ranks)


def number_user_days(
    users: int, days: int, pieces: list[Pieces], dense_limit: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(user, day) of every user-day, in (day, user) order, and each piece's user-day (int64): one
    per user and day with a piece, whatever the key space: traffic is summed per user-day."""
    keys = [p.day.astype(np.int64) * users + p.user for p in pieces]
    every = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    # A dense (day, user) table when it is small next to the pieces, else a sort.
    if days * users <= max(4 * every.size, dense_limit):
        present = np.zeros(days * users, dtype=bool)
        present[every] = True
        distinct = np.flatnonzero(present)
        dense = np.cumsum(present, dtype=np.int64) - 1
        numbered = [dense[k] for k in keys]
    else:
        distinct = np.unique(every)
        numbered = [np.searchsorted(distinct, k) for k in keys]
    return distinct % max(users, 1), distinct // max(users, 1), numbered


def index_cells(pieces: Pieces, user_day: np.ndarray, grid: TimeGrid) -> SessionTable:
    """The pieces indexed per (bucket, rank) of the grid: see SessionTable."""
    ranks = pieces.ranks
    piece_rank = (pieces.key >> 32) - pieces.day.astype(np.int64) * ranks
    piece_start = pieces.key & LOW32
    piece_end = pieces.end
    # Pieces overlapping each (bucket, rank): from the first ending after the bucket's start to the
    # first starting at or after its end. Both only move forward from one bucket of a day to the
    # next, so two pointers per rank walk each day's pieces once instead of searching per bucket.
    day_first = np.searchsorted(pieces.day, np.arange(grid.days + 1), side="left")
    width = np.int32 if piece_end.size < (1 << 31) + SOME_PIECES else np.int64
    cell = np.full((grid.buckets + 1) * ranks, NO_PIECE, dtype=width)  # + the "outside" bucket
    every_rank = np.arange(ranks)
    last_piece = max(piece_end.size - 1, 0)
    user_day_or_none = np.append(user_day, NO_PIECE).astype(width)

    def fill(one_day: int) -> None:
        a, b = int(day_first[one_day]), int(day_first[one_day + 1])
        head = a + np.searchsorted(piece_rank[a:b], every_rank, side="left")
        limit = a + np.searchsorted(piece_rank[a:b], every_rank, side="right")
        stop = head.copy()
        for bucket in np.flatnonzero(grid.bucket_day == one_day):
            opens, closes = int(grid.bucket_starts[bucket]), int(grid.bucket_starts[bucket + 1])
            _advance(head, limit, piece_end, opens)
            _advance(stop, limit, piece_start, closes - 1)
            # The common case gets one lookup: one piece that holds the whole bucket.
            safe = np.minimum(head, last_piece)
            whole = (stop - head == 1) & (piece_start[safe] <= opens) & (piece_end[safe] >= closes)
            cell[bucket * ranks : (bucket + 1) * ranks] = np.where(
                whole, user_day_or_none[safe], np.where(stop == head, NO_PIECE, SOME_PIECES - head)
            )

    # Days fill disjoint slices, and numpy releases the GIL in its array loops.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(fill, range(grid.days)))
    key = np.append(pieces.key, np.iinfo(np.int64).max)  # the sentinel stops every step
    return SessionTable(key, piece_end, user_day.astype(width), ranks, cell, (grid.bucket_day * ranks).astype(np.int64))


def _advance(pointer: np.ndarray, limit: int | np.ndarray, values: np.ndarray, bound: int | np.ndarray) -> None:
    """Moves each pointer (in place) past the values <= its bound (one for all, or one each),
    stopping at its limit (one for all, or one each); each step only looks at the pointers still
    moving."""
    bounds = np.broadcast_to(bound, pointer.shape)
    limits = np.broadcast_to(limit, pointer.shape)
    moving = np.flatnonzero(pointer < limits)
    while moving.size:
        moving = moving[values[pointer[moving]] <= bounds[moving]]
        pointer[moving] += 1
        moving = moving[pointer[moving] < limits[moving]]


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
) -> AssignmentLookup:
    """Lookup tables from assignment rows (user_key, service, customer_type, family, key, prefix_len,
    valid_from, valid_to). `epoch_s` is the time origin in epoch seconds; `day_starts_s` are the
    local midnights (epoch seconds) that cut sessions into days (default: one day, all time);
    buckets are as short as `max_bucket_cells` (bucket x address rank) cells allow."""
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
        index_cells(v4_pieces, v4_user_day, grid),
        block_of_16,
        slot_of_24,
        rank_of_slot,
        RangeIndex.over(range_starts, range_ends),
        index_cells(v6_pieces, v6_user_day, grid),
        users,
        user_day_user.astype(np.uint32),
        user_day_day.astype(np.int32),
    )


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
