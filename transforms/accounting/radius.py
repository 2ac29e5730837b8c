"""FreeRADIUS `detail` accounting: parsing, writing, sessions -> address assignments, billing usage."""

from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from transforms.addresses import parse_addresses
from transforms.mapping import Mapper

GIGAWORD = 1 << 32
STATUS_TYPES = ("Start", "Stop", "Interim-Update", "Accounting-On", "Accounting-Off", "Alive")
# RFC 2866/2867 values the pipeline does not use: a problem may name them (any other value
# is not shown: a broken line could put an identity there).
OTHER_STATUS_TYPES = (
    "Tunnel-Start",
    "Tunnel-Stop",
    "Tunnel-Reject",
    "Tunnel-Link-Start",
    "Tunnel-Link-Stop",
    "Tunnel-Link-Reject",
    "Failed",
)
NOT_UTF8 = "bytes that are not UTF-8"
UNDECODED = "\ufffd"

# Attributes the pipeline reads; everything else in a record is kept out of the frame.
ATTRIBUTES = {
    "Acct-Status-Type": "status",
    "Acct-Session-Id": "session_id",
    "User-Name": "user_name",
    "NAS-Identifier": "nas_identifier",
    "NAS-IP-Address": "nas_ip",
    "Framed-Protocol": "framed_protocol",
    "Framed-IP-Address": "framed_ip",
    "Framed-IPv6-Prefix": "framed_ipv6_prefix",
    "Delegated-IPv6-Prefix": "delegated_prefix",
    "Calling-Station-Id": "calling_station_id",
    "Acct-Session-Time": "session_time_s",
    "Acct-Input-Octets": "in_octets",
    "Acct-Output-Octets": "out_octets",
    "Acct-Input-Gigawords": "in_gigawords",
    "Acct-Output-Gigawords": "out_gigawords",
    "Event-Timestamp": "event_timestamp",
    "Acct-Delay-Time": "delay_s",
    "Timestamp": "timestamp",
}
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "line": pl.Int64(),
    "status": pl.String(),
    "session_id": pl.String(),
    "user_name": pl.String(),
    "nas": pl.String(),
    "framed_protocol": pl.String(),
    "framed_ip": pl.String(),
    "framed_ipv6_prefix": pl.String(),
    "delegated_prefix": pl.String(),
    "calling_station_id": pl.String(),
    "event_ts": pl.Datetime("ms", "UTC"),
    "session_time_s": pl.Int64(),
    "in_octets": pl.Int64(),
    "out_octets": pl.Int64(),
}


def _utc_from_local(local: pl.Expr, is_utc: pl.Expr, timezone: str) -> pl.Expr:
    """A naive FreeRADIUS text time in UTC: as is where it said UTC, else read in `timezone`."""
    in_zone = local.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return pl.when(is_utc).then(local.dt.replace_time_zone("UTC")).otherwise(in_zone.dt.convert_time_zone("UTC"))


def _received_s() -> pl.Expr:
    """Epoch seconds of the event from the receiver's Timestamp less Acct-Delay-Time."""
    delay = pl.col("delay_s").cast(pl.Int64, strict=False).fill_null(0)
    return pl.col("timestamp").cast(pl.Int64, strict=False) - delay


def _event_time(timezone: str) -> pl.Expr:
    """Event time in UTC: Event-Timestamp (epoch or FreeRADIUS text), else Timestamp - delay."""
    text = pl.col("event_timestamp").str.strip_chars('"').str.strip_chars()
    epoch = text.cast(pl.Int64, strict=False)
    zone = text.str.extract(r"\s([A-Za-z][A-Za-z0-9+-]*)$")
    stamp = text.str.replace(r"\s[A-Za-z][A-Za-z0-9+-]*$", "").str.replace_all(r"\s+", " ")
    local = stamp.str.strptime(pl.Datetime("ms"), "%b %d %Y %H:%M:%S", strict=False)
    from_text = _utc_from_local(local, zone.is_in(["UTC", "GMT", "Z"]), timezone)
    received = _received_s()
    return (
        pl.coalesce(
            pl.from_epoch(epoch, time_unit="s").dt.replace_time_zone("UTC"),
            from_text,
            pl.from_epoch(received, time_unit="s").dt.replace_time_zone("UTC"),
        )
        .dt.cast_time_unit("ms")
        .alias("event_ts")
    )


# What polars (Rust) counts as whitespace in str.strip_chars() and in a regex's \s: Unicode White_Space.
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
# `^([A-Za-z0-9-]+)\s*=\s*(.*)$` on the stripped line, as the polars parser before this one read
# every line: here only for the few lines the byte scan leaves to Python.
_ATTRIBUTE_LINE = re.compile(f"([A-Za-z0-9-]+)[{_WHITESPACE}]*=[{_WHITESPACE}]*(.*)")
_BLANK = "blank"

