"""Compiled walks over nfcapd data blocks: V3 flow records to columns, and LZO1X decompression.

nfdump's V3 records are variable-length lists of extension elements, each with its own type and
length, so where a field sits is known only by walking the record; a record costs ~40 ns here
against ~2 us in a Python loop. numba compiles these once per machine (cached beside this file).
The element layouts are nfdump's (`src/lib/nfxV3.h`), little-endian as x86 collectors write them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit  # type: ignore[import-untyped]

V3_RECORD = 11
V3_HEADER = 12
EX_GENERIC_FLOW = 1
EX_IPV4_FLOW = 2
EX_IPV6_FLOW = 3
EX_COUNT_FLOW = 5
EX_SAMPLER_INFO = 18
# Columns of every V3 record that `RecordTable` holds, and their types. What few records have
# (a sampler id, reverse counts, damage) comes in sparse tables instead: writing a column for
# every record costs its memory's page faults even when nothing is in it.
RECORD_COLUMNS: dict[str, type] = {
    "first_ms": np.int64,
    "last_ms": np.int64,
    "packets": np.uint64,
    "bytes": np.uint64,
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "src_port": np.uint16,
    "dst_port": np.uint16,
    "protocol": np.uint8,
    "exporter_id": np.uint16,
    "flags": np.uint8,
    "problem": np.uint8,  # 0 fine; 1 an element overruns the record; 2 no generic flow element; 3 no addresses
}


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _u16(buf: Any, at: Any) -> Any:  # pragma: no cover
    return np.int64(buf[at]) | (np.int64(buf[at + 1]) << 8)


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _u32(buf: Any, at: Any) -> Any:  # pragma: no cover
    return _u16(buf, at) | (_u16(buf, at + 2) << 16)


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _u64(buf: Any, at: Any) -> Any:  # pragma: no cover
    low = np.uint64(_u32(buf, at))
    high = np.uint64(_u32(buf, at + 4))
    return low | (high << np.uint64(32))


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _walk(
    buf: Any,
    start: Any,
    end_of_block: Any,
    block: Any,
    row: Any,
    noted: Any,
    first_ms: Any,
    last_ms: Any,
    packets: Any,
    octets: Any,
    src_hi: Any,
    src_lo: Any,
    dst_hi: Any,
    dst_lo: Any,
    src_port: Any,
    dst_port: Any,
    protocol: Any,
    exporter_id: Any,
    flags: Any,
    problem: Any,
    sparse: Any,
    others: Any,
) -> Any:  # pragma: no cover
    v4_prefix = np.uint64(0xFFFF00000000)
    zero = np.uint64(0)
    kept = 0
    broken = -1
    capacity = first_ms.size
    at = start
    while at + 4 <= end_of_block:
        kind = _u16(buf, at)
        size = _u16(buf, at + 2)
        if size < 4 or at + size > end_of_block:
            broken = at - start
            break
        if kind != V3_RECORD:
            if kept < others.shape[0]:
                others[kept, 0] = at
                others[kept, 1] = kind
                others[kept, 2] = size
                kept += 1
            at += size
            continue
        if row >= capacity:  # the table is full: the caller grows it and walks the block again
            return row, noted, kept, -2
        end = at + size
        first_ms[row] = 0
        last_ms[row] = 0
        packets[row] = zero
        octets[row] = zero
        src_hi[row] = zero
        src_lo[row] = zero
        dst_hi[row] = zero
        dst_lo[row] = zero
        src_port[row] = 0
        dst_port[row] = 0
        protocol[row] = 0
        exporter_id[row] = 0
        flags[row] = 0
        bad = 0
        chosen: Any = -1
        reverse_packets = zero
        reverse_octets = zero
        if size < V3_HEADER:
            bad = 1
        else:
            elements = _u16(buf, at + 4)
            exporter_id[row] = _u16(buf, at + 8)
            flags[row] = buf[at + 10]
            pos = at + V3_HEADER
            generic = False
            addressed = False
            for _ in range(elements):
                if pos + 4 > end:
                    bad = 1
                    break
                element = _u16(buf, pos)
                length = _u16(buf, pos + 2)
                if length < 4 or pos + length > end:
                    bad = 1
                    break
                if element == EX_GENERIC_FLOW and length >= 52:
                    generic = True
                    first_ms[row] = np.int64(_u64(buf, pos + 4))
                    last_ms[row] = np.int64(_u64(buf, pos + 12))
                    packets[row] = _u64(buf, pos + 28)
                    octets[row] = _u64(buf, pos + 36)
                    src_port[row] = _u16(buf, pos + 44)
                    dst_port[row] = _u16(buf, pos + 46)
                    protocol[row] = buf[pos + 48]
                elif element == EX_IPV4_FLOW and length >= 12:
                    addressed = True
                    src_lo[row] = v4_prefix | np.uint64(_u32(buf, pos + 4))
                    dst_lo[row] = v4_prefix | np.uint64(_u32(buf, pos + 8))
                elif element == EX_IPV6_FLOW and length >= 36:
                    addressed = True
                    src_hi[row] = _u64(buf, pos + 4)
                    src_lo[row] = _u64(buf, pos + 12)
                    dst_hi[row] = _u64(buf, pos + 20)
                    dst_lo[row] = _u64(buf, pos + 28)
                elif element == EX_COUNT_FLOW and length >= 28:
                    reverse_packets = _u64(buf, pos + 12)
                    reverse_octets = _u64(buf, pos + 20)
                elif element == EX_SAMPLER_INFO and length >= 8:
                    # nfdump 1.7.1 stores a 32-bit selector id, later releases a 64-bit one.
                    chosen = np.int64(_u64(buf, pos + 4)) if length >= 16 else _u32(buf, pos + 4)
                pos += length
            if bad == 0 and not generic:
                bad = 2
            elif bad == 0 and not addressed:
                bad = 3
        problem[row] = bad
        if bad != 0 or chosen >= 0 or reverse_packets != zero or reverse_octets != zero:
            sparse[noted, 0] = row
            sparse[noted, 1] = block
            sparse[noted, 2] = at - start
            sparse[noted, 3] = chosen
            sparse[noted, 4] = np.int64(reverse_packets)
            sparse[noted, 5] = np.int64(reverse_octets)
            noted += 1
        row += 1
        at = end
    if broken < 0 and at < end_of_block:
        broken = at - start
    return row, noted, kept, broken


SPARSE_COLUMNS = ("row", "block", "position", "selector", "reverse_packets", "reverse_bytes")


class RecordTable:
    """Columns of the V3 records of a file's blocks, filled block by block (`walk_block`): rows
    for `capacity` records, of which the first `rows` are filled, grown when a block holds more.
    Unfilled memory is never touched, so a capacity from the block headers costs nothing until
    used (and a header that lies about its record count costs a copy, not a failure)."""

    def __init__(self, capacity: int) -> None:
        capacity = max(capacity, 1)
        self.columns: dict[str, np.ndarray] = {
            name: np.empty(capacity, dtype=dtype) for name, dtype in RECORD_COLUMNS.items()
        }
        self.sparse = np.empty((capacity, len(SPARSE_COLUMNS)), dtype=np.int64)
        self.rows = 0
        self.noted = 0

    def walk_block(self, buf: np.ndarray, start: int, end: int, block: int) -> tuple[list[tuple[int, bytes]], int]:
        """Appends the V3 records of buf[start:end] (block number `block`); returns the other
        records as (type, bytes), and the offset in the block where its chain of records broke
        (-1 if it did not)."""
        others = np.empty(((end - start) // 4, 3), dtype=np.int64)  # a record takes 4 bytes at least
        while True:
            rows, noted, kept, broken = _walk(  # type: ignore[call-arg]
                buf, start, end, block, self.rows, self.noted, *self.columns.values(), self.sparse, others
            )
            if broken != -2:
                break
            self._grow(self.rows + (end - start) // 12 + 1)
        self.rows, self.noted = rows, noted
        found = [(int(kind), buf[at : at + size].tobytes()) for at, kind, size in others[:kept].tolist()]
        return found, int(broken)

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.sparse.shape[0])
        for name, values in self.columns.items():
            grown = np.empty(capacity, dtype=values.dtype)
            grown[: self.rows] = values[: self.rows]
            self.columns[name] = grown
        sparse = np.empty((capacity, self.sparse.shape[1]), dtype=np.int64)
        sparse[: self.noted] = self.sparse[: self.noted]
        self.sparse = sparse

    def filled(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(RECORD_COLUMNS of the records read; SPARSE_COLUMNS of those with a sampler id, reverse
        counts or damage, `selector` -1 where none)."""
        columns = {name: values[: self.rows] for name, values in self.columns.items()}
        notes = {name: self.sparse[: self.noted, index].copy() for index, name in enumerate(SPARSE_COLUMNS)}
        return columns, notes


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _lz4(src: Any, dst: Any) -> Any:  # pragma: no cover
    """LZ4 block decompression of src into dst: the output length, or -1 (input overrun), -2
    (output overrun), -3 (a match before the output's start)."""
    ip: Any = 0
    op: Any = 0
    n_in: Any = src.size
    n_out: Any = dst.size
    while ip < n_in:
        token = np.int64(src[ip])
        ip += 1
        literals = token >> 4
        if literals == 15:
            while True:
                if ip >= n_in:
                    return -1
                extra = np.int64(src[ip])
                ip += 1
                literals += extra
                if extra != 255:
                    break
        if ip + literals > n_in:
            return -1
        if op + literals > n_out:
            return -2
        for k in range(literals):
            dst[op + k] = src[ip + k]
        op += literals
        ip += literals
        if ip >= n_in:  # the last sequence has literals only
            return op
        if ip + 2 > n_in:
            return -1
        offset = np.int64(src[ip]) | (np.int64(src[ip + 1]) << 8)
        ip += 2
        length = token & 15
        if length == 15:
            while True:
                if ip >= n_in:
                    return -1
                extra = np.int64(src[ip])
                ip += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        match = op - offset
        if offset == 0 or match < 0:
            return -3
        if op + length > n_out:
            return -2
        for k in range(length):  # byte by byte: an overlapping match repeats what it has just written
            dst[op + k] = dst[match + k]
        op += length
    return op


