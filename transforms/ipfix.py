"""IPFIX (RFC 7011) message streams: decoding to canonical flow columns, and encoding.

Decoding is vectorised per data set: a fixed-length template becomes a numpy structured dtype
and a whole set is read with one `frombuffer`. Templates are scoped by observation domain and
live in a `TemplateCache` the caller keeps per exporter, so a template sent in an earlier message
(or file) still decodes later data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from transforms.errors import InputFormatError

IPFIX_VERSION = 10
HEADER = struct.Struct("!HHIII")
SET_HEADER = struct.Struct("!HH")
TEMPLATE_SET_ID = 2
OPTIONS_TEMPLATE_SET_ID = 3
VARIABLE_LENGTH = 65535
MAX_MESSAGE = 65535

# Information elements the pipeline reads (RFC 7012 / IANA registry numbers).
IE_OCTETS = 1
IE_PACKETS = 2
IE_PROTOCOL = 4
IE_SRC_PORT = 7
IE_SRC_V4 = 8
IE_DST_PORT = 11
IE_DST_V4 = 12
IE_SRC_V6 = 27
IE_DST_V6 = 28
IE_SAMPLING_INTERVAL = 34
IE_SAMPLER_ID = 48
IE_SAMPLER_RANDOM_INTERVAL = 50
IE_OCTETS_TOTAL = 85
IE_PACKETS_TOTAL = 86
IE_START_S = 150
IE_END_S = 151
IE_START_MS = 152
IE_END_MS = 153
IE_SELECTOR_ID = 302
IE_SAMPLING_PACKET_INTERVAL = 305
IE_SAMPLING_PACKET_SPACE = 306

V4_MAPPED_PREFIX = np.uint64(0xFFFF_0000_0000)

FLOW_SCHEMA: dict[str, pl.DataType] = {
    "exporter": pl.String(),
    "domain_id": pl.UInt32(),
    "selector_id": pl.UInt64(),
    "first_ts": pl.Datetime("ms", "UTC"),
    "last_ts": pl.Datetime("ms", "UTC"),
    "src_hi": pl.UInt64(),
    "src_lo": pl.UInt64(),
    "dst_hi": pl.UInt64(),
    "dst_lo": pl.UInt64(),
    "src_port": pl.UInt16(),
    "dst_port": pl.UInt16(),
    "protocol": pl.UInt8(),
    "packets": pl.UInt64(),
    "bytes": pl.UInt64(),
}


@dataclass(frozen=True)
class Template:
    """A (possibly options) template: field (ie, length, enterprise) list and scope count."""

    template_id: int
    fields: tuple[tuple[int, int, int], ...]
    scope_count: int = 0

    @property
    def fixed_length(self) -> int | None:
        if any(length == VARIABLE_LENGTH for _, length, _ in self.fields):
            return None
        return sum(length for _, length, _ in self.fields)


@dataclass
class TemplateCache:
    """Templates by (observation domain, template id); kept by the caller across files."""

    templates: dict[tuple[int, int], Template] = field(default_factory=dict)


@dataclass
class SamplingAnnouncement:
    """Rate announced in options data for a domain, optionally for one selector/sampler id."""

    domain_id: int
    selector_id: int | None
    rate: int
    source: str


@dataclass
class DecodeResult:
    """Decoded flows of one file, the sampling it announced, and what could not be decoded."""

    flows: pl.DataFrame
    sampling: list[SamplingAnnouncement]
    problems: list[InputFormatError]
    messages: int
    lost_records: int


def _field_dtype(ie: int, length: int, index: int) -> list[tuple[str, str]]:
    name = f"f{index}_{ie}"
    if length in (1, 2, 4, 8):
        return [(name, f">u{length}")]
    if length == 16:
        return [(name + "_hi", ">u8"), (name + "_lo", ">u8")]
    return [(name, f"V{length}")]


def _record_dtype(template: Template) -> np.dtype:
    parts: list[tuple[str, str]] = []
    for index, (ie, length, _enterprise) in enumerate(template.fields):
        parts.extend(_field_dtype(ie, length, index))
    return np.dtype(parts)


def _column(records: np.ndarray, template: Template, ie: int, suffix: str = "") -> np.ndarray | None:
    for index, (field_ie, _length, enterprise) in enumerate(template.fields):
        if field_ie == ie and enterprise == 0:
            return np.asarray(records[f"f{index}_{ie}{suffix}"]).astype(np.uint64)
    return None


def _v4_mapped(v4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(v4.size, dtype=np.uint64), v4.astype(np.uint64) | V4_MAPPED_PREFIX


def _addresses(records: np.ndarray, template: Template, v4_ie: int, v6_ie: int) -> tuple[np.ndarray, np.ndarray] | None:
    v4 = _column(records, template, v4_ie)
    if v4 is not None:
        return _v4_mapped(v4)
    hi = _column(records, template, v6_ie, "_hi")
    lo = _column(records, template, v6_ie, "_lo")
    if hi is not None and lo is not None:
        return hi, lo
    return None


def _flow_columns(records: np.ndarray, template: Template) -> dict[str, np.ndarray] | str:
    """Canonical columns of fixed-length data records, or the reason they cannot be used."""
    n = records.size
    src = _addresses(records, template, IE_SRC_V4, IE_SRC_V6)
    dst = _addresses(records, template, IE_DST_V4, IE_DST_V6)
    if src is None or dst is None:
        return "template has no source/destination address"
    start = _column(records, template, IE_START_MS)
    end = _column(records, template, IE_END_MS)
    if start is None:
        start_s = _column(records, template, IE_START_S)
        end_s = _column(records, template, IE_END_S)
        if start_s is None:
            return "template has no absolute flow start time"
        start = start_s * np.uint64(1000)
        end = end_s * np.uint64(1000) if end_s is not None else start
    if end is None:
        end = start
    packets = _column(records, template, IE_PACKETS)
    if packets is None:
        packets = _column(records, template, IE_PACKETS_TOTAL)
    octets = _column(records, template, IE_OCTETS)
    if octets is None:
        octets = _column(records, template, IE_OCTETS_TOTAL)
    if packets is None or octets is None:
        return "template has no packet or octet count"
    zeros16 = np.zeros(n, dtype=np.uint64)
    selector = _column(records, template, IE_SELECTOR_ID)
    if selector is None:
        selector = _column(records, template, IE_SAMPLER_ID)
    src_port = _column(records, template, IE_SRC_PORT)
    dst_port = _column(records, template, IE_DST_PORT)
    protocol = _column(records, template, IE_PROTOCOL)
    return {
        "selector_id": selector if selector is not None else np.full(n, np.iinfo(np.uint64).max, dtype=np.uint64),
        "first_ts": start.astype(np.int64),
        "last_ts": end.astype(np.int64),
        "src_hi": src[0],
        "src_lo": src[1],
        "dst_hi": dst[0],
        "dst_lo": dst[1],
        "src_port": (src_port if src_port is not None else zeros16).astype(np.uint16),
        "dst_port": (dst_port if dst_port is not None else zeros16).astype(np.uint16),
        "protocol": (protocol if protocol is not None else zeros16).astype(np.uint8),
        "packets": packets,
        "bytes": octets,
    }


def _split_variable_records(payload: memoryview, template: Template) -> list[dict[int, bytes]]:
    """Records of a template with variable-length fields, as ie -> raw bytes (slow path)."""
    records: list[dict[int, bytes]] = []
    pos = 0
    while pos < len(payload):
        record: dict[int, bytes] = {}
        start = pos
        for ie, length, enterprise in template.fields:
            if length == VARIABLE_LENGTH:
                if pos >= len(payload):
                    raise ValueError("variable-length field runs past the set")
                length = payload[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > len(payload):
                        raise ValueError("variable-length field runs past the set")
                    length = int.from_bytes(payload[pos : pos + 2], "big")
                    pos += 2
            if pos + length > len(payload):
                if all(b == 0 for b in payload[start:]):
                    return records  # trailing padding
                raise ValueError("record runs past the end of its set")
            if enterprise == 0:
                record[ie] = bytes(payload[pos : pos + length])
            pos += length
        records.append(record)
        if pos == start:
            break
    return records


def _records_to_fixed(records: list[dict[int, bytes]], template: Template) -> tuple[np.ndarray, Template]:
    """Re-packs variable-length records into fixed-length ones with the same fields' values."""
    kept = [(ie, length, 0) for ie, length, ent in template.fields if ent == 0 and length != VARIABLE_LENGTH]
    fixed = Template(template.template_id, tuple(kept), template.scope_count)
    dtype = _record_dtype(fixed)
    out = np.zeros(len(records), dtype=dtype)
    for row, record in enumerate(records):
        for index, (ie, length, _e) in enumerate(kept):
            raw = record.get(ie, b"\0" * length)
            if length == 16:
                out[row][f"f{index}_{ie}_hi"] = int.from_bytes(raw[:8], "big")
                out[row][f"f{index}_{ie}_lo"] = int.from_bytes(raw[8:], "big")
            elif length in (1, 2, 4, 8):
                out[row][f"f{index}_{ie}"] = int.from_bytes(raw, "big")
    return out, fixed


