"""Flow export files of any supported kind: IPFIX message streams, and pcap/pcapng captures of
NetFlow v5, v9 or IPFIX datagrams. The kind is told by content, not by file name."""

from __future__ import annotations

from transforms import ipfix, netflow
from transforms._records import Accumulator, DecodeResult, ExporterState
from transforms.errors import InputFormatError
from transforms.pcap import is_capture, udp_datagrams


def decode_capture(data: bytes, exporter: str, source: str, state: ExporterState) -> DecodeResult:
    """Flows of every NetFlow/IPFIX datagram in a capture; the datagram's source address scopes templates."""
    acc = Accumulator(exporter, source, state)
    for datagram in udp_datagrams(data, source, acc.problems):
        payload = datagram.payload
        if len(payload) < 2:
            acc.problem(datagram.offset, "UDP datagram too short for a flow export header", len(payload))
            continue
        version = int.from_bytes(payload[:2], "big")
        if version == 9:
            netflow.decode_v9_packet(payload, acc, datagram.source, datagram.offset)
        elif version == 5:
            netflow.decode_v5_packet(payload, acc, datagram.source, datagram.offset)
        elif version == ipfix.IPFIX_VERSION:
            pos = 0
            while pos < len(payload):
                consumed = ipfix.decode_message(payload, pos, acc, datagram.source)
                if consumed == 0:
                    break
                pos += consumed
        else:
            acc.problem(
                datagram.offset,
                f"UDP datagram from {datagram.source} is not NetFlow v5/v9 or IPFIX (version {version})",
            )
    return acc.result()


def decode_flow_file(data: bytes, exporter: str, source: str, state: ExporterState) -> DecodeResult:
    """Flows of one (already decompressed) flow file, whatever its kind."""
    if is_capture(data):
        return decode_capture(data, exporter, source, state)
    if data[:2] == ipfix.IPFIX_VERSION.to_bytes(2, "big"):
        return ipfix.decode_ipfix(data, exporter, source, state)
    result = Accumulator(exporter, source, state).result()
    result.problems.append(
        InputFormatError(source, "byte 0", "not an IPFIX stream, a pcap/pcapng capture or nfdump CSV", len(data))
    )
    return result
