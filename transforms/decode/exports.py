"""Flow export files of any supported kind: IPFIX message streams, pcap/pcapng captures of NetFlow
v5, v9 or IPFIX datagrams, nfcapd files, nfdump CSV. The kind is told by content, not by file name."""

from __future__ import annotations

import numpy as np
import polars as pl

from transforms.decode import ipfix, netflow
from transforms.decode._messages import MessageTable, be16, be32, decode_table
from transforms.decode._records import Accumulator, DecodeResult, ExporterState
from transforms.decode.nfcapd import decode_nfcapd, is_nfcapd
from transforms.decode.nfdump_csv import decode_nfdump_csv, is_nfdump_csv
from transforms.decode.pcap import Datagrams, capture_frames, is_capture, udp_payloads
from transforms.decode.pmacct import decode_pmacct, is_pmacct_csv, is_pmacct_json
from transforms.decode.sampling import divide_scaled_counts
from transforms.errors import InputFormatError
from transforms.mapping import Mapper


def decode_capture(data: bytes, exporter: str, source: str, state: ExporterState) -> DecodeResult:
    """Flows of every NetFlow/IPFIX datagram in a capture; the datagram's source address scopes templates."""
    acc = Accumulator(exporter, source, state)
    datagrams = udp_payloads(data, capture_frames(data, source, acc.problems), source, acc.problems)
    buf = np.frombuffer(data, dtype=np.uint8)
    size = datagrams.end - datagrams.start
    short = size < 2
    for index in np.flatnonzero(short).tolist():
        acc.problem(int(datagrams.offset[index]), "UDP datagram too short for a flow export header", int(size[index]))
    version = np.where(short, -1, be16(buf, np.where(short, 0, datagrams.start)))
    for index in np.flatnonzero(~short & ~np.isin(version, (5, 9, ipfix.IPFIX_VERSION))).tolist():
        acc.problem(
            int(datagrams.offset[index]),
            f"UDP datagram from {datagrams.origins[datagrams.origin[index]]} is not NetFlow v5/v9 or IPFIX "
            f"(version {version[index]})",
        )
    _decode_v9(data, buf, datagrams, np.flatnonzero(version == 9), acc)
    netflow.decode_v5_datagrams(buf, datagrams, np.flatnonzero(version == 5), acc)
    _decode_ipfix(data, buf, datagrams, np.flatnonzero(version == ipfix.IPFIX_VERSION), acc)
    return acc.result()


def _decode_v9(data: bytes, buf: np.ndarray, datagrams: Datagrams, chosen: np.ndarray, acc: Accumulator) -> None:
    size = datagrams.end[chosen] - datagrams.start[chosen]
    for index in chosen[size < netflow.V9_HEADER.size].tolist():
        length = int(datagrams.end[index] - datagrams.start[index])
        acc.problem(int(datagrams.offset[index]), f"NetFlow v9 header truncated ({length} bytes)", length)
    chosen = chosen[size >= netflow.V9_HEADER.size]
    if not chosen.size:
        return
    acc.messages += int(chosen.size)
    acc.formats["netflow_v9"] = acc.formats.get("netflow_v9", 0) + int(chosen.size)
    start = datagrams.start[chosen]
    unix_ms = be32(buf, start + 8) * 1000
    table = MessageTable(
        version=9,
        body=start + netflow.V9_HEADER.size,
        end=datagrams.end[chosen],
        domain=be32(buf, start + 16),
        sequence=be32(buf, start + 12),
        export_ms=unix_ms,
        origin=datagrams.origin[chosen],
        origins=datagrams.origins,
        init_ms=unix_ms - be32(buf, start + 4),
    )
    decode_table(data, buf, table, acc, netflow.v9_template_sets)


def _decode_ipfix(data: bytes, buf: np.ndarray, datagrams: Datagrams, chosen: np.ndarray, acc: Accumulator) -> None:
    """IPFIX datagrams: one message each as RFC 7011 sends them, else walked message by message."""
    start = datagrams.start[chosen]
    end = datagrams.end[chosen]
    size = end - start
    whole = np.zeros(chosen.size, dtype=bool)
    enough = size >= ipfix.HEADER.size
    whole[enough] = be16(buf, start[enough] + 2) == size[enough]
    starts = [start[whole]]
    origins = [datagrams.origin[chosen][whole]]
    for index in np.flatnonzero(~whole).tolist():
        found = ipfix.walk_messages(data, int(start[index]), int(end[index]), acc)
        starts.append(found)
        origins.append(np.full(found.size, datagrams.origin[chosen[index]], dtype=np.int64))
    message_starts = np.concatenate(starts)
    order = np.argsort(message_starts, kind="stable")
    message_starts = message_starts[order]
    acc.messages += int(message_starts.size)
    if message_starts.size:
        acc.formats["ipfix"] = acc.formats.get("ipfix", 0) + int(message_starts.size)
    table = ipfix.message_table(buf, message_starts, np.concatenate(origins)[order], datagrams.origins)
    decode_table(data, buf, table, acc, ipfix.parse_template_set)


