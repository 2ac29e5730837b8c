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

from transforms.decode._nfcapd_walk import lzo1x_decompress, walk_records
from transforms.decode._records import FLOW_SCHEMA, NO_SELECTOR
from transforms.decode.sampling import divide_scaled_counts
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
    buffer, starts, ends, offsets = _read_blocks(data, compression, source, problems)
    columns, others, broken = walk_records(buffer, starts, ends)
    for block in np.flatnonzero(broken >= 0).tolist():
        at = int(broken[block] - starts[block])
        problems.append(
            InputFormatError(
                source,
                f"block at byte {offsets[block]}, record at block byte {at}",
                "a record's size runs past its block (or is below 4 bytes); the rest of the block is unread",
                int(ends[block] - broken[block]),
            )
        )
    exporters, samplers = _exporters_and_samplers(buffer, others)
    flows = _flow_frame(columns, exporters, samplers, exporter, source, problems, starts, offsets, collector_sampling)
    return NfcapdFile(flows, compression, int(starts.size), problems)


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


def _read_blocks(
    data: bytes, compression: str, source: str, problems: list[InputFormatError]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(all record blocks' bytes back to back, each block's start and end in it, each block's
    offset in the file). A damaged block is one problem; reading stops where the chain breaks."""
    pieces: list[bytes] = []
    starts: list[int] = []
    ends: list[int] = []
    offsets: list[int] = []
    at = FILE_HEADER.size
    filled = 0
    view = memoryview(data)
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
            return _joined(pieces, starts, ends, offsets)
        raw = view[body : body + size]
        if kind == RECORD_BLOCK:
            method = "none" if flags & FLAG_BLOCK_UNCOMPRESSED else compression
            plain = _decompress(raw, method)
            if isinstance(plain, str):
                problems.append(
                    InputFormatError(source, f"byte {at}", f"{method} block of {records} records: {plain}", size)
                )
            else:
                pieces.append(plain)
                starts.append(filled)
                filled += len(plain)
                ends.append(filled)
                offsets.append(at)
        at = body + size
    if at != len(data):
        problems.append(
            InputFormatError(source, f"byte {at}", "the file ends inside a data block header", len(data) - at)
        )
    return _joined(pieces, starts, ends, offsets)


def _joined(
    pieces: list[bytes], starts: list[int], ends: list[int], offsets: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    return buffer, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), offsets


def _decompress(raw: memoryview, method: str) -> bytes | str:
    """A block's records, or why they could not be had."""
    try:
        if method == "none":
            return bytes(raw)
        if method == "lzo":
            return lzo1x_decompress(raw, MAX_BLOCK_BYTES)
        if method == "lz4":
            import lz4.block  # type: ignore[import-untyped]

            return bytes(lz4.block.decompress(bytes(raw), uncompressed_size=MAX_BLOCK_BYTES))
        if method == "bz2":
            plain = bz2.BZ2Decompressor().decompress(bytes(raw), max_length=MAX_BLOCK_BYTES + 1)
        else:
            plain = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(raw))
        if len(plain) > MAX_BLOCK_BYTES:
            return f"decompresses beyond {MAX_BLOCK_BYTES >> 20} MiB, more than a block nfdump writes"
        return plain
    except (OSError, ValueError, EOFError, zstandard.ZstdError) as exc:  # the codecs' corrupt-data errors
        return f"corrupt compressed data ({type(exc).__name__})"
    except Exception as exc:  # lz4.block.LZ4BlockError derives from Exception only
        if type(exc).__name__ == "LZ4BlockError":
            return "corrupt compressed data (LZ4BlockError)"
        raise