def lz4_block_decompress(data: bytes | memoryview, out: np.ndarray) -> int | str:
    """LZ4-decompresses a block into `out`: the length written, or why it could not be."""
    size = int(_lz4(np.frombuffer(data, dtype=np.uint8), out))
    return size if size >= 0 else LZ4_ERRORS[size]


LZ4_ERRORS = {
    -1: "the compressed data ends inside a sequence",
    -2: "the data decompresses beyond the block size limit",
    -3: "a back-reference points before the block's start",
}


# Where a record's rate came from, as `scale_back` codes it.
RATE_NONE, RATE_SAMPLER, RATE_CONFIG, RATE_UNDIVIDED = 0, 1, 2, 3


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _scale_back(
    packets: Any,
    octets: Any,
    flags: Any,
    exporter_id: Any,
    exporter_rate: Any,
    special_rows: Any,
    special_rates: Any,
    collector_rate: Any,
    rate: Any,
    code: Any,
) -> None:  # pragma: no cover
    k = 0
    for row in range(packets.size):
        given = exporter_rate[exporter_id[row]]
        while k < special_rows.size and special_rows[k] < row:
            k += 1
        if k < special_rows.size and special_rows[k] == row and special_rates[k] > 0:
            given = special_rates[k]
        rate[row] = 0
        code[row] = RATE_NONE
        if flags[row] & 2 == 0:  # not scaled by nfcapd: raw counts, rate resolved later
            continue
        origin = RATE_SAMPLER
        if given == 0 and collector_rate > 0:
            given = collector_rate
            origin = RATE_CONFIG
        if given > 0 and packets[row] % given == 0 and octets[row] % given == 0:
            packets[row] //= given
            octets[row] //= given
            rate[row] = given
            code[row] = origin
        else:
            code[row] = RATE_UNDIVIDED + origin if given > 0 else RATE_UNDIVIDED


