"""Time grid, session pieces cut at local midnights, and the (bucket, rank) cell index."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from transforms.mapping import Mapper

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


def index_cells(pieces: Pieces, user_day: np.ndarray, grid: TimeGrid, mapper: Mapper = map) -> SessionTable:
    """The pieces indexed per (bucket, rank) of the grid: see SessionTable. Days are filled through
    `mapper` (they fill disjoint slices)."""
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

    # Days fill disjoint slices (and numpy releases the GIL in its array loops).
    list(mapper(fill, range(grid.days)))
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
