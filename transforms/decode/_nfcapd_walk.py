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
# Columns of the record table that `walk_records` returns: int64 ...
INT_COLUMNS = (
    "position",  # byte offset of the record in the decompressed blocks
    "first_ms",
    "last_ms",
    "src_port",
    "dst_port",
    "protocol",
    "exporter_id",
    "flags",
    "selector",  # -1: the record names no sampler
    "address_family",  # 4, 6, or 0 (no address element)
    "problem",  # 0 fine; 1 an element overruns the record; 2 no generic flow element; 3 no addresses
)
# ... and uint64.
WORD_COLUMNS = ("packets", "bytes", "out_packets", "out_bytes", "src_hi", "src_lo", "dst_hi", "dst_lo")


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
def _walk(buf: Any, starts: Any, ends: Any) -> Any:  # pragma: no cover
    # Pass 1: count records per kind, and find where a block's chain of records breaks.
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
    ints = np.zeros((v3, len(INT_COLUMNS)), dtype=np.int64)
    words = np.zeros((v3, 8), dtype=np.uint64)  # packets, bytes, out_packets, out_bytes, src_hi..dst_lo
    others = np.zeros((other, 3), dtype=np.int64)  # position, type, size
    broken = np.full(starts.size, -1, dtype=np.int64)  # per block: offset where the chain broke
    row = 0
    kept = 0
    for block in range(starts.size):
        at = starts[block]
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
            ints[row, 0] = at
            ints[row, 8] = -1
            if size < V3_HEADER:
                ints[row, 10] = 1
                row += 1
                at = end
                continue
            elements = _u16(buf, at + 4)
            ints[row, 6] = _u16(buf, at + 8)
            ints[row, 7] = np.int64(buf[at + 10])
            pos = at + V3_HEADER
            generic = False
            family = 0
            for _ in range(elements):
                if pos + 4 > end:
                    ints[row, 10] = 1
                    break
                element = _u16(buf, pos)
                length = _u16(buf, pos + 2)
                if length < 4 or pos + length > end:
                    ints[row, 10] = 1
                    break
                if element == EX_GENERIC_FLOW and length >= 52:
                    generic = True
                    ints[row, 1] = np.int64(_u64(buf, pos + 4))
                    ints[row, 2] = np.int64(_u64(buf, pos + 12))
                    words[row, 0] = _u64(buf, pos + 28)
                    words[row, 1] = _u64(buf, pos + 36)
                    ints[row, 3] = _u16(buf, pos + 44)
                    ints[row, 4] = _u16(buf, pos + 46)
                    ints[row, 5] = np.int64(buf[pos + 48])
                elif element == EX_IPV4_FLOW and length >= 12:
                    family = 4
                    words[row, 4] = np.uint64(0)
                    words[row, 5] = np.uint64(0xFFFF00000000) | np.uint64(_u32(buf, pos + 4))
                    words[row, 6] = np.uint64(0)
                    words[row, 7] = np.uint64(0xFFFF00000000) | np.uint64(_u32(buf, pos + 8))
                elif element == EX_IPV6_FLOW and length >= 36:
                    family = 6
                    words[row, 4] = _u64(buf, pos + 4)
                    words[row, 5] = _u64(buf, pos + 12)
                    words[row, 6] = _u64(buf, pos + 20)
                    words[row, 7] = _u64(buf, pos + 28)
                elif element == EX_COUNT_FLOW and length >= 28:
                    words[row, 2] = _u64(buf, pos + 12)
                    words[row, 3] = _u64(buf, pos + 20)
                elif element == EX_SAMPLER_INFO and length >= 8:
                    # nfdump 1.7.1 stores a 32-bit selector id, later releases a 64-bit one.
                    ints[row, 8] = np.int64(_u64(buf, pos + 4)) if length >= 16 else _u32(buf, pos + 4)
                pos += length
            ints[row, 9] = family
            if ints[row, 10] == 0 and not generic:
                ints[row, 10] = 2
            elif ints[row, 10] == 0 and family == 0:
                ints[row, 10] = 3
            row += 1
            at = end
        if broken[block] < 0 and at < ends[block]:
            broken[block] = at
    return ints, words, others, broken


def walk_records(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(INT_COLUMNS and WORD_COLUMNS of every V3 record; (position, type, size) of every other
    record; per block, the offset where its chain of records broke, -1 if none) over the blocks
    buf[starts[i]:ends[i]]."""
    ints, words, others, broken = _walk(buf, starts.astype(np.int64), ends.astype(np.int64))
    columns = {name: ints[:, index] for index, name in enumerate(INT_COLUMNS)}
    columns.update({name: words[:, index] for index, name in enumerate(WORD_COLUMNS)})
    return columns, others, broken


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
