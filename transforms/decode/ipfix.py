"""IPFIX (RFC 7011): message decoding into canonical flow columns, and encoding for tests and the generator.

A stored IPFIX file is messages back to back (RFC 5655 style). Templates and options templates
are scoped by (origin, observation domain), may arrive in any earlier message or file, may be
withdrawn (field count 0) or redefined; the caller's ExporterState keeps them across files.
"""

from __future__ import annotations

import struct

import numpy as np

from transforms.decode._messages import MessageTable, decode_table, fields
from transforms.decode._records import (
    IE_DST_PORT,
    IE_DST_V4,
    IE_DST_V6,
    IE_END_MS,
    IE_OCTETS,
    IE_PACKETS,
    IE_PROTOCOL,
    IE_SAMPLING_INTERVAL,
    IE_SAMPLING_PACKET_INTERVAL,
    IE_SAMPLING_PACKET_SPACE,
    IE_SELECTOR_ID,
    IE_SRC_PORT,
    IE_SRC_V4,
    IE_SRC_V6,
    IE_START_MS,
    Accumulator,
    DecodeResult,
    ExporterState,
    Template,
    record_dtype,
)
from transforms.decode._walk import ipfix_message_starts

IPFIX_VERSION = 10
HEADER = struct.Struct("!HHIII")
SET_HEADER = struct.Struct("!HH")
VERSION_LENGTH = struct.Struct("!HH")
HEADER_DTYPE = np.dtype(
    [("version", ">u2"), ("length", ">u2"), ("export_time", ">u4"), ("sequence", ">u4"), ("domain", ">u4")]
)
TEMPLATE_SET_ID = 2
OPTIONS_TEMPLATE_SET_ID = 3
MAX_MESSAGE = 65535


def parse_template_set(payload: memoryview, options: bool, offset: int) -> list[tuple[int, Template | None]]:
    """(template id, template or None for a withdrawal) of one (options) template set."""
    out: list[tuple[int, Template | None]] = []
    pos = 0
    header = 6 if options else 4
    while pos + header <= len(payload):
        template_id, field_count = struct.unpack_from("!HH", payload, pos)
        scope_count = struct.unpack_from("!H", payload, pos + 4)[0] if options else 0
        pos += header
        if template_id == 0 and field_count == 0:
            break  # set padding
        if template_id < 256 and not (template_id in (2, 3) and field_count == 0):
            raise ValueError(f"template id {template_id} at byte {offset + pos - header} is reserved (< 256)")
        if field_count == 0:
            out.append((template_id, None))  # RFC 7011 8.1: withdrawal
            continue
        if options and (scope_count == 0 or scope_count > field_count):
            raise ValueError(f"options template {template_id}: scope field count {scope_count} of {field_count}")
        fields: list[tuple[int, int, int]] = []
        for _ in range(field_count):
            if pos + 4 > len(payload):
                raise ValueError(f"template {template_id}: field list runs past the end of its set")
            ie, length = struct.unpack_from("!HH", payload, pos)
            pos += 4
            enterprise = 0
            if ie & 0x8000:
                if pos + 4 > len(payload):
                    raise ValueError(f"template {template_id}: enterprise number runs past the end of its set")
                (enterprise,) = struct.unpack_from("!I", payload, pos)
                pos += 4
                ie &= 0x7FFF
            if length == 0:
                raise ValueError(f"template {template_id}: field {ie} has length 0")
            fields.append((ie, length, enterprise))
        out.append((template_id, Template(template_id, tuple(fields), scope_count, True)))
    return out