def _exporters_and_samplers(
    buffer: np.ndarray, others: np.ndarray
) -> tuple[dict[int, Exporter], dict[tuple[int, int], int]]:
    """Exporter records by sysid, and 1-in-N rates by (sysid, sampler id); later records win."""
    exporters: dict[int, Exporter] = {}
    samplers: dict[tuple[int, int], int] = {}
    raw = buffer.tobytes() if others.size else b""
    for position, kind, size in others.tolist():
        if kind == EXPORTER_INFO and size >= EXPORTER_INFO_RECORD.size:
            _, _, version, ip, family, sysid, domain = EXPORTER_INFO_RECORD.unpack_from(raw, position)
            exporters[sysid] = Exporter(_address(ip, family), domain, version)
        elif kind == SAMPLER and size >= SAMPLER_RECORD.size:
            _, _, sysid, _, sampler, interval, space = SAMPLER_RECORD.unpack_from(raw, position)
            if interval > 0:
                samplers[(sysid, sampler)] = (interval + space) // interval
        elif kind == SAMPLER_LEGACY and size >= SAMPLER_LEGACY_RECORD.size:
            _, _, sampler, interval, _, sysid = SAMPLER_LEGACY_RECORD.unpack_from(raw, position)
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
    exporters: dict[int, Exporter],
    samplers: dict[tuple[int, int], int],
    exporter: str,
    source: str,
    problems: list[InputFormatError],
    starts: np.ndarray,
    offsets: list[int],
    collector_sampling: int | None,
) -> pl.DataFrame:
    problem = columns["problem"]
    bad = np.flatnonzero(problem > 0)
    if bad.size:
        block_of = np.searchsorted(starts, columns["position"][bad], side="right") - 1
        for code in np.unique(problem[bad]).tolist():
            chosen = problem[bad] == code
            first = int(np.flatnonzero(chosen)[0])
            block = int(block_of[first])
            at = int(columns["position"][bad][first] - starts[block])
            problems.append(
                InputFormatError(
                    source,
                    f"block at byte {offsets[block]}, record at block byte {at}"
                    + (f" and {int(chosen.sum()) - 1} more records" if chosen.sum() > 1 else ""),
                    PROBLEMS[int(code)],
                    0,
                    records=int(chosen.sum()),
                )
            )
    good = problem == 0
    raw = pl.DataFrame({name: values[good] for name, values in columns.items()})
    forward = raw.select(
        "exporter_id",
        "flags",
        "selector",
        "first_ms",
        "last_ms",
        "src_hi",
        "src_lo",
        "dst_hi",
        "dst_lo",
        "src_port",
        "dst_port",
        "protocol",
        "packets",
        "bytes",
    )
    # A bidirectional record (NSEL, some IPFIX biflows) also counts the reverse direction.
    reverse = raw.filter((pl.col("out_packets") > 0) | (pl.col("out_bytes") > 0)).select(
        "exporter_id",
        "flags",
        "selector",
        "first_ms",
        "last_ms",
        pl.col("dst_hi").alias("src_hi"),
        pl.col("dst_lo").alias("src_lo"),
        pl.col("src_hi").alias("dst_hi"),
        pl.col("src_lo").alias("dst_lo"),
        pl.col("dst_port").alias("src_port"),
        pl.col("src_port").alias("dst_port"),
        "protocol",
        pl.col("out_packets").alias("packets"),
        pl.col("out_bytes").alias("bytes"),
    )
    rows = pl.concat([forward, reverse])
    known = pl.DataFrame(
        {
            "exporter_id": list(exporters),
            "origin": [e.origin for e in exporters.values()],
            "domain_id": [e.domain_id for e in exporters.values()],
        },
        schema={"exporter_id": pl.Int64(), "origin": pl.String(), "domain_id": pl.UInt32()},
    )
    rates = _sampler_rates(samplers)
    joined = (
        rows.join(known, on="exporter_id", how="left")
        .join(
            rates.rename({"sampler": "selector", "rate": "_selector_rate"}), on=["exporter_id", "selector"], how="left"
        )
        .join(_single_rates(rates), on="exporter_id", how="left")
    )
    flows = joined.select(
        pl.lit(exporter).alias("exporter"),
        pl.col("origin").fill_null(""),
        pl.col("domain_id").fill_null(0),
        pl.when(pl.col("selector") >= 0)
        .then(pl.col("selector").cast(pl.UInt64))
        .otherwise(pl.lit(NO_SELECTOR, dtype=pl.UInt64))
        .alias("selector_id"),
        pl.lit(None, dtype=pl.UInt32).alias("record_rate"),
        pl.lit(None, dtype=pl.String).alias("record_rate_source"),
        pl.from_epoch("first_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("first_ts"),
        pl.from_epoch("last_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("last_ts"),
        "src_hi",
        "src_lo",
        "dst_hi",
        "dst_lo",
        "src_port",
        "dst_port",
        "protocol",
        "packets",
        "bytes",
        pl.coalesce("_selector_rate", "_single_rate").alias("_rate"),
        ((pl.col("flags") & V3_FLAG_SAMPLED) > 0).alias("_scaled"),
    ).cast({name: dtype for name, dtype in FLOW_SCHEMA.items()})
    stated = flows.filter(pl.col("_scaled") & pl.col("_rate").is_not_null())
    unstated = flows.filter(pl.col("_scaled") & pl.col("_rate").is_null()).drop("_rate", "_scaled")
    raw_counts = flows.filter(~pl.col("_scaled")).drop("_rate", "_scaled")
    configured = pl.Series([collector_sampling] * unstated.height, dtype=pl.UInt32) if collector_sampling else None
    return pl.concat(
        [
            divide_scaled_counts(stated.drop("_rate", "_scaled"), stated["_rate"], "nfcapd"),
            divide_scaled_counts(
                unstated, configured, "config:collector_sampling" if configured is not None else "nfcapd"
            ),
            raw_counts,
        ]
    ).select(list(FLOW_SCHEMA))


def _sampler_rates(samplers: dict[tuple[int, int], int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "exporter_id": [sysid for sysid, _ in samplers],
            "sampler": [sampler for _, sampler in samplers],
            "rate": list(samplers.values()),
        },
        schema={"exporter_id": pl.Int64(), "sampler": pl.Int64(), "rate": pl.Int64()},
    )


def _single_rates(rates: pl.DataFrame) -> pl.DataFrame:
    """The rate of each exporter whose samplers all have one rate: what a record naming no
    sampler was scaled by."""
    return (
        rates.group_by("exporter_id")
        .agg(pl.col("rate").n_unique().alias("_n"), pl.col("rate").first().alias("_single_rate"))
        .filter(pl.col("_n") == 1)
        .drop("_n")
    )
