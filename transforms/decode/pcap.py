"""pcap and pcapng captures: the UDP datagrams inside, with their source address; and a pcap writer."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from transforms.decode._messages import be16
from transforms.decode._walk import pcap_records, pcapng_blocks
from transforms.errors import InputFormatError

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
LINK_NULL, LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_IPV4, LINK_IPV6, LINK_SLL2 = 0, 1, 101, 113, 228, 229, 276


@dataclass(frozen=True)
class Datagram:
    """One UDP payload from a capture: offset of the frame in the file, source address and ports."""

    offset: int
    source: str
    source_port: int
    destination_port: int
    payload: memoryview


def is_capture(data: bytes) -> bool:
    return data[:4] in PCAP_MAGICS or data[:4] == PCAPNG_MAGIC


def _ip_payload(frame: memoryview, link: int) -> memoryview | None:
    if link == LINK_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        pos = 14
        while ethertype in (0x8100, 0x88A8) and len(frame) >= pos + 4:  # VLAN tags
            ethertype = struct.unpack_from("!H", frame, pos + 2)[0]
            pos += 4
        return frame[pos:] if ethertype in (0x0800, 0x86DD) else None
    if link == LINK_SLL:
        return frame[16:] if len(frame) >= 16 and struct.unpack_from("!H", frame, 14)[0] in (0x0800, 0x86DD) else None
    if link == LINK_SLL2:
        return frame[20:] if len(frame) >= 20 and struct.unpack_from("!H", frame, 0)[0] in (0x0800, 0x86DD) else None
    if link == LINK_NULL:
        return frame[4:]
    if link in (LINK_RAW, LINK_IPV4, LINK_IPV6):
        return frame
    return None


def _udp(ip: memoryview) -> tuple[str, int, int, memoryview] | str | None:
    """(source address, source port, destination port, payload), a reason it is unusable, or None if not UDP."""
    if len(ip) < 1:
        return None
    version = ip[0] >> 4
    if version == 4:
        if len(ip) < 20:
            return "truncated IPv4 header"
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        flags_fragment = struct.unpack_from("!H", ip, 6)[0]
        if ip[9] != 17:
            return None
        if flags_fragment & 0x3FFF:
            return "IP fragment (not reassembled)"
        source = str(ipaddress.IPv4Address(bytes(ip[12:16])))
        segment = ip[ihl : min(total, len(ip))]
    elif version == 6:
        if len(ip) < 40:
            return "truncated IPv6 header"
        if ip[6] != 17:
            return "IPv6 extension headers not supported" if ip[6] in (0, 43, 44, 60) else None
        source = str(ipaddress.IPv6Address(bytes(ip[8:24])))
        segment = ip[40 : 40 + struct.unpack_from("!H", ip, 4)[0]]
    else:
        return None
    if len(segment) < 8:
        return "truncated UDP header"
    sport, dport, length = struct.unpack_from("!HHH", segment, 0)
    if length < 8 or length > len(segment):
        return f"UDP length {length} does not match the captured {len(segment)} bytes (snap length too small?)"
    return source, sport, dport, segment[8:length]


def _frame(
    frame: memoryview, link: int, offset: int, source: str, problems: list[InputFormatError]
) -> Iterator[Datagram]:
    ip = _ip_payload(frame, link)
    if ip is None:
        return
    udp = _udp(ip)
    if isinstance(udp, str):
        problems.append(InputFormatError(source, f"byte {offset}", udp))
    elif udp is not None:
        yield Datagram(offset, *udp)


def _pcapng_one_section(data: bytes) -> Frames | None:
    """The frames of the common capture (one little-endian section, every block whole), found by
    a compiled block walk; None for anything else, which the block-by-block walk then reads."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(data) < 12 or bytes(data[8:12]) != b"\x4d\x3c\x2b\x1a":
        return None
    offsets, kinds, lengths, stop = pcapng_blocks(buf, 0, len(data))
    if stop != len(data) or (kinds == 0x0A0D0D0A).sum() != 1:
        return None
    interfaces = offsets[kinds == 1]
    links = np.array([struct.unpack_from("<H", data, int(at) + 8)[0] for at in interfaces], dtype=np.int64)
    enhanced = kinds == 6
    simple = (kinds == 3) & (lengths >= 16)
    if ((kinds == 1) & (lengths < 14)).any() or (enhanced & (lengths < 32)).any() or (simple.any() and not links.size):
        return None
    at = offsets[enhanced]
    interface = np.frombuffer(buf[(at[:, None] + np.arange(8, 12)).ravel()].tobytes(), dtype="<u4").astype(np.int64)
    captured = np.frombuffer(buf[(at[:, None] + np.arange(20, 24)).ravel()].tobytes(), dtype="<u4").astype(np.int64)
    known = np.searchsorted(interfaces, at)  # interfaces described before each packet
    if ((interface >= known) | (20 + captured > lengths[enhanced] - 12)).any():
        return None  # the block-by-block walk names each bad block
    starts = np.concatenate([at + 28, offsets[simple] + 12])
    frame_lengths = np.concatenate([captured, lengths[simple] - 16])
    frame_links = np.concatenate(
        [links[interface] if links.size else interface, np.full(int(simple.sum()), links[0] if links.size else 0)]
    )
    frame_offsets = np.concatenate([at, offsets[simple]])
    order = np.argsort(frame_offsets, kind="stable")
    return Frames(frame_offsets[order], starts[order], frame_lengths[order], frame_links[order])


