"""NetFlow v5 and v9 (RFC 3954) export packets: decoding into canonical flow columns, and encoding.

v9 has no message length, so it is only stored inside captures (one UDP datagram = one packet).
Its timestamps are relative to the exporter's sysUptime, turned absolute with the header's clock.
"""

from __future__ import annotations

import struct

import numpy as np

from transforms.decode._messages import count_sequences, gather_records
from transforms.decode._records import (
    IE_DST_PORT,
    IE_DST_V4,
    IE_END_UPTIME,
    IE_OCTETS,
    IE_PACKETS,
    IE_PROTOCOL,
    IE_SAMPLER_ID,
    IE_SAMPLER_MODE,
    IE_SAMPLER_RANDOM_INTERVAL,
    IE_SAMPLING_ALGORITHM,
    IE_SAMPLING_INTERVAL,
    IE_SRC_PORT,
    IE_SRC_V4,
    IE_START_UPTIME,
    NO_SELECTOR,
    V4_MAPPED_PREFIX,
    Accumulator,
    Batch,
    Template,
    record_dtype,
)
from transforms.decode.pcap import Datagrams

V9_HEADER = struct.Struct("!HHIIII")
V5_HEADER = struct.Struct("!HHIIIIBBH")
V5_HEADER_DTYPE = np.dtype(
    [
        ("version", ">u2"),
        ("count", ">u2"),
        ("uptime", ">u4"),
        ("unix_secs", ">u4"),
        ("unix_nsecs", ">u4"),
        ("sequence", ">u4"),
        ("engine_type", "u1"),
        ("engine_id", "u1"),
        ("sampling", ">u2"),
    ]
)
V5_RECORD = np.dtype(
    [
        ("src", ">u4"),
        ("dst", ">u4"),
        ("nexthop", ">u4"),
        ("input", ">u2"),
        ("output", ">u2"),
        ("packets", ">u4"),
        ("octets", ">u4"),
        ("first", ">u4"),
        ("last", ">u4"),
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("pad1", "u1"),
        ("flags", "u1"),
        ("proto", "u1"),
        ("tos", "u1"),
        ("src_as", ">u2"),
        ("dst_as", ">u2"),
        ("src_mask", "u1"),
        ("dst_mask", "u1"),
        ("pad2", ">u2"),
    ]
)


