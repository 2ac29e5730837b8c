"""`nfdump -o csv` exports: the legacy 48-column header (nfdump <= 1.7.4) and the 1.7.5+ header.

nfdump prints local time without a zone and has already multiplied counts by the sampling
rate, so rows get sampling_rate 1 with source `nfdump`.

The bytes go to polars' CSV reader as they are: only the columns used, counts and ports as
numbers, the rest as text. Polars gives one row per line after the header (blank lines too), so
row i is the file's line header + 1 + i; a line's own bytes are looked at only for rows that did
not read (blank lines, the Summary trailer, junk), and a number column is read again as text only
when some row of it did not parse as a number.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from transforms.addresses import V4_MAPPED
from transforms.decode._records import FLOW_FIELDS, NO_SELECTOR
from transforms.errors import InputFormatError
from transforms.mapping import Mapper, call

LEGACY = {
    "first": "ts",
    "last": "te",
    "src": "sa",
    "dst": "da",
    "sport": "sp",
    "dport": "dp",
    "proto": "pr",
    "packets": "ipkt",
    "bytes": "ibyt",
    "rpackets": "opkt",
    "rbytes": "obyt",
}
MODERN = {
    "first": "firstSeen",
    "duration": "duration",
    "src": "srcAddr",
    "dst": "dstAddr",
    "sport": "srcPort",
    "dport": "dstPort",
    "proto": "proto",
    "packets": "packets",
    "bytes": "bytes",
}
OPTIONAL = ("rpackets", "rbytes", "duration", "last")
PROTOCOL_NAMES = {
    "TCP": 6,
    "UDP": 17,
    "ICMP": 1,
    "ICMP6": 58,
    "IPV6-ICMP": 58,
    "GRE": 47,
    "ESP": 50,
    "AH": 51,
    "IPIP": 4,
    "IP-ENCAP": 4,
    "IPV6": 41,
    "SCTP": 132,
    "OSPF": 89,
    "PIM": 103,
    "IGMP": 2,
}
TRAILERS = ("Summary", "No matching flows")
# Columns read as numbers by the CSV reader; a value it cannot parse is re-read as text.
NUMBERS: dict[str, pl.DataType] = {
    "sport": pl.Float64(),  # ports may be printed as "443.0"
    "dport": pl.Float64(),
    "packets": pl.UInt64(),
    "bytes": pl.UInt64(),
    "rpackets": pl.UInt64(),
    "rbytes": pl.UInt64(),
    "duration": pl.Float64(),
}
REQUIRED = ["first_ts", "protocol", "src_port", "dst_port", "packets", "bytes", "src_lo", "dst_lo"]
MAX_REPORTED = 1000
CHUNK_BYTES = 1 << 25  # read and decoded 32 MiB at a time: memory is the file plus one chunk, not the file twice
# Lines at the end whose bytes are found by stepping back from the end (the Summary trailer);
# rows further up are located by one vectorised pass over the file.
TAIL_LINES = 4096
HOUR_MS = 3_600_000
MAX_HOURS = 1 << 16  # a zone table beyond ~7 years of hours is not worth it: rows are localised one by one


def is_nfdump_csv(data: bytes) -> bool:
    """Whether `data` starts like an nfdump CSV export (either header)."""
    head = data[:64].lstrip()
    return head.startswith(b"ts,te,td,sa,da") or head.startswith(b"firstSeen,")


def _address_halves(text: str) -> list[int] | None:
    import ipaddress

    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 4:
        return [0, V4_MAPPED | int(address)]
    value = int(address)
    return [value >> 64, value & ((1 << 64) - 1)]


# Octets without leading zeros (as Python's ipaddress, which reads "01.2.3.4" as ambiguous).
DOTTED_QUAD = r"^(0|[1-9]\d{0,2})(\.(0|[1-9]\d{0,2})){3}$"


def _ipv4_value() -> pl.Expr:
    """The 32-bit value of a dotted-quad `_addr` (null if not one, or an octet above 255), in columns."""
    text = pl.col("_addr").str.strip_chars()
    octets = text.str.split(".")
    parts = [octets.list.get(i, null_on_oob=True).cast(pl.UInt64, strict=False) for i in range(4)]
    valid = text.str.contains(DOTTED_QUAD) & pl.all_horizontal(p <= 255 for p in parts)
    value = parts[0] * 16_777_216 + parts[1] * 65_536 + parts[2] * 256 + parts[3]
    return pl.when(valid).then(value).otherwise(None)


def _addresses(frame: pl.DataFrame, column: str, prefix: str) -> pl.DataFrame:
    """`<prefix>_hi` / `<prefix>_lo` of each row's address: IPv4 parsed in columns, the rest (IPv6,
    unusual forms) by Python's ipaddress once per distinct text."""
    distinct = frame.select(pl.col(column).alias("_addr")).unique().with_columns(_v4=_ipv4_value())
    v4 = distinct.filter(pl.col("_v4").is_not_null()).select(
        "_addr",
        pl.lit(0, dtype=pl.UInt64).alias(f"{prefix}_hi"),
        (pl.col("_v4") | V4_MAPPED).alias(f"{prefix}_lo"),
    )
    # Parsed in Python here, not in a polars callback: a callback waits for the GIL inside polars'
    # thread pool, which another thread holding the GIL may be waiting for (a deadlock).
    texts = distinct.filter(pl.col("_v4").is_null() & pl.col("_addr").is_not_null())["_addr"].to_list()
    halves: list[list[int] | list[None]] = [_address_halves(text) or [None, None] for text in texts]
    other = pl.DataFrame(
        {
            "_addr": pl.Series(texts, dtype=pl.String),
            f"{prefix}_hi": pl.Series([h[0] for h in halves], dtype=pl.UInt64),
            f"{prefix}_lo": pl.Series([h[1] for h in halves], dtype=pl.UInt64),
        }
    )
    lookup = pl.concat([v4, other])
    return frame.join(lookup, left_on=column, right_on="_addr", how="left")