def _frames(offset: list[int], start: list[int], length: list[int], link: list[int]) -> Frames:
    return Frames(*(np.array(values, dtype=np.int64) for values in (offset, start, length, link)))


def _pcapng(view: memoryview, source: str, problems: list[InputFormatError]) -> Frames:
    offsets: list[int] = []
    starts: list[int] = []
    lengths: list[int] = []
    link_types: list[int] = []
    pos = 0
    endian = "<"
    links: list[int] = []
    while pos < len(view):
        if pos + 12 > len(view):
            left = len(view) - pos
            reason = f"truncated: block header at byte {pos} needs 12 bytes, the file ends after {left}"
            problems.append(InputFormatError(source, f"byte {pos}", reason, left))
            break
        if bytes(view[pos : pos + 4]) == PCAPNG_MAGIC:
            endian = "<" if bytes(view[pos + 8 : pos + 12]) == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        block_type, length = struct.unpack_from(endian + "II", view, pos)
        if length < 12 or length % 4:
            reason = f"pcapng block length {length} invalid; rest of the file skipped"
            problems.append(InputFormatError(source, f"byte {pos}", reason, len(view) - pos))
            break
        if pos + length > len(view):
            left = len(view) - pos
            reason = (
                f"truncated: block at byte {pos} declares {length} bytes, the file ends after {left} "
                "(runs past the end)"
            )
            problems.append(InputFormatError(source, f"byte {pos}", reason, left))
            break
        body = pos + 8
        body_length = length - 12
        if block_type == 1 and body_length >= 2:
            links.append(struct.unpack_from(endian + "H", view, body)[0])
        elif block_type == 6 and body_length >= 20:
            interface, _hi, _lo, captured, _orig = struct.unpack_from(endian + "IIIII", view, body)
            if interface >= len(links) or 20 + captured > body_length:
                problems.append(
                    InputFormatError(
                        source, f"byte {pos}", "enhanced packet block for an unknown interface or too short"
                    )
                )
            else:
                offsets.append(pos)
                starts.append(body + 20)
                lengths.append(captured)
                link_types.append(links[interface])
        elif block_type == 3 and body_length >= 4 and links:
            offsets.append(pos)
            starts.append(body + 4)
            lengths.append(body_length - 4)
            link_types.append(links[0])
        pos += length
    return _frames(offsets, starts, lengths, link_types)


@dataclass
class Frames:
    """Link-layer frames of a capture: where each record starts (for problems), its bytes, link type."""

    offset: np.ndarray
    start: np.ndarray
    length: np.ndarray
    link: np.ndarray


@dataclass
class Datagrams:
    """UDP payloads of a capture, in file order: frame offset, payload [start, end), source address."""

    offset: np.ndarray
    start: np.ndarray
    end: np.ndarray
    origin: np.ndarray
    origins: list[str]


def capture_frames(data: bytes, source: str, problems: list[InputFormatError]) -> Frames:
    """Every frame of a pcap or pcapng capture; a cut or malformed record ends the walk with a problem."""
    if data[:4] == PCAPNG_MAGIC:
        return _pcapng_one_section(data) or _pcapng(memoryview(data), source, problems)
    if data[:4] not in PCAP_MAGICS:
        raise InputFormatError(source, "byte 0", "not a pcap or pcapng capture", len(data))
    if len(data) < 24:
        reason = f"truncated: the pcap file header needs 24 bytes, the file ends after {len(data)}"
        problems.append(InputFormatError(source, "byte 0", reason, len(data)))
        return _frames([], [], [], [])
    endian, _ = PCAP_MAGICS[data[:4]]
    link = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    captured_length = struct.Struct(endian + "I").unpack_from
    end = len(data)
    offsets, lengths, pos = pcap_records(np.frombuffer(data, dtype=np.uint8), 24, end, endian == ">")
    frames = Frames(offsets, offsets + 16, lengths, np.full(offsets.size, link, dtype=np.int64))
    # A cut capture: the bytes after the last whole packet are what was not read.
    left = end - pos
    if 0 < left < 16:
        reason = f"truncated: packet record header at byte {pos} needs 16 bytes, the file ends after {left}"
        problems.append(InputFormatError(source, f"byte {pos}", reason, left))
    elif left:
        captured = captured_length(data, pos + 8)[0]
        reason = (
            f"truncated: packet at byte {pos} declares {captured} captured bytes (and a 16-byte record "
            f"header), the file ends after {left} (runs past the end)"
        )
        problems.append(InputFormatError(source, f"byte {pos}", reason, left))
    return frames


