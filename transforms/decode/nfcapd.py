"""nfcapd's own files (nfdump 1.7's layout 2), read without nfdump.

A file is a 40-byte header, then data blocks, each a 12-byte block header and records, LZO, BZ2,
LZ4 or ZSTD compressed as the header says (blocks flagged uncompressed excepted). Flows are V3
records (a header and extension elements); exporter records map a record's exporter id to the
exporter's address and observation domain, and sampler records give each exporter's 1-in-N rate.
The layouts are nfdump's own (`src/lib/nffileV2.h`, `src/lib/nfxV3.h`, `exporter.h`).

nfcapd multiplies the counts of a record by the rate it knew and flags the record sampled. Such
records are turned back into sampled counts with that rate (`divide_scaled_counts`), so volumes
are unchanged and the reconciliation knows the samples a volume rests on. Records not flagged
sampled carry the exporter's raw counts, whose rate is then resolved like any other flow's (an
announcement, else the configured default).

nfdump 1.6's layout 1 is refused with the command that converts it.
"""

from __future__ import annotations

import bz2
import struct
from dataclasses import dataclass

import numpy as np
import polars as pl
import zstandard

from transforms.decode._nfcapd_walk import (
    RATE_UNDIVIDED,
    RecordTable,
    lz4_block_decompress,
    lzo1x_decompress_into,
    scale_back,
)
from transforms.decode._records import FLOW_SCHEMA, NO_SELECTOR
from transforms.decode.sampling import divide_counts
from transforms.errors import InputFormatError

MAGIC = 0xA50C
FILE_HEADER = struct.Struct("<HHIqBBHIqII")  # magic .. NumBlocks: 40 bytes
BLOCK_HEADER = struct.Struct("<IIHH")  # NumRecords, size, type, flags
RECORD_BLOCK = 3
FLAG_BLOCK_UNCOMPRESSED = 0x1
COMPRESSION = {0: "none", 1: "lzo", 2: "bz2", 3: "lz4", 4: "zstd"}
# nfcapd writes blocks of at most 5 MiB (BUFFSIZE); anything bigger once decompressed is not a
# block nfdump could have written, and is refused rather than allowed to fill memory.
MAX_BLOCK_BYTES = 16 << 20
EXPORTER_INFO = 7
SAMPLER_LEGACY = 9
SAMPLER = 15
EXPORTER_INFO_RECORD = struct.Struct("<HHI16sHHI")  # type, size, version, ip, family, sysid, id
SAMPLER_RECORD = struct.Struct("<HHHHqII")  # type, size, sysid, algorithm, id, packet interval, space
SAMPLER_LEGACY_RECORD = struct.Struct("<HHiIHH")  # type, size, id, interval, mode, sysid
V3_FLAG_SAMPLED = 2
AF_INET6 = 10
PROBLEMS = {
    1: "a V3 record's extension element runs past the record",
    2: "a V3 record has no generic flow element (times, counts, ports)",
    3: "a V3 record has no IPv4 or IPv6 address element",
}
MAX_REPORTED = 100


def is_nfcapd(data: bytes) -> bool:
    """Whether `data` starts like an nfdump binary file (either layout, either byte order)."""
    return len(data) >= 4 and data[:2] in (b"\x0c\xa5", b"\xa5\x0c") and data[2:4] in (b"\x01\x00", b"\x02\x00")


@dataclass(frozen=True)
class Exporter:
    """What an exporter record says about the exporter behind a record's exporter id."""

    origin: str
    domain_id: int
    version: int


@dataclass
class NfcapdFile:
    """What one nfcapd file holds: flows (FLOW_SCHEMA), its compression, and what did not decode."""

    flows: pl.DataFrame
    compression: str
    blocks: int
    problems: list[InputFormatError]