def _string_buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (n + 1) and bytes of a text column, laid out contiguously."""
    array = texts.to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string: int64 offsets, one buffer
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], np.int64, len(array) + 1, array.offset * 8)
    raw = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, raw


def _dotted_quads(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit value of each text that is exactly a dotted quad without leading zeros, and which are.

    Vectorised over the column's bytes instead of splitting strings: the dots are found in one pass,
    then each octet's (up to) three digits come in one 4-byte load per row. Anything else (IPv6,
    spaces, junk) is not claimed here and goes to `_addresses`.
    """
    offsets, raw = _string_buffers(texts)
    n, size = len(texts), raw.size
    if not size:
        return np.zeros(n, np.uint32), np.zeros(n, bool)
    start, end = offsets[:-1], offsets[1:]
    length = end - start
    ok = (length >= 7) & (length <= 15)
    # Digit values (a non-digit is 10 or more), three bytes of padding in front, one behind.
    digit = np.full(size + 4, 255, np.uint8)
    np.subtract(raw, 48, out=digit[3:-1])
    is_dot = digit[3:-1] == 254
    spoiled = np.flatnonzero((digit[3:-1] > 9) & ~is_dot)
    if spoiled.size:
        ok[np.searchsorted(offsets, spoiled, "right") - 1] = False
    dot_at = np.flatnonzero(is_dot)
    before = np.searchsorted(dot_at, offsets)  # dots ahead of each row's start
    ok &= np.diff(before) == 3
    last_dot = max(dot_at.size - 1, 0)
    # words[j - 1] holds the digits of bytes j-4 .. j-1 (little-endian: j-1 in the top byte).
    words = np.ndarray((size + 1,), "<u4", digit, 0, (1,))
    value = np.zeros(n, np.uint32)
    begin = start
    for k in range(4):
        stop = dot_at[np.minimum(before[:-1] + k, last_dot)] if dot_at.size and k < 3 else end
        width = stop - begin
        ok &= (width >= 1) & (width <= 3)
        word = words[np.clip(stop, 1, size) - 1]
        three = np.clip(width, 1, 3).astype(np.uint32)
        octet = (word >> 24) + ((word >> 16) & 255) * 10 * (width >= 2) + ((word >> 8) & 255) * 100 * (width >= 3)
        leading = (word >> (32 - 8 * three)) & 255
        ok &= (octet <= 255) & ~((width >= 2) & (leading == 0))
        value = (value << np.uint32(8)) | (octet & np.uint32(255))
        begin = stop + 1
    return value, ok


