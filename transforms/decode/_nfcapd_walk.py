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
# Columns of every V3 record that `walk_records` returns, and their types. What few records have
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
def _count(buf: Any, starts: Any, ends: Any) -> Any:  # pragma: no cover
    """(V3 records, other records) in the blocks, up to where a block's chain of records breaks."""
    v3 = 0
    other = 0
    for block in range(starts.size):
        at = starts[block]
        while at + 4 <= ends[block]:
            size = _u16(buf, at + 2)
            if size < 4 or at + size > ends[block]:
                break
            if _u16(buf, at) == V3_RECORD:
                v3 += 1
            else:
                other += 1
            at += size
    return v3, other


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _walk(
    buf: Any,
    starts: Any,
    ends: Any,
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
    broken: Any,
) -> Any:  # pragma: no cover
    v4_prefix = np.uint64(0xFFFF00000000)
    zero = np.uint64(0)
    row = 0
    kept = 0
    noted = 0  # rows of `sparse`: (row, byte offset, selector or -1, reverse packets, reverse bytes)
    for block in range(starts.size):
        at = starts[block]
        broken[block] = -1
        while at + 4 <= ends[block]:
            kind = _u16(buf, at)
            size = _u16(buf, at + 2)
            if size < 4 or at + size > ends[block]:
                broken[block] = at
                break
            if kind != V3_RECORD:
                others[kept, 0] = at
                others[kept, 1] = kind
                others[kept, 2] = size
                kept += 1
                at += size
                continue
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
                problem[row] = 1
                sparse[noted, 0] = row
                sparse[noted, 1] = at
                sparse[noted, 2] = -1
                sparse[noted, 3] = 0
                sparse[noted, 4] = 0
                noted += 1
                row += 1
                at = end
                continue
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
                sparse[noted, 1] = at
                sparse[noted, 2] = chosen
                sparse[noted, 3] = np.int64(reverse_packets)
                sparse[noted, 4] = np.int64(reverse_octets)
                noted += 1
            row += 1
            at = end
        if broken[block] < 0 and at < ends[block]:
            broken[block] = at
    return noted


SPARSE_COLUMNS = ("row", "position", "selector", "reverse_packets", "reverse_bytes")


def walk_records(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(RECORD_COLUMNS of every V3 record; SPARSE_COLUMNS of the records with a sampler id,
    reverse counts or damage (`selector` -1: none); (position, type, size) of every other record;
    per block, the offset where its chain of records broke, -1 if none) over the blocks
    buf[starts[i]:ends[i]]."""
    starts, ends = starts.astype(np.int64), ends.astype(np.int64)
    v3, other = _count(buf, starts, ends)
    columns = {name: np.empty(v3, dtype=dtype) for name, dtype in RECORD_COLUMNS.items()}
    sparse = np.empty((v3, len(SPARSE_COLUMNS)), dtype=np.int64)  # pages touched only where written
    others = np.empty((other, 3), dtype=np.int64)
    broken = np.empty(starts.size, dtype=np.int64)
    noted = _walk(buf, starts, ends, *columns.values(), sparse, others, broken)  # type: ignore[call-arg]
    notes = {name: sparse[:noted, index].copy() for index, name in enumerate(SPARSE_COLUMNS)}
    return columns, notes, others, broken


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


def lzo1x_decompress(data: bytes | memoryview, limit: int) -> bytes | str:
    """The LZO1X-decompressed bytes (at most `limit`), or why they could not be had."""
    out = np.empty(limit, dtype=np.uint8)
    size = int(_lzo1x(np.frombuffer(data, dtype=np.uint8), out))
    if size < 0:
        return LZO_ERRORS.get(size, "corrupt LZO data")
    return out[:size].tobytes()
