"""Compiled walks over export messages: where each message and each set starts.

Finding message and set boundaries is inherently sequential (each length says where the next
one starts) and exporters send small messages, so a Python loop pays ~0.4 us per message and
numpy cannot vectorise it. These loops are compiled by numba (a registry wheel; compiled once per
machine and cached beside this file). Everything else stays numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit  # type: ignore[import-untyped]

IPFIX_HEADER = 16


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _ipfix_message_starts(buf: np.ndarray, pos: Any, end: Any) -> Any:  # pragma: no cover
    count = 0
    at = pos
    while at + 16 <= end:
        length = (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])
        if buf[at] != 0 or buf[at + 1] != 10 or length < 16 or at + length > end:
            break
        count += 1
        at += length
    starts = np.empty(count, dtype=np.int64)
    at = pos
    for index in range(count):
        starts[index] = at
        at += (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])
    return starts, at


def ipfix_message_starts(buf: np.ndarray, pos: int, end: int) -> tuple[np.ndarray, int]:
    """Offsets of the whole IPFIX messages back to back from `pos`, and where that run stops
    (`end`, or the first byte that does not start a whole IPFIX message)."""
    starts, stop = _ipfix_message_starts(buf, pos, end)
    return starts, int(stop)


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _sets(buf: np.ndarray, body: np.ndarray, end: np.ndarray) -> Any:  # pragma: no cover
    total = 0
    bad = 0
    for message in range(body.size):
        at = body[message]
        while at + 4 <= end[message]:
            length = (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])
            if length < 4 or at + length > end[message]:
                bad += 1
                break
            total += 1
            at += length
    pos = np.empty(total, dtype=np.int64)
    set_id = np.empty(total, dtype=np.int64)
    size = np.empty(total, dtype=np.int64)
    owner = np.empty(total, dtype=np.int64)
    bad_pos = np.empty(bad, dtype=np.int64)
    bad_length = np.empty(bad, dtype=np.int64)
    bad_message = np.empty(bad, dtype=np.int64)
    index = 0
    bad_index = 0
    for message in range(body.size):
        at = body[message]
        while at + 4 <= end[message]:
            length = (np.int64(buf[at + 2]) << 8) | np.int64(buf[at + 3])
            if length < 4 or at + length > end[message]:
                bad_pos[bad_index] = at
                bad_length[bad_index] = length
                bad_message[bad_index] = message
                bad_index += 1
                break
            pos[index] = at
            set_id[index] = (np.int64(buf[at]) << 8) | np.int64(buf[at + 1])
            size[index] = length
            owner[index] = message
            index += 1
            at += length
    return pos, set_id, size, owner, bad_pos, bad_length, bad_message


def sets_of_messages(
    buf: np.ndarray, body: np.ndarray, end: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """((position, set id, length, message) of every set in stream order, (position, declared
    length, message) of each set whose length is impossible: it ends its message's walk)."""
    pos, set_id, size, owner, bad_pos, bad_length, bad_message = _sets(buf, body.astype(np.int64), end.astype(np.int64))
    return (pos, set_id, size, owner), (bad_pos, bad_length, bad_message)


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _u32(buf: np.ndarray, at: Any, big_endian: Any) -> Any:  # pragma: no cover
    b0, b1, b2, b3 = np.int64(buf[at]), np.int64(buf[at + 1]), np.int64(buf[at + 2]), np.int64(buf[at + 3])
    return (b0 << 24 | b1 << 16 | b2 << 8 | b3) if big_endian else (b3 << 24 | b2 << 16 | b1 << 8 | b0)


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _pcap_records(buf: np.ndarray, pos: Any, end: Any, big_endian: Any) -> Any:  # pragma: no cover
    count = 0
    at = pos
    while at + 16 <= end:
        b = buf[at + 8 : at + 12].astype(np.int64)
        captured = (
            (b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]) if big_endian else (b[3] << 24 | b[2] << 16 | b[1] << 8 | b[0])
        )
        if at + 16 + captured > end:
            break
        count += 1
        at += 16 + captured
    offsets = np.empty(count, dtype=np.int64)
    lengths = np.empty(count, dtype=np.int64)
    at = pos
    for index in range(count):
        b = buf[at + 8 : at + 12].astype(np.int64)
        captured = (
            (b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]) if big_endian else (b[3] << 24 | b[2] << 16 | b[1] << 8 | b[0])
        )
        offsets[index] = at
        lengths[index] = captured
        at += 16 + captured
    return offsets, lengths, at


def pcap_records(buf: np.ndarray, pos: int, end: int, big_endian: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(offset, captured length) of each whole packet record of a classic pcap file from `pos`,
    and where the run of whole records stops."""
    offsets, lengths, stop = _pcap_records(buf, pos, end, big_endian)
    return offsets, lengths, int(stop)


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _copy_runs(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, out: np.ndarray) -> Any:  # pragma: no cover
    at = 0
    for run in range(starts.size):
        size = sizes[run]
        out[at : at + size] = buf[starts[run] : starts[run] + size]
        at += size
    return out


def copy_runs(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The byte runs buf[starts[i] : starts[i] + sizes[i]] back to back (memcpy speed), in the
    front of `out` when given (a buffer reused block after block is not faulted in again)."""
    total = int(sizes.sum())
    target = np.empty(total, dtype=np.uint8) if out is None or out.size < total else out[:total]
    return _copy_runs(buf, starts.astype(np.int64), sizes.astype(np.int64), target)  # type: ignore[no-any-return]


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _sequence_gaps(key: Any, sequence: Any, advance: Any, expected: Any, known: Any) -> Any:  # pragma: no cover
    lost = 0
    for message in range(key.size):
        k = key[message]
        if known[k] and sequence[message] != expected[k]:
            gap = (sequence[message] - expected[k]) % 4294967296
            if gap < 2147483648:  # a step backwards is a restart or reordering, not a loss
                lost += gap
        expected[k] = (sequence[message] + advance[message]) % 4294967296
        known[k] = True
    return lost


def sequence_gaps(
    key: np.ndarray, sequence: np.ndarray, advance: np.ndarray, expected: np.ndarray, known: np.ndarray
) -> int:
    """Records (or packets) that sequence-number gaps say were lost, messages taken in order; each
    message's key indexes `expected` / `known` (the next number per key, updated in place)."""
    return int(_sequence_gaps(key, sequence.astype(np.int64), advance.astype(np.int64), expected, known))


@njit(cache=True, nogil=True)  # type: ignore[misc]
def _pcapng_blocks(buf: np.ndarray, pos: Any, end: Any) -> Any:  # pragma: no cover
    count = 0
    at = pos
    while at + 12 <= end:
        length = _u32(buf, at + 4, False)
        if length < 12 or length % 4 or at + length > end:
            break
        count += 1
        at += length
    offsets = np.empty(count, dtype=np.int64)
    kinds = np.empty(count, dtype=np.int64)
    lengths = np.empty(count, dtype=np.int64)
    at = pos
    for index in range(count):
        offsets[index] = at
        kinds[index] = _u32(buf, at, False)
        lengths[index] = _u32(buf, at + 4, False)
        at += lengths[index]
    return offsets, kinds, lengths, at


def pcapng_blocks(buf: np.ndarray, pos: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(offset, block type, length) of each whole block of a little-endian pcapng section from
    `pos`, and where the run of valid blocks stops."""
    offsets, kinds, lengths, stop = _pcapng_blocks(buf, pos, end)
    return offsets, kinds, lengths, int(stop)