def udp_payloads(data: bytes, frames: Frames, source: str, problems: list[InputFormatError]) -> Datagrams:
    """The UDP payloads of `frames`. Ethernet/raw/SLL frames of plain IPv4 UDP are read for all
    frames at once; any other frame (VLAN tags, IPv6, fragments, damage) goes through `_frame`."""
    buf = np.frombuffer(data, dtype=np.uint8)
    start, length, link = frames.start, frames.length, frames.link
    header = np.full(start.size, -1, dtype=np.int64)  # link-layer header length, -1: not the simple case
    header[np.isin(link, (LINK_RAW, LINK_IPV4))] = 0
    header[link == LINK_NULL] = 4
    ethernet = (link == LINK_ETHERNET) & (length >= 14)
    header[ethernet] = np.where(be16(buf, start[ethernet] + 12) == 0x0800, 14, -1)
    sll = (link == LINK_SLL) & (length >= 16)
    header[sll] = np.where(be16(buf, start[sll] + 14) == 0x0800, 16, -1)
    # Plain IPv4 + UDP that fits its frame: IHL >= 5, protocol 17, not a fragment, lengths consistent.
    ip = start + np.maximum(header, 0)
    room = length - np.maximum(header, 0)
    simple = (header >= 0) & (room >= 28)
    at = ip[simple]
    first = buf[at]
    ihl = (first & 0x0F).astype(np.int64) * 4
    total = be16(buf, at + 2)
    captured = np.minimum(total, room[simple])
    udp_at = at + ihl
    fits = (first >> 4 == 4) & (ihl >= 20) & (buf[at + 9] == 17) & ((be16(buf, at + 6) & 0x3FFF) == 0)
    fits &= ihl + 8 <= captured
    udp_length = be16(buf, np.where(fits, udp_at + 4, at))
    fits &= (udp_length >= 8) & (udp_length <= captured - ihl)
    simple[np.flatnonzero(simple)[~fits]] = False
    chosen = np.flatnonzero(simple)
    at, udp_at, udp_length = at[fits], udp_at[fits], udp_length[fits]
    address = (
        (buf[at + 12].astype(np.uint32) << 24)
        | (buf[at + 13].astype(np.uint32) << 16)
        | (buf[at + 14].astype(np.uint32) << 8)
        | buf[at + 15]
    )
    distinct, origin = np.unique(address, return_inverse=True)
    origins = [str(ipaddress.IPv4Address(int(value))) for value in distinct]
    offset = frames.offset
    parts = [(offset[chosen], udp_at + 8, udp_at + udp_length, origin.astype(np.int64))]
    view = memoryview(data)
    other_origin: dict[str, int] = {}
    slow: list[tuple[int, int, int, int]] = []
    for index in np.flatnonzero(~simple).tolist():
        frame_start, frame_offset = int(start[index]), int(offset[index])
        frame = view[frame_start : frame_start + int(length[index])]
        for datagram in _frame(frame, int(link[index]), frame_offset, source, problems):
            payload = datagram.payload
            payload_start = _offset_in(payload, view) if len(payload) else frame_start
            code = other_origin.setdefault(datagram.source, len(origins) + len(other_origin))
            slow.append((datagram.offset, payload_start, payload_start + len(payload), code))
    origins += list(other_origin)
    if slow:
        columns = np.array(slow, dtype=np.int64).T
        parts.append((columns[0], columns[1], columns[2], columns[3]))
    merged = [np.concatenate(values) for values in zip(*parts, strict=True)]
    order = np.argsort(merged[0], kind="stable")
    offsets, starts, ends, origin_codes = (values[order] for values in merged)
    return Datagrams(offsets, starts, ends, origin_codes, origins)


def _offset_in(part: memoryview, whole: memoryview) -> int:
    """Where a (non-empty) slice of `whole` starts within it."""
    base = np.frombuffer(whole, dtype=np.uint8).__array_interface__["data"][0]
    return int(np.frombuffer(part, dtype=np.uint8).__array_interface__["data"][0] - base)


def write_pcap(packets: list[tuple[float, bytes]], link: int = LINK_ETHERNET) -> bytes:
    """A classic pcap file (microsecond timestamps) of (epoch seconds, frame) pairs."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, link))
    for ts, frame in packets:
        seconds = int(ts)
        out += struct.pack("<IIII", seconds, int(round((ts - seconds) * 1e6)), len(frame), len(frame)) + frame
    return bytes(out)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet_ipv4_frame(src: str, dst: str, protocol: int, transport: bytes, ident: int = 0) -> bytes:
    """An Ethernet II frame carrying an IPv4 packet with the given transport header + payload."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(transport),
        ident & 0xFFFF,
        0x4000,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + header + transport


def udp_segment(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp_segment(sport: int, dport: int, payload: bytes, seq: int = 1, flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, flags, 65535, 0, 0) + payload