def _v9_templates(payload: memoryview, options: bool, offset: int) -> list[Template]:
    out: list[Template] = []
    pos = 0
    while pos + 4 <= len(payload):
        if options:
            if pos + 6 > len(payload):
                break
            template_id, scope_len, option_len = struct.unpack_from("!HHH", payload, pos)
            pos += 6
            if template_id == 0:
                break  # padding
            if scope_len % 4 or option_len % 4 or pos + scope_len + option_len > len(payload):
                raise ValueError(
                    f"options template {template_id}: scope/option lengths {scope_len}/{option_len} invalid"
                )
            count = (scope_len + option_len) // 4
            fields = tuple((*struct.unpack_from("!HH", payload, pos + 4 * i), 0) for i in range(count))
            pos += scope_len + option_len
            out.append(Template(template_id, fields, scope_len // 4, scope_is_ie=False))
            # Options template flowsets carry one template each, then padding to 32 bits.
            break
        template_id, field_count = struct.unpack_from("!HH", payload, pos)
        pos += 4
        if template_id == 0 and field_count == 0:
            break
        if template_id < 256:
            raise ValueError(f"template id {template_id} is reserved (< 256)")
        if field_count == 0 or pos + 4 * field_count > len(payload):
            raise ValueError(f"template {template_id}: {field_count} fields do not fit the flowset")
        fields = tuple((*struct.unpack_from("!HH", payload, pos + 4 * i), 0) for i in range(field_count))
        if any(length == 0 for _, length, _ in fields):
            raise ValueError(f"template {template_id}: a field has length 0")
        pos += 4 * field_count
        out.append(Template(template_id, fields))
    return out


def v9_template_sets(payload: memoryview, options: bool, offset: int) -> list[tuple[int, Template | None]]:
    """(template id, template) of one v9 template or options template flowset."""
    return [(template.template_id, template) for template in _v9_templates(payload, options, offset)]


def decode_v5_datagrams(buf: np.ndarray, datagrams: Datagrams, chosen: np.ndarray, acc: Accumulator) -> None:
    """Decodes the NetFlow v5 datagrams `chosen`; the header's sampling field gives the rate."""
    size = datagrams.end[chosen] - datagrams.start[chosen]
    for index in chosen[size < V5_HEADER.size].tolist():
        length = int(datagrams.end[index] - datagrams.start[index])
        acc.problem(int(datagrams.offset[index]), f"NetFlow v5 header truncated ({length} bytes)", length)
    chosen = chosen[size >= V5_HEADER.size]
    if not chosen.size:
        return
    start = datagrams.start[chosen]
    headers = gather_records(buf, start, np.ones(chosen.size, dtype=np.int64), V5_HEADER_DTYPE)
    count = headers["count"].astype(np.int64)
    available = (datagrams.end[chosen] - start - V5_HEADER.size) // V5_RECORD.itemsize
    for slot in np.flatnonzero((count > available) | (count > 30)).tolist():
        index = int(chosen[slot])
        acc.problem(
            int(datagrams.offset[index]),
            f"NetFlow v5 header says {count[slot]} records, packet holds {available[slot]}",
            int(datagrams.end[index] - datagrams.start[index]),
        )
    count = np.minimum(count, available)
    acc.messages += int(chosen.size)
    acc.formats["netflow_v5"] = acc.formats.get("netflow_v5", 0) + int(chosen.size)
    origin = datagrams.origin[chosen]
    engine = (headers["engine_type"].astype(np.int64) << 8) | headers["engine_id"]
    interval = headers["sampling"].astype(np.int64) & 0x3FFF
    init_ms = (
        headers["unix_secs"].astype(np.int64) * 1000
        + headers["unix_nsecs"].astype(np.int64) // 1_000_000
        - headers["uptime"].astype(np.int64)
    )
    # One batch per (origin, engine, announced interval): what to_frame needs per batch.
    group = (origin.astype(np.int64) << 40) | (engine << 16) | interval
    keys, inverse = np.unique(group, return_inverse=True)
    for k, key in enumerate(keys.tolist()):
        members = np.flatnonzero(inverse == k)
        counts = count[members]
        records = gather_records(buf, start[members] + V5_HEADER.size, counts, V5_RECORD)
        n = records.size
        if not n:
            continue
        init = np.repeat(init_ms[members], counts)
        columns = {
            "selector_id": np.full(n, NO_SELECTOR, dtype=np.uint64),
            "record_rate": np.zeros(n, dtype=np.uint64),
            "first_ts": init + records["first"].astype(np.int64),
            "last_ts": init + records["last"].astype(np.int64),
            "src_hi": np.zeros(n, dtype=np.uint64),
            "src_lo": records["src"].astype(np.uint64) | V4_MAPPED_PREFIX,
            "dst_hi": np.zeros(n, dtype=np.uint64),
            "dst_lo": records["dst"].astype(np.uint64) | V4_MAPPED_PREFIX,
            "src_port": records["sport"].astype(np.uint16),
            "dst_port": records["dport"].astype(np.uint16),
            "protocol": records["proto"].astype(np.uint8),
            "packets": records["packets"].astype(np.uint64),
            "bytes": records["octets"].astype(np.uint64),
        }
        rate = key & 0xFFFF
        origin_name = datagrams.origins[key >> 40]
        acc.batches.append(
            Batch(columns, origin_name, (key >> 16) & 0xFFFF, None, rate or None, "v5:header" if rate else None)
        )
    count_sequences(5, origin, engine, headers["sequence"].astype(np.int64), count, datagrams.origins, acc)


# ---------------------------------------------------------------------------------------------
# Encoding, for round-trip and property tests.

V9_FLOW_TEMPLATE = Template(
    256,
    (
        (IE_SRC_V4, 4, 0),
        (IE_DST_V4, 4, 0),
        (IE_SRC_PORT, 2, 0),
        (IE_DST_PORT, 2, 0),
        (IE_PROTOCOL, 1, 0),
        (IE_PACKETS, 4, 0),
        (IE_OCTETS, 8, 0),
        (IE_START_UPTIME, 4, 0),
        (IE_END_UPTIME, 4, 0),
        (IE_SAMPLER_ID, 1, 0),
    ),
)
V9_SAMPLER_OPTIONS = Template(
    257, ((1, 4, 0), (IE_SAMPLER_ID, 1, 0), (IE_SAMPLER_MODE, 1, 0), (IE_SAMPLER_RANDOM_INTERVAL, 4, 0)), 1, False
)
V9_INTERVAL_OPTIONS = Template(258, ((1, 4, 0), (IE_SAMPLING_INTERVAL, 4, 0), (IE_SAMPLING_ALGORITHM, 1, 0)), 1, False)


def _pad4(body: bytes) -> bytes:
    return body + b"\0" * (-len(body) % 4)


def encode_v9_packet(
    uptime_ms: int,
    unix_secs: int,
    sequence: int,
    source_id: int,
    templates: list[Template],
    data: list[tuple[Template, np.ndarray]],
) -> bytes:
    """One v9 export packet: template flowsets, then a data flowset per (template, records)."""
    body = b""
    count = 0
    for t in templates:
        if t.scope_count:
            scope = t.fields[: t.scope_count]
            option = t.fields[t.scope_count :]
            inner = struct.pack("!HHH", t.template_id, 4 * len(scope), 4 * len(option))
            inner += b"".join(struct.pack("!HH", ie, length) for ie, length, _ in t.fields)
            body += struct.pack("!HH", 1, len(_pad4(inner)) + 4) + _pad4(inner)
        else:
            inner = struct.pack("!HH", t.template_id, len(t.fields)) + b"".join(
                struct.pack("!HH", ie, length) for ie, length, _ in t.fields
            )
            body += struct.pack("!HH", 0, len(inner) + 4) + inner
        count += 1
    for template, records in data:
        raw = _pad4(records.tobytes())
        body += struct.pack("!HH", template.template_id, len(raw) + 4) + raw
        count += records.size
    return V9_HEADER.pack(9, count, uptime_ms, unix_secs, sequence, source_id) + body


def pack_v9_records(template: Template, values: dict[int, np.ndarray]) -> np.ndarray:
    """Fixed-length v9 records from field id -> values."""
    dtype = record_dtype(template)
    n = len(next(iter(values.values())))
    out = np.zeros(n, dtype=dtype)
    for index, (ie, _length, _e) in enumerate(template.fields):
        if ie in values:
            out[f"f{index}_{ie}"] = values[ie]
    return out


def encode_v5_packet(
    records: np.ndarray, uptime_ms: int, unix_secs: int, sequence: int, sampling_interval: int
) -> bytes:
    """One v5 export packet from V5_RECORD rows (at most 30)."""
    header = V5_HEADER.pack(5, records.size, uptime_ms, unix_secs, 0, sequence, 0, 0, (1 << 14) | sampling_interval)
    return header + records.astype(V5_RECORD).tobytes()