def decode_nfcapd(data: bytes, exporter: str, source: str, collector_sampling: int | None = None) -> NfcapdFile:
    """Flows (FLOW_SCHEMA) of one nfcapd file; counts nfcapd scaled are turned back into sampled
    counts with the rate of the file's sampler record (record_rate_source `nfcapd`), else
    `collector_sampling` (`config:collector_sampling`), else the largest rate the counts allow
    (`...:inferred`)."""
    problems: list[InputFormatError] = []
    empty = pl.DataFrame(schema=FLOW_SCHEMA)
    refused = _refuse_header(data, source)
    if refused is not None:
        return NfcapdFile(empty, "", 0, [refused])
    header = FILE_HEADER.unpack_from(data, 0)
    compression = COMPRESSION[header[4]]
    blocks = _block_headers(data, source, problems)
    # Rows for what the block headers say, within what their bytes can hold (a V3 record takes
    # 12 bytes at least; compressed blocks are taken to hold at most 16 times their size).
    table = RecordTable(
        sum(
            min(
                b.records, (b.size if b.flags & FLAG_BLOCK_UNCOMPRESSED or compression == "none" else 16 * b.size) // 12
            )
            for b in blocks
        )
    )
    scratch = np.empty(MAX_BLOCK_BYTES, dtype=np.uint8) if compression != "none" else None
    whole = np.frombuffer(data, dtype=np.uint8)
    others: list[tuple[int, bytes]] = []
    view = memoryview(data)
    for number, block in enumerate(blocks):
        method = "none" if block.flags & FLAG_BLOCK_UNCOMPRESSED else compression
        if method == "none":
            buf, start, end = whole, block.body, block.body + block.size
        else:
            assert scratch is not None
            plain = _decompress(view[block.body : block.body + block.size], method, scratch)
            if isinstance(plain, str):
                problems.append(
                    InputFormatError(
                        source,
                        f"byte {block.offset}",
                        f"{method} block of {block.records} records: {plain}",
                        block.size,
                    )
                )
                continue
            buf, start, end = plain, 0, plain.size
        found, broken = table.walk_block(buf, start, end, number)
        others.extend(found)
        if broken >= 0:
            problems.append(
                InputFormatError(
                    source,
                    f"byte {block.offset} (a block), its record at byte {broken}",
                    "a record's size runs past its block, is below 4 bytes, or the block holds more records "
                    "than its header says; the rest of the block is unread",
                    end - start - broken,
                )
            )
    columns, notes = table.filled()
    exporters, samplers = _exporters_and_samplers(others)
    offsets = [block.offset for block in blocks]
    flows = _flow_frame(columns, notes, exporters, samplers, exporter, source, problems, offsets, collector_sampling)
    return NfcapdFile(flows, compression, len(blocks), problems)


def _refuse_header(data: bytes, source: str) -> InputFormatError | None:
    if len(data) < FILE_HEADER.size:
        return InputFormatError(source, "byte 0", f"nfdump file header cut short ({len(data)} of 40 bytes)", len(data))
    if data[:2] == b"\xa5\x0c":
        return InputFormatError(source, "byte 0", "nfdump file written on a big-endian machine: not supported", 4)
    version = int.from_bytes(data[2:4], "little")
    if version == 1:
        return InputFormatError(
            source,
            "byte 2",
            "nfdump 1.6 file (layout 1): convert it with nfdump 1.7 (`nfdump -r FILE -w NEW`), then read NEW",
            len(data),
        )
    header = FILE_HEADER.unpack_from(data, 0)
    if header[4] not in COMPRESSION:
        return InputFormatError(source, "byte 16", f"unknown nfdump block compression {header[4]}", len(data))
    if header[5] != 0:
        return InputFormatError(source, "byte 17", "encrypted nfdump file: not supported", len(data))
    return None


@dataclass(frozen=True)
class Block:
    """A record block: where its header is, where its (possibly compressed) bytes are, how many
    records its header says it holds, its flags."""

    offset: int
    body: int
    size: int
    records: int
    flags: int


def _block_headers(data: bytes, source: str, problems: list[InputFormatError]) -> list[Block]:
    """The file's record blocks, in order; a block cut short is one problem and ends the list."""
    blocks: list[Block] = []
    at = FILE_HEADER.size
    while at + BLOCK_HEADER.size <= len(data):
        records, size, kind, flags = BLOCK_HEADER.unpack_from(data, at)
        body = at + BLOCK_HEADER.size
        if body + size > len(data):
            problems.append(
                InputFormatError(
                    source,
                    f"byte {at}",
                    f"data block of {size} bytes cut short: the file ends {len(data) - body} bytes into it",
                    len(data) - at,
                )
            )
            return blocks
        if kind == RECORD_BLOCK:
            blocks.append(Block(at, body, size, records, flags))
        at = body + size
    if at != len(data):
        problems.append(
            InputFormatError(source, f"byte {at}", "the file ends inside a data block header", len(data) - at)
        )
    return blocks