def decode_flow_file(
    data: bytes,
    exporter: str,
    source: str,
    state: ExporterState,
    nfdump_timezone: str = "UTC",
    mapper: Mapper = map,
    collector_sampling: int | None = None,
    pmacct_renormalized: bool | None = None,
) -> DecodeResult:
    """Flows of one (already decompressed) flow file, whatever its kind (told by content): an IPFIX
    stream, a pcap/pcapng capture of NetFlow v5/v9/IPFIX, an nfcapd file, pmacct print-plugin
    CSV or JSON, or nfdump CSV (local times of text formats in `nfdump_timezone`, the
    collector's zone; nfdump CSV columns derived through `mapper`).

    Collectors' files may hold counts already multiplied by the sampling rate: they come back as
    sampled counts with the rate the file states, else `collector_sampling` (the rate the
    collector is known to have applied), else the largest rate the counts allow (`:inferred`).
    pmacct's rows say it by their SAMPLING_RATE unless `pmacct_renormalized` tells.
    """
    if is_capture(data):
        return decode_capture(data, exporter, source, state)
    if data[:2] == ipfix.IPFIX_VERSION.to_bytes(2, "big"):
        return ipfix.decode_ipfix(data, exporter, source, state)
    if is_nfcapd(data):
        return _decode_nfcapd(data, exporter, source, state, collector_sampling)
    if is_pmacct_csv(data) or is_pmacct_json(data):
        return _decode_pmacct(data, exporter, source, state, nfdump_timezone, collector_sampling, pmacct_renormalized)
    if is_nfdump_csv(data):
        return _decode_nfdump_csv(data, exporter, source, state, nfdump_timezone, mapper, collector_sampling)
    result = Accumulator(exporter, source, state).result()
    result.problems.append(
        InputFormatError(
            source,
            "byte 0",
            "not an IPFIX stream, a pcap/pcapng capture, an nfcapd file, pmacct CSV/JSON or nfdump CSV",
            len(data),
        )
    )
    return result


def _decode_nfcapd(
    data: bytes, exporter: str, source: str, state: ExporterState, collector_sampling: int | None
) -> DecodeResult:
    decoded = decode_nfcapd(data, exporter, source, collector_sampling)
    result = Accumulator(exporter, source, state).result()
    result.flows = decoded.flows
    result.problems = decoded.problems
    result.messages = decoded.blocks
    result.formats[f"nfcapd_{decoded.compression}"] = 1
    return result


def _decode_pmacct(
    data: bytes,
    exporter: str,
    source: str,
    state: ExporterState,
    timezone: str,
    collector_sampling: int | None,
    renormalized: bool | None,
) -> DecodeResult:
    """A pmacct print-plugin file as a DecodeResult: each problem sets one line (one record) aside."""
    result = Accumulator(exporter, source, state).result()
    result.flows, result.problems = decode_pmacct(
        data, exporter, source, collector_sampling, counts_scaled=renormalized, timezone=timezone
    )
    result.formats["pmacct_json" if is_pmacct_json(data) else "pmacct_csv"] = 1
    return result


def _decode_nfdump_csv(
    data: bytes,
    exporter: str,
    source: str,
    state: ExporterState,
    timezone: str,
    mapper: Mapper,
    collector_sampling: int | None,
) -> DecodeResult:
    """An nfdump CSV file as a DecodeResult: each problem sets one line (one record) aside. nfdump
    prints counts multiplied by the rate nfcapd knew, and not the rate itself."""
    result = Accumulator(exporter, source, state).result()
    try:
        flows, problems = decode_nfdump_csv(data, exporter, source, timezone, mapper)
        rates = pl.Series([collector_sampling] * flows.height, dtype=pl.UInt32) if collector_sampling else None
        result.flows = divide_scaled_counts(
            flows, rates, "config:collector_sampling" if rates is not None else "nfdump"
        )
    except InputFormatError as exc:
        problems = [exc]
    result.problems = [InputFormatError(p.source, p.position, p.reason, p.length, records=1) for p in problems]
    result.formats["nfdump_csv"] = 1
    return result
