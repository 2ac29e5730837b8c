"""Attribution at scale: flows x address assignments by sort-merge on one packed 64-bit key.

Each side of a flow (source = the user sent it, IN; destination = the user received it, OUT)
becomes key = (address id << 32) | second, where the address id is the IPv4 address itself or,
for IPv6, the id of the elementary range of delegated prefixes that holds the address's upper
64 bits. Sessions are cut at local midnights into pieces, one per (session, day). Sorting the
keys puts every piece's flows in one contiguous run, so a piece's volume is the difference of
two prefix sums at two binary-searched positions: no per-flow lookup and no hash join, and any
chunk of flows can be processed on its own (sums add up), which bounds memory.

Sessions on one address never overlap (the assignment step resolves conflicts); among nested
IPv6 prefixes the longest prefix with a session at that moment wins, resolved once per range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from transforms.addresses import V4_MAPPED

U32 = np.uint64(32)
MASK32 = np.uint64(0xFFFF_FFFF)
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class SessionTable:
    """Non-overlapping session pieces of one key space, sorted by (id, start): [start, end) seconds."""

    ids: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    user: np.ndarray
    day: np.ndarray

    # Cached: every chunk searches them (frozen dataclasses allow cached_property's own slot).
    @cached_property
    def start_keys(self) -> np.ndarray:
        return (self.ids << U32) | self.start_s

    @cached_property
    def end_keys(self) -> np.ndarray:
        return (self.ids << U32) | self.end_s


@dataclass(frozen=True)
class AssignmentLookup:
    """Everything attribution needs, as numpy arrays; times are seconds since `epoch_s`."""

    epoch_s: int
    day_starts: np.ndarray  # local midnights (seconds since epoch), one more than the days
    v4: SessionTable
    v4_blocks: np.ndarray  # bool per /16: does any IPv4 session lie in it
    v6_range_starts: np.ndarray  # first /64 (upper half) of each elementary range, sorted
    v6_range_ends: np.ndarray  # last /64 of each range, inclusive
    v6: SessionTable
    users: pl.DataFrame  # user_index -> user_key, service, customer_type

    @property
    def days(self) -> int:
        return int(self.day_starts.size - 1)

    @cached_property
    def hour_slots(self) -> HourSlots:
        return HourSlots.for_days(self.day_starts)


def seconds_since(ts: pl.Series, epoch_s: int) -> np.ndarray:
    """Whole seconds of UTC timestamps since epoch_s, clipped to 32 bits."""
    millis = ts.dt.epoch("ms").to_numpy()
    values = millis // 1000 - epoch_s
    np.clip(values, 0, (1 << 32) - 1, out=values)
    return values.view(np.uint64)


def _pieces(
    ids: np.ndarray, start: np.ndarray, end: np.ndarray, user: np.ndarray, day_starts: np.ndarray
) -> SessionTable:
    """Sessions cut at day boundaries; pieces outside the days are dropped."""
    first = np.searchsorted(day_starts, start, side="right") - 1
    last = np.searchsorted(day_starts, np.maximum(end, start + np.uint64(1)) - np.uint64(1), side="right") - 1
    first = np.clip(first, 0, day_starts.size - 2)
    last = np.clip(last, -1, day_starts.size - 2)
    count = np.maximum(last - first + 1, 0)
    rows = np.repeat(np.arange(ids.size), count)
    day = np.repeat(first, count) + (np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count))
    piece_start = np.maximum(start[rows], day_starts[day])
    piece_end = np.minimum(end[rows], day_starts[day + 1])
    keep = piece_end > piece_start
    rows, day, piece_start, piece_end = rows[keep], day[keep], piece_start[keep], piece_end[keep]
    order = np.lexsort((piece_start, ids[rows]))
    return SessionTable(
        ids[rows][order].astype(np.uint64),
        piece_start[order].astype(np.uint64),
        piece_end[order].astype(np.uint64),
        user[rows][order].astype(np.int64),
        day[order].astype(np.int64),
    )


def _resolve_v6(v6: pl.DataFrame, epoch_s: int, day_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, SessionTable]:
    """Elementary ranges of the /64 line and their session pieces, longest prefix winning where nested."""
    empty = np.zeros(0, dtype=np.uint64)
    if v6.is_empty():
        return empty, empty, _pieces(empty, empty, empty, np.zeros(0, dtype=np.int64), day_starts)
    length = v6["prefix_len"].to_numpy().astype(np.int64)
    start = v6["key"].to_numpy().astype(np.uint64)
    span = np.where(
        length >= 64, np.uint64(0), (np.uint64(1) << (64 - np.minimum(length, 63)).astype(np.uint64)) - np.uint64(1)
    )
    end = start + span
    t_from = seconds_since(v6["valid_from"], epoch_s)
    t_to = seconds_since(v6["valid_to"], epoch_s)
    user = v6["user_index"].to_numpy().astype(np.int64)
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
        {"rid": rid.astype(np.int64), "len": length[rows], "from": t_from[rows], "to": t_to[rows], "user": user[rows]}
    )
    keep = np.unique(rid)  # ranges in the gaps between prefixes are nobody's
    nested = table.group_by("rid").agg(pl.col("len").n_unique().alias("n")).filter(pl.col("n") > 1)["rid"]
    resolved = table.filter(~pl.col("rid").is_in(nested.implode())).select("rid", "from", "to", "user")
    if nested.len():
        timeline = _longest_prefix_timeline(table.filter(pl.col("rid").is_in(nested.implode())))
        resolved = pl.concat([resolved, timeline.cast(resolved.schema)])  # type: ignore[arg-type]
    dense = np.searchsorted(keep, resolved["rid"].to_numpy()).astype(np.uint64)
    pieces = _pieces(
        dense, resolved["from"].to_numpy(), resolved["to"].to_numpy(), resolved["user"].to_numpy(), day_starts
    )
    return range_starts[keep], range_ends[keep], pieces


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
    return pl.DataFrame(
        out, schema={"rid": pl.Int64, "from": pl.UInt64, "to": pl.UInt64, "user": pl.Int64}, orient="row"
    )


def build_lookup(assignments: pl.DataFrame, epoch_s: int, day_starts_s: list[int] | None = None) -> AssignmentLookup:
    """Lookup tables from assignment rows (user_key, service, customer_type, family, key, prefix_len,
    valid_from, valid_to). `epoch_s` is the time origin in epoch seconds; `day_starts_s` are the
    local midnights (epoch seconds) that cut sessions into days (default: one day, all time)."""
    users = (
        assignments.select("user_key", "service", "customer_type")
        .unique(maintain_order=True)
        .with_row_index("user_index")
    )
    indexed = assignments.join(users, on=["user_key", "service", "customer_type"], how="left", nulls_equal=True)
    bounds = np.array([s - epoch_s for s in day_starts_s] if day_starts_s else [0, (1 << 32) - 1], dtype=np.uint64)
    v4 = indexed.filter(pl.col("family") == "v4")
    addresses = v4["key"].to_numpy().astype(np.uint64) & MASK32
    v4_table = _pieces(
        addresses,
        seconds_since(v4["valid_from"], epoch_s),
        seconds_since(v4["valid_to"], epoch_s),
        v4["user_index"].to_numpy().astype(np.int64),
        bounds,
    )
    blocks = np.zeros(1 << 16, dtype=bool)
    blocks[(addresses >> np.uint64(16)).astype(np.int64)] = True
    starts, ends, v6_table = _resolve_v6(indexed.filter(pl.col("family") == "v6"), epoch_s, bounds)
    lookup = AssignmentLookup(epoch_s, bounds, v4_table, blocks, starts, ends, v6_table, users)
    # Computed once here rather than raced for by the threads that share the lookup.
    _ = lookup.hour_slots, v4_table.start_keys, v4_table.end_keys, v6_table.start_keys, v6_table.end_keys
    return lookup


@dataclass
class Totals:
    """Running sums over any number of flow chunks: per session piece, per (day, hour), per port-hour."""

    v4_in: np.ndarray
    v4_out: np.ndarray
    v6_in: np.ndarray
    v6_out: np.ndarray
    hour_in: np.ndarray
    hour_out: np.ndarray
    hour_all: np.ndarray
    hour_both: np.ndarray
    # Exported (sampled) packets per piece: how many samples each volume estimate rests on.
    v4_in_packets: np.ndarray
    v4_out_packets: np.ndarray
    v6_in_packets: np.ndarray
    v6_out_packets: np.ndarray
    ports: list[pl.DataFrame] = field(default_factory=list)
    flows: int = 0

    @classmethod
    def empty(cls, lookup: AssignmentLookup) -> Totals:
        hours = lookup.days * 24 + 1  # the last slot holds flows outside the days

        def zeros(n: int) -> np.ndarray:
            return np.zeros(n, dtype=np.uint64)

        v4, v6 = lookup.v4.ids.size, lookup.v6.ids.size
        return cls(
            zeros(v4),
            zeros(v4),
            zeros(v6),
            zeros(v6),
            zeros(hours),
            zeros(hours),
            zeros(hours),
            zeros(hours),
            zeros(v4),
            zeros(v4),
            zeros(v6),
            zeros(v6),
        )


QUARTER_HOUR = 900


@dataclass(frozen=True)
class HourSlots:
    """Maps seconds since epoch to day * 24 + local hour through a quarter-hour table (every real
    time zone's local hours start on a UTC quarter hour); one extra slot for outside the days."""

    origin: int
    table: np.ndarray
    outside: int

    @classmethod
    def for_days(cls, day_starts: np.ndarray) -> HourSlots:
        days = day_starts.size - 1
        origin = int(day_starts[0])
        if int(day_starts[-1]) - origin > 400 * 86_400:  # the open-ended "day" used when no days are given
            return cls(origin, np.zeros(1, dtype=np.int64), 0)
        quarters = np.arange(origin, int(day_starts[-1]), QUARTER_HOUR, dtype=np.int64)
        day = np.searchsorted(day_starts.astype(np.int64), quarters, side="right") - 1
        hour = np.minimum((quarters - day_starts.astype(np.int64)[day]) // SECONDS_PER_HOUR, 23)
        return cls(origin, (day * 24 + hour).astype(np.int64), days * 24)

    def __call__(self, seconds: np.ndarray) -> np.ndarray:
        if self.table.size == 1:
            return np.zeros(seconds.size, dtype=np.int64)
        index = (seconds.astype(np.int64) - self.origin) // QUARTER_HOUR
        inside = (index >= 0) & (index < self.table.size)
        return np.where(inside, self.table[np.clip(index, 0, self.table.size - 1)], self.outside)


def _match_side(
    ids: np.ndarray, seconds: np.ndarray, rows: np.ndarray, table: SessionTable
) -> tuple[np.ndarray, np.ndarray]:
    """(matched flow rows, their piece indices), ordered by piece."""
    if table.ids.size == 0 or rows.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Sorted keys make the search walk the pieces in order (cache-friendly) and put each piece's
    # flows in one run; the cost is per flow of the chunk, whatever the number of pieces.
    ordered = pl.DataFrame({"k": (ids[rows] << U32) | seconds[rows], "r": rows}).sort("k")
    keys = ordered["k"].to_numpy()
    piece = np.searchsorted(table.start_keys, keys, side="right").astype(np.int64) - 1
    hit = (piece >= 0) & (keys < table.end_keys[np.maximum(piece, 0)])
    return ordered["r"].to_numpy()[hit], piece[hit]


def _sum_runs(piece: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct pieces, summed values) of values grouped by runs of equal, sorted piece indices."""
    if piece.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    starts = np.flatnonzero(np.concatenate([[True], piece[1:] != piece[:-1]]))
    return piece[starts], np.add.reduceat(values, starts)


def _ids(
    flows: pl.DataFrame, side: str, lookup: AssignmentLookup
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(v4 ids, v4 candidate rows, v6 range ids, v6 candidate rows) of one side."""
    hi = flows[f"{side}_hi"].to_numpy()
    lo = flows[f"{side}_lo"].to_numpy()
    address = lo & MASK32
    is_v4 = (hi == 0) & ((lo & ~MASK32) == np.uint64(V4_MAPPED))
    v4_rows = np.flatnonzero(is_v4 & lookup.v4_blocks[(address >> np.uint64(16)).astype(np.int64)])
    v6_ids = np.zeros(hi.size, dtype=np.uint64)
    v6_rows = np.zeros(0, dtype=np.int64)
    if lookup.v6_range_starts.size:
        rows = np.flatnonzero(~is_v4)
        pos = np.searchsorted(lookup.v6_range_starts, hi[rows], side="right") - 1
        inside = (pos >= 0) & (hi[rows] <= lookup.v6_range_ends[np.maximum(pos, 0)])
        v6_rows = rows[inside]
        v6_ids[v6_rows] = pos[inside].astype(np.uint64)
    return address, v4_rows, v6_ids, v6_rows


@dataclass(frozen=True)
class ChunkTotals:
    """One chunk's sums: sparse (piece index, bytes) per key space and direction, dense per hour
    slot, and the chunk's port-hour partial. Its size follows the chunk, not the week's sessions."""

    pieces: dict[str, tuple[np.ndarray, np.ndarray]]
    hour_in: np.ndarray
    hour_out: np.ndarray
    hour_all: np.ndarray
    hour_both: np.ndarray
    ports: pl.DataFrame
    flows: int


def attribute_chunk(flows: pl.DataFrame, lookup: AssignmentLookup) -> ChunkTotals:
    """Sums of a chunk of flows (first_ts, src_/dst_ hi/lo, est_bytes, protocol, src_port, dst_port,
    optionally packets: the exported, sampled count) per session piece and direction, per hour slot
    and per (protocol, lower port, hour slot)."""
    seconds = seconds_since(flows["first_ts"], lookup.epoch_s)
    est = flows["est_bytes"].to_numpy().astype(np.uint64, copy=False)
    packets = (
        flows["packets"].to_numpy().astype(np.uint64, copy=False)
        if "packets" in flows.columns
        else np.zeros(flows.height, dtype=np.uint64)
    )
    hours = lookup.days * 24 + 1  # the last slot holds flows outside the days
    slots = lookup.hour_slots(seconds)

    pieces: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    matched: dict[str, np.ndarray] = {}
    for side, direction in (("src", "in"), ("dst", "out")):
        v4_ids, v4_rows, v6_ids, v6_rows = _ids(flows, side, lookup)
        hits = []
        for family, ids, rows, table in (("v4", v4_ids, v4_rows, lookup.v4), ("v6", v6_ids, v6_rows, lookup.v6)):
            matched_rows, piece = _match_side(ids, seconds, rows, table)
            pieces[f"{family}_{direction}"] = _sum_runs(piece, est[matched_rows])
            pieces[f"{family}_{direction}_packets"] = _sum_runs(piece, packets[matched_rows])
            hits.append(matched_rows)
        matched[direction] = np.concatenate(hits)
    # One pass sums every hour slot by whether the flow matched a user on its source (1) and on
    # its destination (2) side: a flow between two users is IN for one and OUT for the other,
    # and knowing which matched both gives the unattributed volume exactly.
    category = slots * 4
    category[matched["in"]] += 1
    category[matched["out"]] += 2
    per_hour = np.bincount(category, weights=est, minlength=hours * 4).astype(np.uint64).reshape(hours, 4)
    # One packed key per flow: protocol | has port | lower port | hour slot.
    protocol = flows["protocol"].to_numpy().astype(np.uint64)
    lower = np.minimum(flows["src_port"].to_numpy(), flows["dst_port"].to_numpy()).astype(np.uint64)
    has_port = (protocol == 6) | (protocol == 17)
    key = (
        (protocol << np.uint64(40))
        | (has_port.astype(np.uint64) << U32)
        | (np.where(has_port, lower, 0) << np.uint64(16))
    )
    key |= slots.astype(np.uint64)
    return ChunkTotals(
        pieces,
        per_hour[:, 1] + per_hour[:, 3],
        per_hour[:, 2] + per_hour[:, 3],
        per_hour.sum(axis=1, dtype=np.uint64),
        per_hour[:, 3].copy(),
        pl.DataFrame({"key": key, "bytes": est}).group_by("key").agg(pl.col("bytes").sum()),
        flows.height,
    )


def add_chunk(totals: Totals, flows: pl.DataFrame, lookup: AssignmentLookup) -> None:
    """Adds a chunk of flows (first_ts, src_/dst_ hi/lo, est_bytes, protocol, src_port, dst_port) to the totals."""
    accumulate(totals, attribute_chunk(flows, lookup))


def user_day_volumes(lookup: AssignmentLookup, totals: Totals) -> pl.DataFrame:
    """Rows (user_index, day_index, in_bytes, out_bytes, in_packets, out_packets) with traffic;
    packets are the exported (sampled) packets the byte estimates rest on."""
    frame = pl.DataFrame(
        {
            "user_index": np.concatenate([lookup.v4.user, lookup.v6.user]).astype(np.uint32),
            "day_index": np.concatenate([lookup.v4.day, lookup.v6.day]).astype(np.int32),
            "in_bytes": np.concatenate([totals.v4_in, totals.v6_in]),
            "out_bytes": np.concatenate([totals.v4_out, totals.v6_out]),
            "in_packets": np.concatenate([totals.v4_in_packets, totals.v6_in_packets]),
            "out_packets": np.concatenate([totals.v4_out_packets, totals.v6_out_packets]),
        }
    )
    return (
        frame.group_by("user_index", "day_index")
        .agg(pl.col("in_bytes", "out_bytes", "in_packets", "out_packets").sum())
        .filter((pl.col("in_bytes") > 0) | (pl.col("out_bytes") > 0))
    )


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
    """Rows (protocol, port, day_index, hour, bytes) of the days; port is null for protocols without ports."""
    slots = lookup.days * 24
    if not totals.ports:
        return pl.DataFrame(
            schema={
                "protocol": pl.UInt8,
                "port": pl.UInt16,
                "day_index": pl.Int64,
                "hour": pl.Int64,
                "bytes": pl.UInt64,
            }
        )
    merged = pl.concat(totals.ports).group_by("key").agg(pl.col("bytes").sum())
    key = merged["key"].to_numpy()
    slot = (key & np.uint64(0xFFFF)).astype(np.int64)
    has_port = ((key >> U32) & np.uint64(1)).astype(bool)
    frame = pl.DataFrame(
        {
            "protocol": (key >> np.uint64(40)).astype(np.uint8),
            "port": pl.Series(((key >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.uint16)),
            "has_port": has_port,
            "day_index": slot // 24,
            "hour": slot % 24,
            "bytes": merged["bytes"],
            "slot": slot,
        }
    )
    return frame.filter(pl.col("slot") < slots).select(
        "protocol", pl.when(pl.col("has_port")).then(pl.col("port")).alias("port"), "day_index", "hour", "bytes"
    )


def accumulate(into: Totals, part: ChunkTotals) -> Totals:
    """Adds a chunk's sums into running totals (in place) and returns them; the chunk can go."""
    for name, (pieces, sums) in part.pieces.items():
        getattr(into, name)[pieces] += sums  # pieces are distinct within a chunk
    for name in ("hour_in", "hour_out", "hour_all", "hour_both"):
        getattr(into, name)[:] += getattr(part, name)
    into.ports.append(part.ports)
    if len(into.ports) > 64:  # keep the port-hour partials small as chunks add up
        into.ports = [pl.concat(into.ports).group_by("key").agg(pl.col("bytes").sum())]
    into.flows += part.flows
    return into
