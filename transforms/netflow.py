"""NetFlow v5 and v9 (RFC 3954) export packets: decoding into canonical flow columns, and encoding.

v9 has no message length, so it is only stored inside captures (one UDP datagram = one packet).
Its timestamps are relative to the exporter's sysUptime, turned absolute with the header's clock.
"""

from __future__ import annotations

import struct

import numpy as np

from transforms._records import (
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
    Clock,
    Template,
    handle_data_set,
    record_dtype,
)

V9_HEADER = struct.Struct("!HHIIII")
V5_HEADER = struct.Struct("!HHIIIIBBH")
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


def decode_v9_packet(view: memoryview, acc: Accumulator, origin: str, base: int = 0) -> None:
    """Decodes one NetFlow v9 export packet (a whole UDP payload)."""
    if len(view) < V9_HEADER.size:
        acc.problem(base, f"NetFlow v9 header truncated ({len(view)} bytes)", len(view))
        return
    _version, _count, uptime_ms, unix_secs, sequence, source_id = V9_HEADER.unpack_from(view, 0)
    acc.messages += 1
    acc.formats["netflow_v9"] = acc.formats.get("netflow_v9", 0) + 1
    clock = Clock(unix_secs * 1000, unix_secs * 1000 - uptime_ms)
    pos = V9_HEADER.size
    while pos + 4 <= len(view):
        set_id, length = struct.unpack_from("!HH", view, pos)
        if length < 4 or pos + length > len(view):
            acc.problem(base + pos, f"flowset length {length} invalid; rest of the packet skipped", len(view) - pos)
            break
        payload = view[pos + 4 : pos + length]
        try:
            if set_id in (0, 1):
                for parsed in _v9_templates(payload, set_id == 1, base + pos):
                    acc.state.templates[(origin, source_id, parsed.template_id)] = parsed
            elif set_id >= 256:
                template = acc.state.templates.get((origin, source_id, set_id))
                if template is None:
                    reason = f"data flowset for unknown template {set_id} of source id {source_id}; skipped"
                    acc.problem(base + pos, reason, length)
                else:
                    handle_data_set(acc, payload, template, origin, source_id, clock, base + pos, "v9")
            else:
                acc.problem(base + pos, f"reserved flowset id {set_id}; skipped", length)
        except (ValueError, struct.error) as exc:
            acc.problem(base + pos, str(exc), length)
        pos += length
    # v9 sequence numbers count export packets, so a gap is a number of lost datagrams.
    acc.count_sequence((origin, 9, source_id), sequence, 1, counts_datagrams=True)


def decode_v5_packet(view: memoryview, acc: Accumulator, origin: str, base: int = 0) -> None:
    """Decodes one NetFlow v5 export packet; the header's sampling field gives the rate."""
    if len(view) < V5_HEADER.size:
        acc.problem(base, f"NetFlow v5 header truncated ({len(view)} bytes)", len(view))
        return
    _v, count, uptime_ms, unix_secs, unix_nsecs, sequence, engine_type, engine_id, sampling = V5_HEADER.unpack_from(
        view, 0
    )
    available = (len(view) - V5_HEADER.size) // V5_RECORD.itemsize
    if count > available or count > 30:
        acc.problem(base, f"NetFlow v5 header says {count} records, packet holds {available}", len(view))
        count = min(count, available)
    acc.messages += 1
    acc.formats["netflow_v5"] = acc.formats.get("netflow_v5", 0) + 1
    records = np.frombuffer(view, dtype=V5_RECORD, count=count, offset=V5_HEADER.size)
    engine = (engine_type << 8) | engine_id
    init_ms = unix_secs * 1000 + unix_nsecs // 1_000_000 - uptime_ms
    interval = sampling & 0x3FFF
    n = records.size
    if n:
        columns = {
            "selector_id": np.full(n, NO_SELECTOR, dtype=np.uint64),
            "record_rate": np.zeros(n, dtype=np.uint64),
            "first_ts": init_ms + records["first"].astype(np.int64),
            "last_ts": init_ms + records["last"].astype(np.int64),
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
        acc.batches.append(Batch(columns, origin, engine, None, interval or None, "v5:header" if interval else None))
    acc.count_sequence((origin, 5, engine), sequence, count)


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