def walk_messages(data: bytes | memoryview, pos: int, end: int, acc: Accumulator) -> np.ndarray:
    """Start offsets of the whole IPFIX messages back to back in data[pos:end]; what follows the
    last one (a cut message, another format) is one problem."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, pos = ipfix_message_starts(buf, pos, end)
    if pos >= end:
        return starts
    left = end - pos
    if pos + HEADER.size > end:
        acc.problem(
            pos, f"truncated: message header at byte {pos} needs {HEADER.size} bytes, the data ends after {left}", left
        )
        return starts
    version, length = VERSION_LENGTH.unpack_from(data, pos)
    if version != IPFIX_VERSION:
        acc.problem(pos, f"not an IPFIX message (version {version}); rest of the data skipped", left)
    elif length < HEADER.size:
        acc.problem(pos, f"message length {length} is shorter than its header; rest of the data skipped", left)
    else:
        # A file cut off mid-message: the bytes after the last whole message are what was not read.
        acc.problem(
            pos,
            f"truncated: message at byte {pos} declares {length} bytes, the data ends after {left} "
            "(runs past the end); rest of the data skipped",
            left,
        )
    return starts


def message_table(buf: np.ndarray, starts: np.ndarray, origin: np.ndarray, origins: list[str]) -> MessageTable:
    """Header fields of the IPFIX messages starting at `starts` (already checked by walk_messages)."""
    header = fields(buf, starts, HEADER_DTYPE)
    return MessageTable(
        version=IPFIX_VERSION,
        body=starts + HEADER.size,
        end=starts + header["length"].astype(np.int64),
        domain=header["domain"].astype(np.int64),
        sequence=header["sequence"].astype(np.int64),
        export_ms=header["export_time"].astype(np.int64) * 1000,
        origin=origin,
        origins=origins,
    )


def decode_ipfix(data: bytes, exporter: str, source: str, state: ExporterState | None = None) -> DecodeResult:
    """Flows of a file of back-to-back IPFIX messages; problems name the byte offset."""
    acc = Accumulator(exporter, source, state if state is not None else ExporterState())
    starts = walk_messages(data, 0, len(data), acc)
    buf = np.frombuffer(data, dtype=np.uint8)
    acc.messages += starts.size
    if starts.size:
        acc.formats["ipfix"] = acc.formats.get("ipfix", 0) + int(starts.size)
    table = message_table(buf, starts, np.zeros(starts.size, dtype=np.int64), [""])
    decode_table(data, buf, table, acc, parse_template_set)
    return acc.result()


# ---------------------------------------------------------------------------------------------
# Encoding (used by the synthetic generator and the round-trip tests).

FLOW_TEMPLATE_V4 = Template(
    256,
    (
        (IE_START_MS, 8, 0),
        (IE_END_MS, 8, 0),
        (IE_SRC_V4, 4, 0),
        (IE_DST_V4, 4, 0),
        (IE_SRC_PORT, 2, 0),
        (IE_DST_PORT, 2, 0),
        (IE_PROTOCOL, 1, 0),
        (IE_PACKETS, 8, 0),
        (IE_OCTETS, 8, 0),
    ),
)
FLOW_TEMPLATE_V6 = Template(
    257,
    (
        (IE_START_MS, 8, 0),
        (IE_END_MS, 8, 0),
        (IE_SRC_V6, 16, 0),
        (IE_DST_V6, 16, 0),
        (IE_SRC_PORT, 2, 0),
        (IE_DST_PORT, 2, 0),
        (IE_PROTOCOL, 1, 0),
        (IE_PACKETS, 8, 0),
        (IE_OCTETS, 8, 0),
    ),
)


def sampling_options_template(style: str) -> Template:
    """Options template announcing sampling: 'interval' (IE 34) or 'packet_space' (IE 305/306)."""
    if style == "interval":
        return Template(258, ((IE_SELECTOR_ID, 8, 0), (IE_SAMPLING_INTERVAL, 4, 0)), scope_count=1)
    return Template(
        258,
        ((IE_SELECTOR_ID, 8, 0), (IE_SAMPLING_PACKET_INTERVAL, 4, 0), (IE_SAMPLING_PACKET_SPACE, 4, 0)),
        scope_count=1,
    )


def encode_template_set(templates: list[Template]) -> bytes:
    """A template set and/or options template set for the given templates."""
    out = b""
    for options in (False, True):
        body = b""
        for t in templates:
            if bool(t.scope_count) != options:
                continue
            body += struct.pack("!HH", t.template_id, len(t.fields))
            if options:
                body += struct.pack("!H", t.scope_count)
            for ie, length, _e in t.fields:
                body += struct.pack("!HH", ie, length)
        if body:
            set_id = OPTIONS_TEMPLATE_SET_ID if options else TEMPLATE_SET_ID
            out += struct.pack("!HH", set_id, len(body) + 4) + body
    return out


def pack_records(template: Template, columns: dict[int, np.ndarray]) -> np.ndarray:
    """Fixed-length records of a template from ie -> values (16-byte fields as (n, 2) hi/lo)."""
    dtype = record_dtype(template)
    n = len(next(iter(columns.values())))
    out = np.zeros(n, dtype=dtype)
    for index, (ie, length, _e) in enumerate(template.fields):
        values = columns[ie]
        if length == 16:
            out[f"f{index}_{ie}_hi"] = values[:, 0]
            out[f"f{index}_{ie}_lo"] = values[:, 1]
        else:
            out[f"f{index}_{ie}"] = values
    return out


def encode_messages(
    domain_id: int,
    export_time: int,
    first_sequence: int,
    header_sets: bytes,
    template: Template,
    records: np.ndarray,
) -> tuple[bytes, int]:
    """Back-to-back IPFIX messages carrying `records`, the first one prefixed by `header_sets`."""
    record_size = records.dtype.itemsize
    per_message = (MAX_MESSAGE - HEADER.size - SET_HEADER.size - len(header_sets)) // record_size
    out = bytearray()
    sequence = first_sequence
    start = 0
    first = True
    while start < records.size or first:
        chunk = records[start : start + per_message]
        body = header_sets if first else b""
        if chunk.size:
            data = chunk.tobytes()
            body += struct.pack("!HH", template.template_id, len(data) + 4) + data
        out += HEADER.pack(IPFIX_VERSION, HEADER.size + len(body), export_time, sequence % (1 << 32), domain_id)
        out += body
        sequence += chunk.size
        start += per_message
        first = False
    return bytes(out), sequence