_NAMES = list(ATTRIBUTES)
_COLUMNS = list(ATTRIBUTES.values())
_UNMATCHED = len(_NAMES)  # the table row no line matches
_NAME_BYTE = np.zeros(256, dtype=bool)
_NAME_BYTE[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")] = True
# A byte that neither is nor begins whitespace: a value that starts and ends with one is already
# stripped. Bytes >= 0x80 may begin U+00A0, U+3000...: such lines go the exact (Python) way.
_PLAIN_BYTE = np.arange(256) < 0x80
_PLAIN_BYTE[[9, 10, 11, 12, 13, 32]] = False
_QUOTE = ord('"')


def _name_words() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`Name = ` of each attribute read, as three little-endian words (the 24 bytes after the tab),
    and the masks of the bytes that belong to it; a last row that matches nothing."""
    rows = []
    for name in _NAMES:
        key = (name + " = ").encode()
        # 8 bytes or more: the first word is the name's own, so it alone picks the candidates.
        assert len(name) >= 8 and len(key) <= 24, name
        rows.append(
            struct.unpack("<3Q", key.ljust(24, b"\0")) + struct.unpack("<3Q", (b"\xff" * len(key)).ljust(24, b"\0"))
        )
    rows.append((0, 1, 1, 0, 0, 0))  # (w & 0) ^ 1 is never 0
    table = np.array(rows, dtype=np.uint64)
    return [np.ascontiguousarray(table[:, j]) for j in range(3)], [
        np.ascontiguousarray(table[:, 3 + j]) for j in range(3)
    ]


_EXPECT, _MASK = _name_words()
_NAME_LEN = np.array([len(n) for n in _NAMES] + [0], dtype=np.int64)


def _first_word_slots() -> tuple[np.uint64, np.ndarray, np.ndarray]:
    """A multiplier that sends the names' distinct first words to distinct 5-bit slots, and each
    slot's one or two candidate names (no three names share their first 8 bytes)."""
    mod = 2**64 - 1
    firsts = sorted({int(w) for w in _EXPECT[0][:_UNMATCHED]})
    multiplier = 0
    for k in range(1, 1 << 16):
        multiplier = (0x9E3779B97F4A7C15 * k | 1) & mod
        if len({(w * multiplier & mod) >> 59 for w in firsts}) == len(firsts):
            break
    first, second = np.full(32, _UNMATCHED, np.int8), np.full(32, _UNMATCHED, np.int8)
    for e, w in enumerate(_EXPECT[0][:_UNMATCHED].tolist()):
        slot = (w * multiplier & mod) >> 59
        if first[slot] == _UNMATCHED:
            first[slot] = e
        else:
            assert second[slot] == _UNMATCHED
            second[slot] = e
    return np.uint64(multiplier), first, second


_HASH_MULTIPLIER, _SLOT_FIRST, _SLOT_SECOND = _first_word_slots()
_SLICE_BYTES = 1 << 21  # data is scanned in slices of about this size (cut before a header): arrays stay in cache
_CUT_SEARCH = 1 << 20  # how far past that size a record header to cut before is looked for
_WINDOW = 40  # bytes after the tab in which the name of an attribute not read must end
# Arrow string views address a buffer with a signed 32-bit offset: values of data past 2 GiB are
# addressed in overlapping 2 GiB windows that start every 1 GiB (a value is shorter than 1 GiB).
_VIEW_WINDOW = 1 << 30
# The columns built from the values: the strings kept, `nas` (NAS-Identifier, else NAS-IP-Address),
# the numbers (cast by polars as before) and the two that Event-Timestamp falls back on.
_STRING_COLUMNS = [
    "status",
    "session_id",
    "user_name",
    "nas",
    "framed_protocol",
    "framed_ip",
    "framed_ipv6_prefix",
    "delegated_prefix",
    "calling_station_id",
    "session_time_s",
    "in_octets",
    "out_octets",
    "in_gigawords",
    "out_gigawords",
    "delay_s",
    "timestamp",
    "event_timestamp",
]
_SOURCE = np.array([_COLUMNS.index("nas_identifier" if c == "nas" else c) for c in _STRING_COLUMNS])
_NAS = _STRING_COLUMNS.index("nas")
_NAS_IP = _COLUMNS.index("nas_ip")
_EVENT = _STRING_COLUMNS.index("event_timestamp")
_BYTES_KEPT = np.array([(1 << (8 * min(k, 8))) - 1 for k in range(9)], dtype=np.uint64)


@dataclass
class _Slice:
    """The records of one slice of the data (it begins with a header, but for the first slice)."""

    lines: int
    header: np.ndarray  # line of each record's header, counted in the slice
    views: np.ndarray  # (len(_STRING_COLUMNS), records, 2) Arrow string views, over the data
    valid: np.ndarray  # (len(_STRING_COLUMNS), records): the record has that value
    event_ms: np.ndarray  # Event-Timestamp as local epoch ms when FreeRADIUS wrote it (else `event_local` false)
    event_local: np.ndarray
    event_utc: np.ndarray  # its zone says UTC or GMT
    python: dict[int, dict[int, str]]  # record (in the slice) -> first value of each attribute, read by Python
    conflicts: dict[int, str]  # record -> column repeated with different values
    not_name_value: list[int]  # lines counted in the slice
    before_header: int  # line of the first attribute line before any header, or -1


def _read_line(raw: bytes) -> str | tuple[str, str] | None:
    """How the polars parser read one line that is not a header: blank, (name, value) or None."""
    text = raw.decode("utf-8", errors="replace").strip(_WHITESPACE)
    if not text:
        return _BLANK
    match = _ATTRIBUTE_LINE.fullmatch(text)
    return None if match is None else (match.group(1), match.group(2))


def _words(buf: np.ndarray, dtype: str) -> np.ndarray:
    """buf as overlapping words: element i is the word of the bytes at i, i + 1, ..."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(buf.size - size + 1, 0),), dtype=dtype, buffer=buf, strides=(1,))


def _matches(words: list[np.ndarray], candidate: np.ndarray) -> np.ndarray:
    """Whether the 24 bytes after each tab begin with `Name = ` of the candidate attribute."""
    differ = words[0] ^ _EXPECT[0][candidate]
    for j in (1, 2):
        differ |= (words[j] & _MASK[j][candidate]) ^ _EXPECT[j][candidate]
    return differ == 0


def _strip_quotes(buf: np.ndarray, start: np.ndarray, end: np.ndarray, first: np.ndarray, last: np.ndarray) -> None:
    """str.strip_chars('"') on the spans [start, end) of buf (first and last: their bytes), in place."""
    lead = first == _QUOTE
    start += lead
    trail = (last == _QUOTE) & (start < end)
    end -= trail
    todo = np.flatnonzero(lead | trail)
    while todo.size:
        s, e = start[todo], end[todo]
        lead = (s < e) & (buf[np.minimum(s, buf.size - 1)] == _QUOTE)
        s += lead
        trail = (s < e) & (buf[e - 1] == _QUOTE)
        e -= trail
        start[todo], end[todo] = s, e
        todo = todo[lead | trail]


def _string_views(buf: np.ndarray, u64: np.ndarray, offset: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Arrow string views (two little-endian words each) of the spans of buf; a value of 12 bytes or
    less sits in its view, a longer one is found by (window, offset in it)."""
    n = buf.size
    short = length <= 12
    if u64.size:
        head = u64[np.minimum(offset, u64.size - 1)]  # bytes 0-7 of the value
        body = u64[np.minimum(offset + 4, u64.size - 1)]  # bytes 4-11
    else:
        head = body = np.zeros(offset.shape, dtype=np.uint64)
    length_u = length.astype(np.uint64)
    first = np.where(short, head & _BYTES_KEPT[np.minimum(length, 4)], head & np.uint64(0xFFFFFFFF))
    views = np.empty(offset.shape + (2,), dtype=np.uint64)
    views[..., 0] = length_u | (first << np.uint64(32))
    window = offset // _VIEW_WINDOW
    views[..., 1] = np.where(
        short,
        body & _BYTES_KEPT[np.clip(length - 4, 0, 8)],
        window.astype(np.uint64) | ((offset - window * _VIEW_WINDOW).astype(np.uint64) << np.uint64(32)),
    )
    # The last bytes of the data: a short value there is read byte by byte.
    for at in zip(*np.nonzero(short & (offset + 12 > n) & (length > 0))):
        views[at] = _inline_view(bytes(buf[offset[at] : offset[at] + length[at]]))
    return views


def _inline_view(value: bytes) -> tuple[int, int]:
    """The view of a value of 12 bytes or less."""
    words = struct.unpack("<QQ", struct.pack("<I", len(value)) + value.ljust(12, b"\0"))
    return words[0], words[1]


def _scan_slice(data: bytes, buf: np.ndarray, u64: np.ndarray, lo: int, hi: int, has_cr: bool) -> _Slice:
    """The records of buf[lo:hi]: hi is just after a line feed, or the end of the data."""
    n = buf.size
    newlines = np.flatnonzero(buf[lo:hi] == 10) + lo
    last = hi == n  # the last line has no line feed (it is empty when the data ends with one)
    starts = np.empty(newlines.size + last, dtype=np.int64)
    starts[0] = lo
    starts[1:] = newlines[: starts.size - 1] + 1
    ends = np.empty_like(starts)
    ends[: newlines.size] = newlines
    if last:
        ends[-1] = n
    if has_cr:  # CRLF: the CR is part of the line end
        ends -= (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    first = buf[np.minimum(starts, n - 1)]
    filled = ends > starts
    header = filled & (first != 9) & (first != 32)
    header_lines = np.flatnonzero(header)
    records = header_lines.size
    record = np.cumsum(header)  # 1-based in the slice; 0 before the first header (first slice only)
    # Attribute lines read by column: a tab, one of ATTRIBUTES, ` = `, a value that begins and
    # ends with a byte that is no whitespace. Other lines are checked below or left to Python.
    tabbed = np.flatnonzero(filled & (first == 9) & (starts + 25 <= n))
    s = starts[tabbed]
    words = [u64[s + 1 + 8 * j] for j in range(3)]
    slot = (words[0] * _HASH_MULTIPLIER) >> np.uint64(59)
    candidate = _SLOT_FIRST[slot]
    matched = _matches(words, candidate)
    second = np.flatnonzero(~matched & (_SLOT_SECOND[slot] != _UNMATCHED))
    if second.size:
        alternative = _SLOT_SECOND[slot[second]]
        hit = _matches([w[second] for w in words], alternative)
        candidate[second[hit]] = alternative[hit]
        matched[second[hit]] = True
    value_start = s + 4 + _NAME_LEN[candidate]
    value_end = ends[tabbed]
    value_first = buf[np.minimum(value_start, n - 1)]
    value_last = buf[value_end - 1]
    matched &= (value_start < value_end) & _PLAIN_BYTE[value_first] & _PLAIN_BYTE[value_last]
    read = tabbed[matched]
    start, end = value_start[matched], value_end[matched]
    _strip_quotes(buf, start, end, value_first[matched], value_last[matched])
    attribute = candidate[matched].astype(np.int64)
    read_record = record[read]
    before_header = [int(read[0])] if read.size and read_record[0] == 0 else []
    # Lines of attributes not read (`<TAB>Name = value`) are valid and nothing more.
    rest = filled & ~header
    rest[read] = False
    others = np.flatnonzero(rest & (first == 9) & (starts + 1 + _WINDOW <= n))
    if others.size:
        window = np.lib.stride_tricks.as_strided(buf, shape=(n - _WINDOW + 1, _WINDOW), strides=(1, 1))
        text = window[starts[others] + 1]
        stop = np.argmin(_NAME_BYTE[text], axis=1)  # where the name ends (0: no name)
        row = np.arange(others.size)
        near = np.minimum(stop, _WINDOW - 3)
        other_start = starts[others] + 4 + stop
        other_end = ends[others]
        valid = (
            (stop > 0)
            & (stop <= _WINDOW - 3)
            & (text[row, near] == 32)
            & (text[row, near + 1] == 61)
            & (text[row, near + 2] == 32)
            & (other_start < other_end)
        )
        valid &= _PLAIN_BYTE[buf[np.minimum(other_start, n - 1)]] & _PLAIN_BYTE[buf[other_end - 1]]
        rest[others[valid]] = False
        before_header += others[valid & (record[others] == 0)][:1].tolist()
    # The rest, in Python: blank, not `Name = value`, or an attribute written another way.
    not_name_value: list[int] = []
    by_python: list[tuple[int, int, int, str]] = []  # (line, record, attribute, value)
    index = {name: i for i, name in enumerate(_NAMES)}
    for at in np.flatnonzero(rest).tolist():
        got = _read_line(data[starts[at] : ends[at]])
        if got == _BLANK:
            continue
        rec = int(record[at])
        if rec == 0:
            before_header.append(at)
        if got is None:
            not_name_value.append(at)
        elif rec > 0 and got[0] in index:
            by_python.append((at, rec, index[got[0]], got[1].strip('"')))

    # One value per (attribute, record); a record holding an attribute twice, or one that Python
    # read, is read again below in Python (first value, and whether another value follows).
    kept = read_record > 0
    offset = np.full((len(_NAMES), records), -1, dtype=np.int64)
    length = np.zeros((len(_NAMES), records), dtype=np.int64)
    flat = attribute[kept] * records + read_record[kept] - 1
    offset.ravel()[flat] = start[kept]
    length.ravel()[flat] = end[kept] - start[kept]
    again = np.zeros(records + 1, dtype=bool)
    again[read_record[kept][offset.ravel()[flat] != start[kept]]] = True
    again[[rec for _, rec, _, _ in by_python]] = True
    python: dict[int, dict[int, str]] = {}
    conflicts: dict[int, str] = {}
    if again.any():
        seen: dict[int, dict[int, list[tuple[int, str]]]] = {}
        for at in np.flatnonzero(kept & again[read_record]).tolist():
            value = data[start[at] : end[at]].decode("utf-8", errors="replace")
            seen.setdefault(int(read_record[at]), {}).setdefault(int(attribute[at]), []).append((int(read[at]), value))
        for at, rec, e, value in by_python:
            seen.setdefault(rec, {}).setdefault(e, []).append((at, value))
        for rec, attributes in seen.items():
            python[rec - 1] = {e: min(values)[1] for e, values in attributes.items()}
            repeated = [_COLUMNS[e] for e, values in attributes.items() if len({v for _, v in values}) > 1]
            if repeated:
                conflicts[rec - 1] = min(repeated)
        offset[:, np.flatnonzero(again[1:])] = -1
    spans = offset[_SOURCE]
    span_lengths = length[_SOURCE]
    no_identifier = spans[_NAS] < 0
    spans[_NAS, no_identifier] = offset[_NAS_IP, no_identifier]
    span_lengths[_NAS, no_identifier] = length[_NAS_IP, no_identifier]
    present = spans >= 0
    views = _string_views(buf, u64, np.where(present, spans, 0), np.where(present, span_lengths, 0))
    event_ms, event_local, event_utc = _local_event_times(buf, spans[_EVENT], span_lengths[_EVENT])
    return _Slice(
        starts.size,
        header_lines,
        views,
        present,
        event_ms,
        event_local,
        event_utc,
        python,
        conflicts,
        not_name_value,
        min(before_header) if before_header else -1,
    )


def _slices(data: bytes) -> list[tuple[int, int]]:
    """[lo, hi) slices of about _SLICE_BYTES, each (but the first) beginning with a record header."""
    bounds = [0]
    while bounds[-1] + _SLICE_BYTES < len(data):
        at, limit, cut = bounds[-1] + _SLICE_BYTES, bounds[-1] + _SLICE_BYTES + _CUT_SEARCH, -1
        while cut < 0:
            newline = data.find(b"\n", at, limit)
            if newline < 0:
                break
            if data[newline + 1 : newline + 2] not in (b"", b"\t", b" ", b"\n", b"\r"):
                cut = newline + 1
            at = newline + 1
        if cut < 0:
            break
        bounds.append(cut)
    bounds.append(len(data))
    return list(zip(bounds[:-1], bounds[1:]))


def _not_utf8_lines(data: bytes, buf: np.ndarray) -> np.ndarray:
    """Line indices (0-based) of the lines that do not decode as UTF-8, or that hold U+FFFD, in data
    that does not decode: the polars parser flagged the lines holding U+FFFD after a lossy decode."""
    newlines = np.flatnonzero(buf == 10)
    lines = np.unique(np.searchsorted(newlines, np.flatnonzero(buf >= 0x80)))
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(data)]])
    flagged = []
    for line in lines.tolist():
        raw = data[starts[line] : ends[line]]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            flagged.append(line)
            continue
        if UNDECODED.encode() in raw:
            flagged.append(line)
    return np.array(flagged, dtype=np.int64)