def _address_columns(texts: pl.Series, prefix: str) -> list[pl.Series]:
    """`<prefix>_hi` / `<prefix>_lo` of each text: canonical dotted quads in bulk, any other text as
    `_addresses` reads it, once per distinct text."""
    value, quad = _dotted_quads(texts)
    hi = np.zeros(len(texts), np.uint64)
    lo = value | np.uint64(V4_MAPPED)
    valid = quad.copy()
    rest = np.flatnonzero(~quad)
    if rest.size:
        others = pl.DataFrame({"a": texts.gather(rest)})
        halves = _addresses(others, "a", prefix)
        known = halves[f"{prefix}_lo"].is_not_null().to_numpy()
        hi[rest] = halves[f"{prefix}_hi"].fill_null(0).to_numpy()
        lo[rest] = halves[f"{prefix}_lo"].fill_null(0).to_numpy()
        valid[rest] = known
    mask = pl.Series(valid)
    return [
        pl.select(pl.when(mask).then(pl.Series(hi))).to_series().alias(f"{prefix}_hi"),
        pl.select(pl.when(mask).then(pl.Series(lo))).to_series().alias(f"{prefix}_lo"),
    ]


def _timestamp(column: str, timezone: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    parsed = pl.coalesce(
        text.str.strptime(pl.Datetime("ms"), "%Y-%m-%d %H:%M:%S%.f", strict=False),
        text.str.strptime(pl.Datetime("ms"), "%Y-%m-%d %H:%M:%S", strict=False),
    )
    return parsed.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


def _localise(naive: pl.Series, timezone: str) -> pl.Series:
    """UTC instants of local times (ambiguous: the earliest; non-existent: null), as `_timestamp` gives them.

    A zone's offset is looked up once per hour of the file's span rather than once per row; rows in
    an hour whose start and end differ (a change of offset inside) go one by one.
    """
    known = naive.is_not_null().to_numpy()
    if timezone == "UTC" or not known.any():
        return _localise_rows(naive, timezone)
    local = naive.to_physical().fill_null(0).to_numpy()
    hour = local // HOUR_MS
    low, high = int(hour[known].min()), int(hour[known].max())
    if high - low >= MAX_HOURS:
        return _localise_rows(naive, timezone)
    starts = np.arange(low, high + 1, dtype=np.int64) * HOUR_MS

    def offset(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zoned = (
            pl.Series(at)
            .cast(pl.Datetime("ms"))
            .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        )
        return at - zoned.to_physical().fill_null(0).to_numpy(), zoned.is_not_null().to_numpy()

    (begin, begins), (finish, finishes) = offset(starts), offset(starts + HOUR_MS - 1)
    steady = begins & finishes & (begin == finish)
    slot = np.where(known, hour - low, 0)
    simple = known & steady[slot]
    out = pl.Series(np.where(simple, local - begin[slot], 0)).cast(pl.Datetime("ms", "UTC"))
    rest = np.flatnonzero(~simple)
    if rest.size:
        out = out.scatter(rest, _localise_rows(naive.gather(rest), timezone))
    return out


def _localise_rows(naive: pl.Series, timezone: str) -> pl.Series:
    zoned = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return zoned.dt.convert_time_zone("UTC").dt.cast_time_unit("ms")


def _timestamps(texts: pl.Series, timezone: str) -> pl.Series:
    """`_timestamp` of a text column: the usual form parsed in bulk, anything else as `_timestamp` reads it."""
    parsed = texts.str.strptime(pl.Datetime("ms"), "%Y-%m-%d %H:%M:%S%.f", strict=False)
    out = _localise(parsed, timezone)
    unread = np.flatnonzero((parsed.is_null() & texts.is_not_null()).to_numpy())
    if unread.size:
        again = pl.DataFrame({"t": texts.gather(unread)}).select(_timestamp("t", timezone).dt.cast_time_unit("ms"))
        out = out.scatter(unread, again.to_series())
    return out


def _protocol_expr(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars().str.to_uppercase()
    return pl.coalesce(
        text.cast(pl.UInt8, strict=False),
        text.replace_strict(PROTOCOL_NAMES, default=None, return_dtype=pl.UInt8),
    )


def _protocols(texts: pl.Series) -> pl.Series:
    """Protocol numbers of names or numbers: TCP and UDP in bulk, other texts once per distinct text."""
    text = pl.lit(texts)
    out = pl.select(
        pl.when(text == "TCP").then(pl.lit(6, pl.UInt8)).when(text == "UDP").then(pl.lit(17, pl.UInt8))
    ).to_series()
    rest = np.flatnonzero((out.is_null() & texts.is_not_null()).to_numpy())
    if rest.size:
        others = texts.gather(rest)
        distinct = pl.DataFrame({"t": others.unique()}).with_columns(p=_protocol_expr("t"))
        out = out.scatter(rest, others.replace_strict(distinct["t"], distinct["p"], return_dtype=pl.UInt8))
    return out


def _number(value: pl.Series, dtype: pl.DataType) -> pl.Series:
    """A number column as read, or from its text as before (stripped, null if not a number)."""
    if value.dtype == pl.String:
        return value.str.strip_chars().cast(dtype, strict=False)
    return value.cast(dtype, strict=False)


def _derive(frame: pl.DataFrame, names: dict[str, str], timezone: str, mapper: Mapper) -> pl.DataFrame:
    """The flow columns of each row (null where a value cannot be read), plus reverse counts.

    The address, time and protocol columns are derived through `mapper` (independent of each other)."""
    pieces: list[Callable[[], Any]] = [
        lambda: _address_columns(frame[names["src"]], "src"),
        lambda: _address_columns(frame[names["dst"]], "dst"),
        lambda: _timestamps(frame[names["first"]], timezone),
        lambda: _protocols(frame[names["proto"]]),
    ]
    if "last" in names:
        pieces.append(lambda: _timestamps(frame[names["last"]], timezone))
    results = list(mapper(call, pieces))
    src, dst, first_ts, protocol = results[:4]
    first = first_ts.alias("first_ts")
    if "last" in names:
        last = results[4]
    elif "duration" in names:
        seconds = _number(frame[names["duration"]], pl.Float64()).fill_null(0)
        millis = (seconds * 1000).cast(pl.Int64, strict=False)
        last = pl.select(pl.lit(first) + pl.duration(milliseconds=pl.lit(millis))).to_series()
    else:
        last = first
    columns = [
        first,
        last.alias("last_ts"),
        *src,
        *dst,
        _number(frame[names["sport"]], pl.Float64()).cast(pl.UInt16, strict=False).alias("src_port"),
        _number(frame[names["dport"]], pl.Float64()).cast(pl.UInt16, strict=False).alias("dst_port"),
        protocol.alias("protocol"),
        _number(frame[names["packets"]], pl.UInt64()).alias("packets"),
        _number(frame[names["bytes"]], pl.UInt64()).alias("bytes"),
    ]
    if "rbytes" in names:
        # Bidirectional records (NSEL) carry the reverse direction in opkt/obyt.
        rbytes = _number(frame[names["rbytes"]], pl.UInt64()).fill_null(0)
        rpackets = (
            _number(frame[names["rpackets"]], pl.UInt64()).fill_null(0)
            if "rpackets" in names
            else pl.zeros(frame.height, pl.UInt64, eager=True)
        )
        columns += [rpackets.alias("_rpackets"), rbytes.alias("_rbytes")]
    return pl.DataFrame(columns)


def _header(data: bytes, source: str) -> tuple[int, int, int, list[str]]:
    """The header's line index (blank lines may come first), where it starts and where the rows
    begin (bytes), and its names."""
    position, index = 0, 0
    while True:
        end = data.find(b"\n", position)
        line = data[position : len(data) if end < 0 else end]
        if line.decode("utf-8", errors="replace").strip():
            break
        if end < 0:
            raise InputFormatError(source, "line 1", "no nfdump CSV header")
        position, index = end + 1, index + 1
    names = pl.read_csv(io.BytesIO(line + b"\n"), infer_schema=False, quote_char=None, encoding="utf8-lossy").columns
    return index, position, len(data) if end < 0 else end + 1, names


def _read(text: bytes, dtypes: dict[str, pl.DataType], encoding: str) -> pl.DataFrame:
    return pl.read_csv(  # bytes in memory (io.BytesIO): no IO
        io.BytesIO(text),
        columns=list(dtypes),
        schema_overrides=dtypes,
        infer_schema=False,
        quote_char=None,  # nfdump never quotes: a stray quote must not join lines
        truncate_ragged_lines=True,
        ignore_errors=True,  # a number that does not parse is null here and read again as text
        encoding=encoding,  # type: ignore[arg-type]
    )


def _lines(data: bytes, body: int, height: int, rows: np.ndarray) -> list[bytes]:
    """The bytes of the given rows' lines (row i is the i-th line from byte `body`, `height` rows up
    to the end of `data`), without line end."""
    spans: dict[int, tuple[int, int]] = {}
    if rows.size and height - int(rows[0]) <= TAIL_LINES:
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        wanted = set(rows.tolist())
        for row in range(height - 1, int(rows[0]) - 1, -1):
            start = max(data.rfind(b"\n", body, end) + 1, body)
            if row in wanted:
                spans[row] = (start, end)
            end = start - 1
    else:
        view = np.frombuffer(data, np.uint8)
        ends = np.concatenate(
            [np.zeros(0, np.int64)]
            + [np.flatnonzero(view[at : at + (1 << 24)] == 10) + at for at in range(body, len(data), 1 << 24)]
        )
        count = ends.size + (1 if len(data) > (int(ends[-1]) + 1 if ends.size else body) else 0)
        assert count == height, f"{count} lines after the header but {height} rows read"
        starts = np.concatenate([[body], ends + 1])
        ends = np.concatenate([ends, [len(data)]])
        spans = {int(r): (int(starts[r]), int(ends[r])) for r in rows}
    return [data[spans[int(r)][0] : spans[int(r)][1]] for r in rows]


def _chunks(data: bytes, body: int) -> list[tuple[int, int]]:
    """Byte ranges of about CHUNK_BYTES from `body` to the end, each ending after a line end."""
    ranges, start = [], body
    while True:
        cut = data.find(b"\n", start + CHUNK_BYTES) + 1 if start + CHUNK_BYTES < len(data) else 0
        end = cut if cut > 0 else len(data)
        ranges.append((start, end))
        if end == len(data):
            return ranges
        start = end


def decode_nfdump_csv(
    data: bytes, exporter: str, source: str, timezone: str, mapper: Mapper = map
) -> tuple[pl.DataFrame, list[InputFormatError]]:
    """Flows (FLOW_SCHEMA plus sampling) of an nfdump CSV export, and the lines that could not be
    read; a chunk's columns are derived through `mapper`."""
    header_line, header_start, body, header = _header(data, source)
    names = LEGACY if "ts" in header else MODERN
    missing = [c for key, c in names.items() if key not in OPTIONAL and c not in header]
    if missing:
        raise InputFormatError(source, "line 1", f"nfdump CSV header lacks {missing}")
    names = {key: c for key, c in names.items() if c in header}
    dtypes = {c: NUMBERS.get(key, pl.String()) for key, c in names.items()}
    view = memoryview(data)
    parts: list[pl.DataFrame] = []
    problems: list[InputFormatError] = []
    unread = 0
    first_line = header_line + 2  # the file's line number (1-based) of the first row
    # Chunk by chunk (each with the header in front), so that memory beyond the file's own bytes
    # is a chunk's columns plus the flows so far.
    for start, end in _chunks(data, body):
        text = b"".join([view[header_start:body], view[start:end]])
        chunk = _decode_chunk(text, body - header_start, names, dtypes, timezone, mapper, end == len(data))
        del text
        for row, column in chunk.unread:
            if unread < MAX_REPORTED:
                problems.append(InputFormatError(source, f"line {first_line + row}", f"unreadable {column}"))
            unread += 1
        if chunk.cut:
            # nfdump ends every line: a last line without one was cut off, and its last field may
            # read as a smaller number (98765 bytes cut to 98). Before a Summary trailer nothing is cut.
            at = data.rindex(b"\n") + 1
            reason = f"truncated: the line at byte {at} has no line end, the file ends after {len(data)}"
            line = f"line {first_line + chunk.rows - 1}"
            problems.insert(0, InputFormatError(source, line, reason, len(data) - at))
        first_line += chunk.rows
        parts.append(chunk.flows)
        if chunk.trailer:
            break
    if unread > MAX_REPORTED:
        problems.append(InputFormatError(source, "lines", f"{unread - MAX_REPORTED} more unreadable lines"))
    # Chunks stay chunks (no copy into one buffer): the flows are most of the memory a file takes.
    flows = pl.concat(parts, rechunk=False)
    both = [flows.select("first_ts", "last_ts", *FLOW_FIELDS)]
    reverse = flows.filter(pl.col("_rbytes") > 0) if "_rbytes" in flows.columns else flows.clear()
    if reverse.height:
        both.append(
            reverse.select(
                "first_ts",
                "last_ts",
                pl.col("dst_hi").alias("src_hi"),
                pl.col("dst_lo").alias("src_lo"),
                pl.col("src_hi").alias("dst_hi"),
                pl.col("src_lo").alias("dst_lo"),
                pl.col("dst_port").alias("src_port"),
                pl.col("src_port").alias("dst_port"),
                "protocol",
                pl.col("_rpackets").alias("packets"),
                pl.col("_rbytes").alias("bytes"),
            )
        )
    out = pl.concat(both, rechunk=False).select(
        pl.lit(exporter).alias("exporter"),
        pl.lit("nfdump").alias("origin"),
        pl.lit(0, dtype=pl.UInt32).alias("domain_id"),
        pl.lit(NO_SELECTOR, dtype=pl.UInt64).alias("selector_id"),
        pl.lit(1, dtype=pl.UInt32).alias("record_rate"),
        pl.lit("nfdump").alias("record_rate_source"),
        "first_ts",
        "last_ts",
        *FLOW_FIELDS,
    )
    return out, problems


@dataclass
class _Chunk:
    flows: pl.DataFrame  # the rows read (blank lines, unreadable ones and what follows a trailer left out)
    rows: int  # lines in the chunk, after its header
    unread: list[tuple[int, str]]  # (row, the first required column that could not be read)
    trailer: bool  # a Summary / No matching flows line ends what is read
    cut: bool  # the last row was a line without line end, the file's last


def _decode_chunk(
    text: bytes,
    body: int,
    names: dict[str, str],
    dtypes: dict[str, pl.DataType],
    timezone: str,
    mapper: Mapper,
    last: bool,
) -> _Chunk:
    """One chunk: a header line, then rows from byte `body` (the file's end when `last`)."""
    encoding = "utf8"
    try:
        frame = _read(text, dtypes, encoding)
    except pl.exceptions.ComputeError:
        encoding = "utf8-lossy"  # not UTF-8: read as before, bad bytes replaced
        frame = _read(text, dtypes, encoding)
    flows = _derive(frame, names, timezone, mapper)
    numbers = [c for key, c in names.items() if key in NUMBERS]
    suspect = flows.select(pl.any_horizontal(pl.col(REQUIRED).is_null())).to_series()
    if numbers:
        suspect = suspect | frame.select(pl.any_horizontal(pl.col(numbers).is_null())).to_series()
    odd = np.flatnonzero(suspect.to_numpy())
    keep = np.ones(frame.height, bool)
    end = frame.height
    for row, line in zip(odd, _lines(text, body, frame.height, odd), strict=True):
        stripped = line.decode("utf-8", errors="replace").strip()
        if stripped in TRAILERS:
            end = int(row)
            break
        if not stripped:
            keep[row] = False  # a blank line
    trailer = end < frame.height
    cut = not trailer and last and end > 0 and not text.endswith(b"\n")
    end -= int(cut)
    odd = odd[(odd < end) & keep[odd]]
    unread: list[tuple[int, str]] = []
    if odd.size:
        flows = _read_again(text, frame, flows, names, odd, encoding, timezone, mapper)
        for row, values in zip(odd, flows[odd].select(REQUIRED).iter_rows(), strict=True):
            missing = [c for c, v in zip(REQUIRED, values, strict=True) if v is None]
            if missing:
                unread.append((int(row), missing[0]))
                keep[row] = False
    kept = flows.head(end)
    if not keep[:end].all():
        kept = kept.filter(pl.Series(keep[:end]))
    return _Chunk(kept.rechunk(), frame.height, unread, trailer, cut)  # one buffer per column: concat keeps it


def _read_again(
    text: bytes,
    frame: pl.DataFrame,
    flows: pl.DataFrame,
    names: dict[str, str],
    rows: np.ndarray,
    encoding: str,
    timezone: str,
    mapper: Mapper,
) -> pl.DataFrame:
    """`flows` with the given rows derived again from their text where the reader gave a number column none."""
    nulls = frame[rows].null_count()
    again = [c for key, c in names.items() if key in NUMBERS and nulls[c][0] > 0]
    if not again:
        return flows
    texts = _read(text, dict.fromkeys(again, pl.String()), encoding)
    fixed = _derive(frame[rows].with_columns(texts[rows]), names, timezone, mapper)
    return flows.with_columns(flows[c].scatter(rows, fixed[c]) for c in flows.columns)