def _options_values(records: np.ndarray, template: Template) -> list[dict[int, int]]:
    out: list[dict[int, int]] = []
    names = records.dtype.names or ()
    for record in records:
        values: dict[int, int] = {}
        for index, (ie, length, enterprise) in enumerate(template.fields):
            name = f"f{index}_{ie}"
            if enterprise == 0 and name in names and length in (1, 2, 4, 8):
                values[ie] = int(record[name])
        out.append(values)
    return out


def sampling_from_options(values: dict[int, int], domain_id: int) -> SamplingAnnouncement | None:
    """Rate from one options record: IE 305/306, IE 34 or IE 50; None if it announces none."""
    selector = values.get(IE_SELECTOR_ID, values.get(IE_SAMPLER_ID))
    interval = values.get(IE_SAMPLING_PACKET_INTERVAL)
    space = values.get(IE_SAMPLING_PACKET_SPACE)
    if interval and space is not None:
        return SamplingAnnouncement(domain_id, selector, (interval + space) // interval, "ipfix:305/306")
    if values.get(IE_SAMPLING_INTERVAL):
        return SamplingAnnouncement(domain_id, selector, values[IE_SAMPLING_INTERVAL], "ipfix:34")
    if values.get(IE_SAMPLER_RANDOM_INTERVAL):
        return SamplingAnnouncement(domain_id, selector, values[IE_SAMPLER_RANDOM_INTERVAL], "ipfix:50")
    return None


def _parse_template_set(payload: memoryview, options: bool, offset: int, source: str) -> list[Template]:
    templates: list[Template] = []
    pos = 0
    while pos + 4 <= len(payload):
        template_id, field_count = struct.unpack_from("!HH", payload, pos)
        pos += 4
        scope_count = 0
        if options:
            if pos + 2 > len(payload):
                raise InputFormatError(source, f"byte {offset + pos}", "options template header truncated")
            (scope_count,) = struct.unpack_from("!H", payload, pos)
            pos += 2
        if template_id == 0 and field_count == 0:
            break  # padding
        if template_id < 256:
            raise InputFormatError(source, f"byte {offset + pos}", f"template id {template_id} < 256")
        fields: list[tuple[int, int, int]] = []
        for _ in range(field_count):
            if pos + 4 > len(payload):
                raise InputFormatError(source, f"byte {offset + pos}", "template field list truncated")
            ie, length = struct.unpack_from("!HH", payload, pos)
            pos += 4
            enterprise = 0
            if ie & 0x8000:
                if pos + 4 > len(payload):
                    raise InputFormatError(source, f"byte {offset + pos}", "enterprise number truncated")
                (enterprise,) = struct.unpack_from("!I", payload, pos)
                pos += 4
                ie &= 0x7FFF
            fields.append((ie, length, enterprise))
        if field_count == 0:
            continue  # RFC 7011 8.1: a template withdrawal
        templates.append(Template(template_id, tuple(fields), scope_count))
    return templates


def decode_ipfix(data: bytes, exporter: str, source: str, cache: TemplateCache) -> DecodeResult:
    """Flows (FLOW_SCHEMA rows) of a file of back-to-back IPFIX messages, with options and problems."""
    view = memoryview(data)
    pos = 0
    problems: list[InputFormatError] = []
    sampling: list[SamplingAnnouncement] = []
    batches: list[dict[str, np.ndarray]] = []
    messages = 0
    lost = 0
    expected_sequence: dict[int, int] = {}
    while pos < len(view):
        if pos + HEADER.size > len(view):
            problems.append(
                InputFormatError(source, f"byte {pos}", f"truncated message header ({len(view) - pos} bytes left)")
            )
            break
        version, length, _export_time, sequence, domain = HEADER.unpack_from(view, pos)
        if version != IPFIX_VERSION:
            problems.append(InputFormatError(source, f"byte {pos}", f"not an IPFIX message (version {version})"))
            break
        if length < HEADER.size or pos + length > len(view):
            problems.append(
                InputFormatError(
                    source, f"byte {pos}", f"message length {length} runs past the end of the file or is too short"
                )
            )
            break
        messages += 1
        if domain in expected_sequence and sequence != expected_sequence[domain]:
            lost += (sequence - expected_sequence[domain]) % (1 << 32)
        data_records = 0
        set_pos = pos + HEADER.size
        end = pos + length
        while set_pos + SET_HEADER.size <= end:
            set_id, set_length = SET_HEADER.unpack_from(view, set_pos)
            if set_length < SET_HEADER.size or set_pos + set_length > end:
                problems.append(InputFormatError(source, f"byte {set_pos}", f"set length {set_length} invalid"))
                break
            payload = view[set_pos + SET_HEADER.size : set_pos + set_length]
            try:
                if set_id in (TEMPLATE_SET_ID, OPTIONS_TEMPLATE_SET_ID):
                    for template in _parse_template_set(
                        payload, set_id == OPTIONS_TEMPLATE_SET_ID, set_pos + 4, source
                    ):
                        cache.templates[(domain, template.template_id)] = template
                elif set_id >= 256:
                    known = cache.templates.get((domain, set_id))
                    if known is None:
                        problems.append(
                            InputFormatError(
                                source, f"byte {set_pos}", f"data set for unknown template {set_id} in domain {domain}"
                            )
                        )
                    else:
                        records, usable = _decode_data_set(payload, known)
                        data_records += records.size
                        if usable.scope_count:
                            for values in _options_values(records, usable):
                                announcement = sampling_from_options(values, domain)
                                if announcement is not None:
                                    sampling.append(announcement)
                        elif records.size:
                            columns = _flow_columns(records, usable)
                            if isinstance(columns, str):
                                problems.append(
                                    InputFormatError(source, f"byte {set_pos}", f"template {set_id}: {columns}")
                                )
                            else:
                                columns["domain_id"] = np.full(records.size, domain, dtype=np.uint32)
                                batches.append(columns)
            except (ValueError, struct.error) as exc:
                problems.append(InputFormatError(source, f"byte {set_pos}", str(exc)))
            set_pos += set_length
        expected_sequence[domain] = (sequence + data_records) % (1 << 32)
        pos = end
    return DecodeResult(_to_frame(batches, exporter), sampling, problems, messages, lost)


def _decode_data_set(payload: memoryview, template: Template) -> tuple[np.ndarray, Template]:
    length = template.fixed_length
    if length is None:
        return _records_to_fixed(_split_variable_records(payload, template), template)
    if length == 0:
        raise ValueError(f"template {template.template_id} has zero record length")
    count = len(payload) // length
    # Trailing bytes shorter than a record are padding (RFC 7011 3.3.1).
    return np.frombuffer(payload, dtype=_record_dtype(template), count=count), template


def _to_frame(batches: list[dict[str, np.ndarray]], exporter: str) -> pl.DataFrame:
    if not batches:
        return pl.DataFrame(schema=FLOW_SCHEMA)
    columns = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    frame = pl.DataFrame(columns)
    return frame.select(
        pl.lit(exporter).alias("exporter"),
        pl.col("domain_id"),
        pl.col("selector_id"),
        pl.col("first_ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
        pl.col("last_ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
        *[
            pl.col(c)
            for c in ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "protocol", "packets", "bytes")
        ],
    ).cast(FLOW_SCHEMA)  # type: ignore[arg-type]


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
    dtype = _record_dtype(template)
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