_MONTHS = {
    name.encode(): number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
_MONTH_KEYS = np.array(sorted(int.from_bytes(m, "big") for m in _MONTHS), dtype=np.int64)
_MONTH_OF_KEY = np.array([_MONTHS[k.to_bytes(3, "big")] for k in _MONTH_KEYS.tolist()], dtype=np.int64)
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_UTC_ZONES = np.array(sorted(int.from_bytes(z, "big") for z in (b"UTC", b"GMT")), dtype=np.int64)


def _local_event_times(
    buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event-Timestamp values as FreeRADIUS writes them (`Jun  3 2024 01:00:00 JST`, 24 bytes, a day
    that exists, a year in 1971-2199): (local time as epoch ms, which values are such, zone UTC/GMT).

    Any other value is left to the polars expression (`_event_time`), which reads more forms."""
    ok = (lengths == 24) & (offsets >= 0)
    at = np.flatnonzero(ok)
    text = np.lib.stride_tricks.as_strided(buf, shape=(max(buf.size - 23, 0), 24), strides=(1, 1))[offsets[at]]
    c = text.astype(np.int64)
    digit = (text >= 48) & (text <= 57)
    upper = (text >= 65) & (text <= 90)
    key = c[:, 0] << 16 | c[:, 1] << 8 | c[:, 2]
    slot = np.minimum(np.searchsorted(_MONTH_KEYS, key), 11)
    month = _MONTH_OF_KEY[slot]
    day = np.where(text[:, 4] == 32, 0, c[:, 4] - 48) * 10 + c[:, 5] - 48
    year = (c[:, 7] - 48) * 1000 + (c[:, 8] - 48) * 100 + (c[:, 9] - 48) * 10 + c[:, 10] - 48
    hour, minute, second = ((c[:, k] - 48) * 10 + c[:, k + 1] - 48 for k in (12, 15, 18))
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    good = (
        (_MONTH_KEYS[slot] == key)
        & (text[:, 3] == 32)
        & ((text[:, 4] == 32) | digit[:, 4])
        & digit[:, 5]
        & (text[:, 6] == 32)
        & digit[:, 7:11].all(axis=1)
        & (text[:, 11] == 32)
        & digit[:, [12, 13, 15, 16, 18, 19]].all(axis=1)
        & (text[:, 14] == 58)
        & (text[:, 17] == 58)
        & (text[:, 20] == 32)
        & upper[:, 21:24].all(axis=1)
        & (day >= 1)
        & (day <= _MONTH_DAYS[month] + ((month == 2) & leap))
        & (year >= 1971)
        & (year <= 2199)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
    )
    ok[at[~good]] = False
    # Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    local_ms = np.zeros(offsets.shape, dtype=np.int64)
    local_ms[at] = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000
    utc = np.zeros(offsets.shape, dtype=bool)
    utc[at] = np.isin(c[:, 21] << 16 | c[:, 22] << 8 | c[:, 23], _UTC_ZONES)
    return local_ms, ok, utc


def parse_detail(
    detail: bytes | str, source: str, timezone: str, mapper: Mapper = map
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Accounting records (RECORD_SCHEMA) of a detail file (its bytes, or text already decoded), and
    problems (source, line, reason) in line order. Problems never quote the record: it would carry
    clear identities (User-Name, Calling-Station-Id). The file's slices are scanned through `mapper`.

    A record holding a line that is not UTF-8 is set aside as a whole (reason NOT_UTF8, the first
    such line), whatever else it holds.
    """
    data = detail.encode("utf-8") if isinstance(detail, str) else bytes(detail)
    buf = np.frombuffer(data, dtype=np.uint8)
    undecodable = np.empty(0, dtype=np.int64)
    if isinstance(detail, bytes) and not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            undecodable = _not_utf8_lines(data, buf)
    u64 = _words(buf, "<u8")
    has_cr = data.find(b"\r") >= 0
    # Slices are independent (and numpy lets go of the GIL while it works on one).
    scanned = mapper(lambda b: _scan_slice(data, buf, u64, b[0], b[1], has_cr), _slices(data) if data else [])
    slices = list(scanned)
    line_base = np.cumsum([0] + [s.lines for s in slices])
    record_base = np.cumsum([0] + [s.header.size for s in slices])
    headers = np.concatenate([s.header + base for s, base in zip(slices, line_base)] + [np.empty(0, np.int64)])
    n_records = headers.size
    problems = [
        _problems(
            source,
            [at + base for s, base in zip(slices, line_base) for at in s.not_name_value],
            "attribute line is not `Name = value`",
        ),
        _problems(
            source,
            [slices[0].before_header] if slices and slices[0].before_header >= 0 else [],
            "attribute before the first record header",
        ),
    ]
    kept = np.ones(n_records, dtype=bool)
    if undecodable.size:
        in_record = np.searchsorted(headers, undecodable, side="right")
        records_hit, first = np.unique(in_record, return_index=True)
        kept[records_hit[records_hit > 0] - 1] = False
        problems.append(_problems(source, undecodable[first].tolist(), NOT_UTF8))
    # Records read by Python: their values go into a buffer of their own, after the data's windows.
    windows = max(1, -(-len(data) // _VIEW_WINDOW))
    extra = bytearray()
    conflicts = {int(base) + rec: name for s, base in zip(slices, record_base) for rec, name in s.conflicts.items()}
    for s, base in zip(slices, record_base):
        for rec, values in s.python.items():
            by_column = [values.get(e) for e in _SOURCE.tolist()]
            if by_column[_NAS] is None:
                by_column[_NAS] = values.get(_NAS_IP)
            for c, value in enumerate(by_column):
                s.valid[c, rec] = value is not None
                raw = (value or "").encode("utf-8")
                if len(raw) <= 12:
                    s.views[c, rec] = _inline_view(raw)
                else:
                    head = struct.unpack("<I", raw[:4])[0]
                    s.views[c, rec] = (len(raw) | head << 32, windows | len(extra) << 32)
                    extra += raw
            s.event_local[rec] = False
        # The records set aside never reach polars: their bytes may not be UTF-8.
        aside = np.flatnonzero(~kept[base : base + s.header.size])
        s.valid[:, aside] = False
        s.views[:, aside] = 0
    event_ms, event_local, event_utc = (
        np.concatenate([getattr(s, name) for s in slices] + [np.empty(0, dtype)])
        for name, dtype in (("event_ms", np.int64), ("event_local", bool), ("event_utc", bool))
    )
    buffers = [pa.py_buffer(memoryview(data)[k * _VIEW_WINDOW : (k + 2) * _VIEW_WINDOW]) for k in range(windows)]
    buffers.append(pa.py_buffer(bytes(extra)))
    frame = {"line": pl.Series("line", headers + 1, dtype=pl.Int64)}
    for c, column in enumerate(_STRING_COLUMNS):
        # One Arrow array per slice, over the data itself: no copy of the values.
        chunks = [
            pa.Array.from_buffers(
                pa.string_view(),
                s.header.size,
                [pa.py_buffer(np.packbits(s.valid[c], bitorder="little")), pa.py_buffer(s.views[c]), *buffers],
            )
            for s in slices
        ]
        frame[column] = pl.Series(column, pa.chunked_array(chunks, type=pa.string_view()))
    frame["_conflict"] = (
        pl.Series("_conflict", dtype=pl.String)
        .extend_constant(None, n_records)
        .scatter(list(conflicts), list(conflicts.values()))
    )
    records = pl.DataFrame(frame)
    if not kept.all():
        records = records.filter(pl.Series(kept))
        event_ms, event_local, event_utc = event_ms[kept], event_local[kept], event_utc[kept]
    records = records.with_columns(
        _event_times(records, event_ms, event_local, event_utc, timezone),
        (
            pl.col("in_gigawords").cast(pl.Int64, strict=False).fill_null(0) * GIGAWORD
            + pl.col("in_octets").cast(pl.Int64, strict=False)
        ).alias("in_octets"),
        (
            pl.col("out_gigawords").cast(pl.Int64, strict=False).fill_null(0) * GIGAWORD
            + pl.col("out_octets").cast(pl.Int64, strict=False)
        ).alias("out_octets"),
        pl.col("session_time_s").cast(pl.Int64, strict=False),
        pl.col("status").replace({"Alive": "Interim-Update"}),
        pl.lit(source).alias("source"),
    )
    known_status = pl.col("status").is_in(list(STATUS_TYPES))
    nas_event = pl.col("status").is_in(["Accounting-On", "Accounting-Off"])
    counters_unreadable = (
        pl.col("status").is_in(["Interim-Update", "Stop"])
        & (pl.col("in_octets").is_null() | pl.col("out_octets").is_null())
        & (pl.col("in_octets").is_not_null() | pl.col("out_octets").is_not_null())
    )
    unusable = (
        pl.col("status").is_null()
        | (pl.col("session_id").is_null() & ~nas_event)
        | pl.col("event_ts").is_null()
        | pl.col("_conflict").is_not_null()
        | ~known_status
        | counters_unreadable
    ).fill_null(False)
    flagged = records.select(unusable.alias("unusable")).to_series()
    bad = records.filter(flagged)
    problems.append(
        bad.select(
            "source",
            "line",
            pl.when(pl.col("status").is_null())
            .then(pl.lit("record without Acct-Status-Type"))
            .when(
                ~known_status
                & (pl.col("status").is_in(list(OTHER_STATUS_TYPES)) | pl.col("status").str.contains(r"^\d{1,3}$"))
            )
            .then(pl.format("unknown Acct-Status-Type {}", "status"))
            .when(~known_status)
            .then(pl.lit("unknown Acct-Status-Type (value not shown)"))
            .when(pl.col("session_id").is_null())
            .then(pl.lit("record without Acct-Session-Id"))
            .when(pl.col("event_ts").is_null())
            .then(pl.lit("record without a readable Event-Timestamp or Timestamp"))
            .when(pl.col("_conflict").is_not_null())
            .then(pl.format("attribute {} repeated with different values", "_conflict"))
            .otherwise(pl.lit("unreadable Acct-Input/Output-Octets"))
            .alias("reason"),
        )
    )
    good = records.filter(~flagged).select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)  # type: ignore[arg-type]
    found = pl.concat(problems).sort("line", maintain_order=True)
    return good, found


def _problems(source: str, lines: list[int], reason: str) -> pl.DataFrame:
    """Problem rows (source, line, reason) at 0-based line indices."""
    return pl.DataFrame(
        {"source": source, "line": [at + 1 for at in lines], "reason": reason},
        schema={"source": pl.String, "line": pl.Int64, "reason": pl.String},
    )


def _event_times(
    records: pl.DataFrame,
    event_ms: np.ndarray,
    event_local: np.ndarray,
    event_utc: np.ndarray,
    timezone: str,
) -> pl.Series:
    """`event_ts` as `_event_time` gives it: from the local times read from FreeRADIUS-written
    values, and from `_event_time` itself for the other values."""
    naive = pl.when(pl.lit(pl.Series(event_local))).then(pl.lit(pl.Series(event_ms))).cast(pl.Datetime("ms"))
    from_text = _utc_from_local(naive, pl.lit(pl.Series(event_utc)), timezone)
    received = _received_s()
    event = records.select(
        pl.coalesce(from_text, pl.from_epoch(received, time_unit="s").dt.replace_time_zone("UTC"))
        .dt.cast_time_unit("ms")
        .alias("event_ts")
    ).to_series()
    other = records["event_timestamp"].is_not_null().to_numpy() & ~event_local
    if other.any():
        event = event.scatter(np.flatnonzero(other), records.filter(other).select(_event_time(timezone)).to_series())
    return event


def format_detail(records: pl.DataFrame, timezone: str) -> str:
    """FreeRADIUS rlm_detail text for rows of the generator's accounting frames."""
    received = (
        pl.from_epoch(pl.col("event_ms") + pl.col("delay_s") * 1000, time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(timezone)
    )
    event = pl.from_epoch(pl.col("event_ms"), time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)

    def line(name: str, value: pl.Expr, quoted: bool = False) -> pl.Expr:
        q = '"' if quoted else ""
        return pl.concat_str([pl.lit(f"\t{name} = {q}"), value.cast(pl.String), pl.lit(q)])

    def counter(column: str, gigawords: bool) -> pl.Expr:
        return (pl.col(column) // GIGAWORD) if gigawords else (pl.col(column) % GIGAWORD)

    not_start = pl.col("status") != "Start"
    record = pl.concat_str(
        [
            received.dt.strftime("%a %b %e %H:%M:%S %Y"),
            line("Acct-Session-Id", pl.col("session_id"), True),
            line("Acct-Status-Type", pl.col("status")),
            line("User-Name", pl.col("user_name"), True),
            line("NAS-IP-Address", pl.col("nas_ip")),
            line("NAS-Identifier", pl.col("nas_identifier"), True),
            line("Framed-Protocol", pl.col("framed_protocol")),
            line("Framed-IP-Address", pl.col("framed_ip")),
            line("Delegated-IPv6-Prefix", pl.col("delegated_prefix")),
            line("Calling-Station-Id", pl.col("calling_station_id"), True),
            pl.when(not_start).then(line("Acct-Session-Time", pl.col("session_time_s"))),
            pl.when(not_start).then(line("Acct-Input-Octets", counter("in_octets", False))),
            pl.when(not_start).then(line("Acct-Output-Octets", counter("out_octets", False))),
            pl.when(not_start).then(line("Acct-Input-Gigawords", counter("in_octets", True))),
            pl.when(not_start).then(line("Acct-Output-Gigawords", counter("out_octets", True))),
            line("Event-Timestamp", event.dt.strftime("%b %e %Y %H:%M:%S %Z"), True),
            line("Acct-Delay-Time", pl.col("delay_s")),
            line("Timestamp", (pl.col("event_ms") // 1000 + pl.col("delay_s"))),
        ],
        separator="\n",
        ignore_nulls=True,
    )
    return "\n\n".join(records.select(record.alias("r"))["r"].to_list()) + "\n\n"


def build_sessions(records: pl.DataFrame) -> pl.DataFrame:
    """One row per (nas, session_id): start, stop (or null), last seen (UTC), identity, addresses, counters.

    A NAS that sends Accounting-On/Off has rebooted: its sessions without a Stop end there.
    """
    nas_events = (
        records.filter(pl.col("status").is_in(["Accounting-On", "Accounting-Off"]))
        .select("nas", pl.col("event_ts").alias("nas_reset_ts"))
        .sort("nas_reset_ts")
    )
    sessions = (
        records.filter(
            pl.col("session_id").is_not_null() & ~pl.col("status").is_in(["Accounting-On", "Accounting-Off"])
        )
        .sort("event_ts")
        .group_by("nas", "session_id")
        .agg(
            (pl.col("event_ts") - pl.duration(seconds=pl.col("session_time_s").fill_null(0))).min().alias("start_ts"),
            pl.col("event_ts").filter(pl.col("status") == "Stop").min().alias("stop_ts"),
            pl.col("event_ts").max().alias("last_seen_ts"),
            pl.col("user_name").drop_nulls().first(),
            pl.col("calling_station_id").drop_nulls().first(),
            pl.col("framed_protocol").drop_nulls().first(),
            pl.col("framed_ip").drop_nulls().first(),
            pl.coalesce("delegated_prefix", "framed_ipv6_prefix").drop_nulls().first().alias("ipv6_prefix"),
            pl.col("in_octets").max().alias("in_octets"),
            pl.col("out_octets").max().alias("out_octets"),
        )
        .sort("last_seen_ts")
    )
    return (
        sessions.join_asof(
            nas_events,
            left_on="last_seen_ts",
            right_on="nas_reset_ts",
            by="nas",
            strategy="forward",
            check_sortedness=False,
        )
        .with_columns(
            stop_ts=pl.when(pl.col("stop_ts").is_null()).then(pl.col("nas_reset_ts")).otherwise(pl.col("stop_ts")),
            closed_by=pl.when(pl.col("stop_ts").is_not_null())
            .then(pl.lit("stop"))
            .when(pl.col("nas_reset_ts").is_not_null())
            .then(pl.lit("nas_reset"))
            .otherwise(pl.lit("open")),
        )
        .drop("nas_reset_ts")
    )


def sessions_to_assignments(sessions: pl.DataFrame, max_silence: dt.timedelta) -> pl.DataFrame:
    """Assignment rows (identity, family, key, prefix_len, valid_from, valid_to, conflict), half-open.

    A session without Stop holds its address until the next session on the same address starts,
    or `max_silence` after its last record; overlapping sessions on one address resolve to the
    latest Start, and the overlap is flagged as a conflict.
    """
    v4 = sessions.filter(pl.col("framed_ip").is_not_null()).with_columns(address=pl.col("framed_ip"))
    v6 = sessions.filter(pl.col("ipv6_prefix").is_not_null()).with_columns(address=pl.col("ipv6_prefix"))
    rows = pl.concat([v4, v6])
    rows = pl.concat([rows, parse_addresses(rows["address"])], how="horizontal")
    rows = rows.filter(pl.col("family").is_not_null())
    silence_end = pl.col("last_seen_ts") + pl.duration(seconds=int(max_silence.total_seconds()))
    rows = rows.with_columns(valid_to=pl.coalesce("stop_ts", silence_end)).sort("start_ts")
    rows = rows.with_columns(
        next_start=pl.col("start_ts").shift(-1).over("family", "key", "prefix_len", order_by="start_ts"),
    ).with_columns(
        conflict=pl.col("next_start").is_not_null() & (pl.col("next_start") < pl.col("valid_to")),
        valid_to=pl.min_horizontal("valid_to", pl.coalesce("next_start", "valid_to")),
    )
    return rows.select(
        "user_name",
        "calling_station_id",
        "framed_protocol",
        "family",
        "key",
        "prefix_len",
        pl.col("start_ts").alias("valid_from"),
        "valid_to",
        "conflict",
        "closed_by",
        "nas",
        "session_id",
    ).filter(pl.col("valid_to") > pl.col("valid_from"))


def split_backward_counters(records: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(records whose counters never go below an earlier record of their session; the others + reason)."""
    ordered = records.sort("event_ts").with_columns(
        _prior_in=pl.col("in_octets").cum_max().shift(1).over("nas", "session_id", order_by="event_ts"),
        _prior_out=pl.col("out_octets").cum_max().shift(1).over("nas", "session_id", order_by="event_ts"),
    )
    backwards = (pl.col("in_octets") < pl.col("_prior_in")) | (pl.col("out_octets") < pl.col("_prior_out"))
    bad = ordered.filter(backwards.fill_null(False))
    good = ordered.filter(~backwards.fill_null(False)).drop("_prior_in", "_prior_out")
    problems = bad.select(
        "source", "line", pl.lit("accounting counters went backwards within the session").alias("reason")
    )
    return good, problems


def billing_usage_by_day(records: pl.DataFrame, week_start: dt.datetime, timezone: str) -> pl.DataFrame:
    """Per (calling_station_id, local day of the week): in/out bytes from cumulative counters.

    Each counter delta is spread over the time between two records (counters that went
    backwards are removed beforehand by split_backward_counters).
    """
    week_end = week_start + dt.timedelta(days=7)
    phones = records.filter(
        pl.col("calling_station_id").is_not_null() & pl.col("status").is_in(["Start", "Interim-Update", "Stop"])
    )
    # A Start carries no counters: the session has moved nothing yet.
    is_start = pl.col("status") == "Start"
    phones = phones.with_columns(
        pl.when(is_start).then(pl.col(c).fill_null(0)).otherwise(pl.col(c)).alias(c)
        for c in ("in_octets", "out_octets")
    ).filter(pl.col("in_octets").is_not_null() & pl.col("out_octets").is_not_null())
    ordered = phones.sort("event_ts").with_columns(
        start_ts=(pl.col("event_ts") - pl.duration(seconds=pl.col("session_time_s").fill_null(0)))
        .min()
        .over("nas", "session_id"),
    )
    intervals = ordered.with_columns(
        prev_ts=pl.col("event_ts").shift(1).over("nas", "session_id", order_by="event_ts"),
        d_in=pl.col("in_octets")
        - pl.col("in_octets").shift(1, fill_value=0).over("nas", "session_id", order_by="event_ts"),
        d_out=pl.col("out_octets")
        - pl.col("out_octets").shift(1, fill_value=0).over("nas", "session_id", order_by="event_ts"),
    ).with_columns(prev_ts=pl.coalesce("prev_ts", "start_ts"))
    intervals = intervals.with_columns(
        d_in=pl.col("d_in").clip(lower_bound=0),
        d_out=pl.col("d_out").clip(lower_bound=0),
        span_ms=(pl.col("event_ts") - pl.col("prev_ts")).dt.total_milliseconds().clip(lower_bound=1),
    )
    days = pl.date_ranges(
        pl.col("prev_ts").dt.convert_time_zone(timezone).dt.date(),
        pl.col("event_ts").dt.convert_time_zone(timezone).dt.date(),
        interval="1d",
    )
    exploded = (
        intervals.with_columns(day=days)
        .explode("day")
        .with_columns(
            day_start=pl.col("day")
            .cast(pl.Datetime("ms"))
            .dt.replace_time_zone(timezone, ambiguous="earliest")
            .dt.convert_time_zone("UTC"),
        )
        .with_columns(
            day_end=pl.col("day_start").dt.offset_by("1d"),
        )
    )
    week_lo = pl.lit(week_start).cast(pl.Datetime("ms", "UTC"))
    week_hi = pl.lit(week_end).cast(pl.Datetime("ms", "UTC"))
    overlap_ms = (
        (pl.min_horizontal("event_ts", "day_end", week_hi) - pl.max_horizontal("prev_ts", "day_start", week_lo))
        .dt.total_milliseconds()
        .clip(lower_bound=0)
    )
    share = overlap_ms / pl.col("span_ms")
    return (
        exploded.with_columns(share=share)
        .filter(pl.col("share") > 0)
        .group_by("calling_station_id", "day")
        .agg(
            (pl.col("d_in") * pl.col("share")).sum().alias("in_bytes"),
            (pl.col("d_out") * pl.col("share")).sum().alias("out_bytes"),
        )
    )