def _decompress(raw: memoryview, method: str, scratch: np.ndarray) -> np.ndarray | str:
    """A block's records (LZ4 and LZO into `scratch`), or why they could not be had."""
    try:
        if method == "lzo":
            size = lzo1x_decompress_into(raw, scratch)
            return size if isinstance(size, str) else scratch[:size]
        if method == "lz4":
            size = lz4_block_decompress(raw, scratch)
            return size if isinstance(size, str) else scratch[:size]
        if method == "bz2":
            plain = bz2.BZ2Decompressor().decompress(bytes(raw), max_length=MAX_BLOCK_BYTES + 1)
        else:
            plain = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(raw))
        if len(plain) > MAX_BLOCK_BYTES:
            return f"decompresses beyond {MAX_BLOCK_BYTES >> 20} MiB, more than a block nfdump writes"
        return np.frombuffer(plain, dtype=np.uint8)
    except (OSError, ValueError, EOFError, zstandard.ZstdError) as exc:  # the codecs' corrupt-data errors
        return f"corrupt compressed data ({type(exc).__name__})"


def _exporters_and_samplers(
    others: list[tuple[int, bytes]],
) -> tuple[dict[int, Exporter], dict[tuple[int, int], int]]:
    """Exporter records by sysid, and 1-in-N rates by (sysid, sampler id); later records win."""
    exporters: dict[int, Exporter] = {}
    samplers: dict[tuple[int, int], int] = {}
    for kind, raw in others:
        size = len(raw)
        if kind == EXPORTER_INFO and size >= EXPORTER_INFO_RECORD.size:
            _, _, version, ip, family, sysid, domain = EXPORTER_INFO_RECORD.unpack_from(raw)
            exporters[sysid] = Exporter(_address(ip, family), domain, version)
        elif kind == SAMPLER and size >= SAMPLER_RECORD.size:
            _, _, sysid, _, sampler, interval, space = SAMPLER_RECORD.unpack_from(raw)
            if interval > 0:
                samplers[(sysid, sampler)] = (interval + space) // interval
        elif kind == SAMPLER_LEGACY and size >= SAMPLER_LEGACY_RECORD.size:
            _, _, sampler, interval, _, sysid = SAMPLER_LEGACY_RECORD.unpack_from(raw)
            if interval > 0:
                samplers[(sysid, sampler)] = interval
    return exporters, samplers


def _address(ip: bytes, family: int) -> str:
    """nfdump keeps an address as two host-order 64-bit halves, IPv4 in the low 32 bits of the second."""
    import ipaddress

    high, low = struct.unpack("<QQ", ip)
    if family == AF_INET6:
        return str(ipaddress.IPv6Address((high << 64) | low))
    return str(ipaddress.IPv4Address(low & 0xFFFF_FFFF))