def scale_back(
    columns: dict[str, np.ndarray],
    selected: tuple[np.ndarray, np.ndarray],
    samplers: dict[tuple[int, int], int],
    collector_rate: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts nfcapd scaled (flag 2) divided in place by the rate it used: the sampler the record
    names (`selected`: rows in order, sampler ids), else its exporter's one sampler rate, else
    `collector_rate`. Returns (rate, code per record): RATE_SAMPLER / RATE_CONFIG where that rate
    divided the counts; RATE_UNDIVIDED plus the origin (or alone: no rate known) where the counts
    stay scaled; RATE_NONE for raw counts."""
    by_exporter: dict[int, set[int]] = {}
    for (exporter_id, _), value in samplers.items():
        by_exporter.setdefault(exporter_id, set()).add(value)
    exporter_rate = np.zeros(1 << 16, dtype=np.uint64)
    for exporter_id, values in by_exporter.items():
        if len(values) == 1 and 0 <= exporter_id < (1 << 16):
            exporter_rate[exporter_id] = next(iter(values))
    rows, sampler_ids = selected
    exporters_of_rows = columns["exporter_id"][rows].tolist()
    special = np.array(
        [samplers.get((e, s), 0) for e, s in zip(exporters_of_rows, sampler_ids.tolist(), strict=True)],
        dtype=np.uint64,
    )
    rate = np.empty(columns["packets"].size, dtype=np.uint64)
    code = np.empty(columns["packets"].size, dtype=np.int8)
    _scale_back(
        columns["packets"],
        columns["bytes"],
        columns["flags"],
        columns["exporter_id"],
        exporter_rate,
        rows.astype(np.int64),
        special,
        np.uint64(collector_rate or 0),
        rate,
        code,
    )  # type: ignore[call-arg]
    return rate, code


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _lzo1x(src: Any, dst: Any) -> Any:  # pragma: no cover
    """LZO1X decompression of src into dst; the output length, or -1 (input overrun), -2 (output
    overrun), -3 (a match before the output's start), -4 (bytes after the end marker)."""
    # Annotated Any for mypy only: numba infers the machine types.
    ip: Any = 0
    op: Any = 0
    n_in: Any = src.size
    n_out: Any = dst.size
    state: Any = 0
    nxt: Any = 0
    t: Any = 0
    m: Any = 0
    if n_in == 0:
        return -1
    first = True
    while True:
        # What to do this round: 0 read an instruction, 1 copy a literal run of t, 2 a match tail.
        mode = 0
        if first:
            first = False
            if src[0] > 17:
                t = np.int64(src[0]) - 17
                ip = 1
                if t < 4:
                    nxt = t
                    mode = 2
                else:
                    mode = 1
        if mode == 0:
            if ip >= n_in:
                return -1
            t = np.int64(src[ip])
            ip += 1
            if t < 16:
                if state == 0:
                    if t == 0:
                        while ip < n_in and src[ip] == 0:
                            t += 255
                            ip += 1
                        if ip >= n_in:
                            return -1
                        t += 15 + np.int64(src[ip])
                        ip += 1
                    t += 3
                    mode = 1
                elif state != 4:
                    nxt = t & 3
                    if ip >= n_in:
                        return -1
                    m = op - 1 - (t >> 2) - (np.int64(src[ip]) << 2)
                    ip += 1
                    if m < 0:
                        return -3
                    if op + 2 > n_out:
                        return -2
                    dst[op] = dst[m]
                    dst[op + 1] = dst[m + 1]
                    op += 2
                    mode = 2
                else:
                    nxt = t & 3
                    if ip >= n_in:
                        return -1
                    m = op - (1 + 0x0800) - (t >> 2) - (np.int64(src[ip]) << 2)
                    ip += 1
                    t = 3
                    mode = 3
            elif t >= 64:
                nxt = t & 3
                if ip >= n_in:
                    return -1
                m = op - 1 - ((t >> 2) & 7) - (np.int64(src[ip]) << 3)
                ip += 1
                t = (t >> 5) + 1
                mode = 3
            elif t >= 32:
                t = (t & 31) + 2
                if t == 2:
                    while ip < n_in and src[ip] == 0:
                        t += 255
                        ip += 1
                    if ip >= n_in:
                        return -1
                    t += 31 + np.int64(src[ip])
                    ip += 1
                if ip + 2 > n_in:
                    return -1
                word = np.int64(src[ip]) | (np.int64(src[ip + 1]) << 8)
                ip += 2
                m = op - 1 - (word >> 2)
                nxt = word & 3
                mode = 3
            else:
                m = op - ((t & 8) << 11)
                t = (t & 7) + 2
                if t == 2:
                    while ip < n_in and src[ip] == 0:
                        t += 255
                        ip += 1
                    if ip >= n_in:
                        return -1
                    t += 7 + np.int64(src[ip])
                    ip += 1
                if ip + 2 > n_in:
                    return -1
                word = np.int64(src[ip]) | (np.int64(src[ip + 1]) << 8)
                ip += 2
                m -= word >> 2
                nxt = word & 3
                if m == op:
                    return op if ip == n_in else -4
                m -= 0x4000
                mode = 3
        if mode == 1:
            if ip + t > n_in:
                return -1
            if op + t > n_out:
                return -2
            for k in range(t):
                dst[op + k] = src[ip + k]
            op += t
            ip += t
            state = 4
            continue
        if mode == 3:
            if m < 0:
                return -3
            if op + t > n_out:
                return -2
            for k in range(t):  # byte by byte: a match may overlap what it writes
                dst[op + k] = dst[m + k]
            op += t
        # The match tail: 0-3 literals, and the state the next instruction reads.
        state = nxt
        t = nxt
        if ip + t > n_in:
            return -1
        if op + t > n_out:
            return -2
        for k in range(t):
            dst[op + k] = src[ip + k]
        op += t
        ip += t


LZO_ERRORS = {
    -1: "the compressed data ends inside an instruction",
    -2: "the data decompresses beyond the block size limit",
    -3: "a back-reference points before the block's start",
    -4: "bytes follow the end marker",
}


def lzo1x_decompress_into(data: bytes | memoryview, out: np.ndarray) -> int | str:
    """LZO1X-decompresses a block into `out`: the length written, or why it could not be."""
    size = int(_lzo1x(np.frombuffer(data, dtype=np.uint8), out))
    return size if size >= 0 else LZO_ERRORS.get(size, "corrupt LZO data")


def lzo1x_decompress(data: bytes | memoryview, limit: int) -> bytes | str:
    """The LZO1X-decompressed bytes (at most `limit`), or why they could not be had."""
    out = np.empty(limit, dtype=np.uint8)
    size = lzo1x_decompress_into(data, out)
    return size if isinstance(size, str) else out[:size].tobytes()