def _flow_frame(
    columns: dict[str, np.ndarray],
    notes: dict[str, np.ndarray],
    exporters: dict[int, Exporter],
    samplers: dict[tuple[int, int], int],
    exporter: str,
    source: str,
    problems: list[InputFormatError],
    offsets: list[int],
    collector_sampling: int | None,
) -> pl.DataFrame:
    named = notes["selector"] >= 0
    selector = np.full(columns["packets"].size, NO_SELECTOR, dtype=np.uint64)
    selector[notes["row"][named]] = notes["selector"][named].astype(np.uint64)
    columns["selector_id"] = selector
    # A bidirectional record (NSEL, some IPFIX biflows) also counts the reverse direction.
    reverse = (notes["reverse_packets"] != 0) | (notes["reverse_bytes"] != 0)
    if reverse.any():
        columns = _with_reverse_rows(
            columns, notes["row"][reverse], notes["reverse_packets"][reverse], notes["reverse_bytes"][reverse]
        )
    rate, code = scale_back(columns, (notes["row"][named], notes["selector"][named]), samplers, collector_sampling)
    packets, octets = columns["packets"], columns["bytes"]
    undivided = np.flatnonzero(code >= RATE_UNDIVIDED)
    if undivided.size:
        # Scaled counts no known rate divides: the largest rate they allow (see divide_counts).
        packets[undivided], octets[undivided], rate[undivided], _ = divide_counts(
            packets[undivided],
            octets[undivided],
            np.zeros(undivided.size, dtype=np.uint64),
            columns["exporter_id"][undivided].astype(np.int64),
        )
    ids = sorted(exporters)
    lookup = np.full(max([*ids, 0]) + 2, len(ids), dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    where = lookup[np.minimum(columns["exporter_id"], lookup.size - 1)]
    origins = pl.Series([exporters[i].origin for i in ids] + [""], dtype=pl.String)
    domains = np.array([exporters[i].domain_id for i in ids] + [0], dtype=np.uint32)
    frame = pl.DataFrame(
        {
            "exporter": pl.Series([exporter], dtype=pl.String).gather(np.zeros(packets.size, dtype=np.int64)),
            "origin": origins.gather(where),
            "domain_id": domains[where],
            "selector_id": columns["selector_id"],
            # Records nfcapd did not scale keep their raw counts and no rate: resolved like other flows.
            "record_rate": pl.Series(rate.astype(np.uint32)).replace(0, None),
            "record_rate_source": RATE_SOURCES.gather(code),
            "first_ts": pl.Series(columns["first_ms"]).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "last_ts": pl.Series(columns["last_ms"]).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "src_hi": columns["src_hi"],
            "src_lo": columns["src_lo"],
            "dst_hi": columns["dst_hi"],
            "dst_lo": columns["dst_lo"],
            "src_port": columns["src_port"],
            "dst_port": columns["dst_port"],
            "protocol": columns["protocol"],
            "packets": packets,
            "bytes": octets,
        }
    )
    problem = columns["problem"]
    bad_notes = problem[notes["row"]] > 0 if notes["row"].size else np.zeros(0, dtype=bool)
    if bad_notes.any():
        _report_bad_records(
            notes["block"][bad_notes],
            notes["position"][bad_notes],
            problem[notes["row"][bad_notes]],
            offsets,
            source,
            problems,
        )
        frame = frame.filter(pl.Series(problem == 0))
    return frame


# record_rate_source by the code scale_back gives.
RATE_SOURCES = pl.Series(
    [
        None,
        "nfcapd",
        "config:collector_sampling",
        "nfcapd:inferred",
        "nfcapd:inferred",
        "config:collector_sampling:inferred",
    ],
    dtype=pl.String,
)


def _with_reverse_rows(
    columns: dict[str, np.ndarray], rows: np.ndarray, reverse_packets: np.ndarray, reverse_bytes: np.ndarray
) -> dict[str, np.ndarray]:
    """The columns with one more row per bidirectional record: its reverse direction."""
    swapped = {
        "src_hi": "dst_hi",
        "src_lo": "dst_lo",
        "dst_hi": "src_hi",
        "dst_lo": "src_lo",
        "src_port": "dst_port",
        "dst_port": "src_port",
    }
    out = {name: np.concatenate([values, columns[swapped.get(name, name)][rows]]) for name, values in columns.items()}
    out["packets"][-rows.size :] = reverse_packets.astype(np.uint64)
    out["bytes"][-rows.size :] = reverse_bytes.astype(np.uint64)
    return out


def _report_bad_records(
    block: np.ndarray,
    position: np.ndarray,
    problem: np.ndarray,
    offsets: list[int],
    source: str,
    problems: list[InputFormatError],
) -> None:
    """One problem per kind of damage: where the first such record is (its block, its offset in
    the block), and how many there are (arguments: of the damaged records, in file order)."""
    for code in np.unique(problem).tolist():
        chosen = np.flatnonzero(problem == code)
        first = int(chosen[0])
        more = f" and {chosen.size - 1} more records" if chosen.size > 1 else ""
        problems.append(
            InputFormatError(
                source,
                f"byte {offsets[int(block[first])]} (a block), its record at byte {int(position[first])}{more}",
                PROBLEMS[int(code)],
                0,
                records=int(chosen.size),
            )
        )
