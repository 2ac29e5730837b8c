"""Template-driven flow records shared by IPFIX and NetFlow v9: templates, decoding state, columns.

Records of a fixed-length template decode as one numpy structured array per data set; the
canonical columns are then derived with vector arithmetic. Every failure is reported as an
InputFormatError naming the file and byte offset, never raised past the decoder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from transforms.decode._walk import sequence_gaps
from transforms.errors import InputFormatError

if TYPE_CHECKING:
    from transforms.decode._trace import GroupTrace

VARIABLE_LENGTH = 65535
NO_SELECTOR = (1 << 64) - 1
NTP_EPOCH_OFFSET_S = 2_208_988_800
SEQUENCE_MODULUS = 1 << 32
V4_MAPPED_PREFIX = np.uint64(0xFFFF_0000_0000)

# Information elements (IPFIX registry; NetFlow v9 field types 1-127 share the numbers).
IE_OCTETS = 1
IE_PACKETS = 2
IE_PROTOCOL = 4
IE_SRC_PORT = 7
IE_SRC_V4 = 8
IE_DST_PORT = 11
IE_DST_V4 = 12
IE_END_UPTIME = 21
IE_START_UPTIME = 22
IE_SRC_V6 = 27
IE_DST_V6 = 28
IE_SAMPLING_INTERVAL = 34
IE_SAMPLING_ALGORITHM = 35
IE_SAMPLER_ID = 48
IE_SAMPLER_MODE = 49
IE_SAMPLER_RANDOM_INTERVAL = 50
IE_OCTETS_TOTAL = 85
IE_PACKETS_TOTAL = 86
IE_DOMAIN_ID = 149
IE_START_S = 150
IE_END_S = 151
IE_START_MS = 152
IE_END_MS = 153
IE_START_US = 154
IE_END_US = 155
IE_START_NS = 156
IE_END_NS = 157
IE_START_DELTA_US = 158
IE_END_DELTA_US = 159
IE_SYSTEM_INIT_MS = 160
IE_DURATION_MS = 161
IE_SELECTOR_ID = 302
IE_SAMPLING_PACKET_INTERVAL = 305
IE_SAMPLING_PACKET_SPACE = 306

FLOW_SCHEMA: dict[str, pl.DataType] = {
    "exporter": pl.String(),
    "origin": pl.String(),
    "domain_id": pl.UInt32(),
    "selector_id": pl.UInt64(),
    "record_rate": pl.UInt32(),
    "record_rate_source": pl.String(),
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
    """A (possibly options) template: (field id, length, enterprise) list and scope field count.

    In IPFIX, scope fields are information elements; in NetFlow v9 they are scope types
    (system, interface, ...), so `scope_is_ie` is false and their values are not read.
    """

    template_id: int
    fields: tuple[tuple[int, int, int], ...]
    scope_count: int = 0
    scope_is_ie: bool = True

    @property
    def fixed_length(self) -> int | None:
        if any(length == VARIABLE_LENGTH for _, length, _ in self.fields):
            return None
        return sum(length for _, length, _ in self.fields)


@dataclass
class SamplingAnnouncement:
    """A 1-in-N rate announced in options data, for (origin, domain) and optionally one selector."""

    origin: str
    domain_id: int
    selector_id: int | None
    rate: int
    source: str


@dataclass
class SequenceCheck:
    """One call of Accumulator.count_sequence, kept to be made later on a chained state."""

    key: tuple[str, int, int]
    sequence: np.ndarray
    records: np.ndarray
    counted: np.ndarray
    whole: np.ndarray
    counts_datagrams: bool


@dataclass
class ExporterState:
    """What an exporter told us that outlives a file: templates, sampling, clocks, sequence numbers.

    Keys carry the export origin (the datagram's source address; "" for stored IPFIX files) and
    the observation domain / source id, as RFC 7011 and RFC 3954 scope them; sequence keys are
    (origin, version, domain). `next_sequence` is the number the next message should carry as
    RFC 7011 counts (see Accumulator.count_sequence); `last_records` the (records, records outside
    options data) of each stream's last message; `sequence_includes_own` says, once a stream
    showed it, whether its numbers count the message's own records (softflowd) or not (RFC).
    """

    templates: dict[tuple[str, int, int], Template] = field(default_factory=dict)
    sampling: list[SamplingAnnouncement] = field(default_factory=list)
    system_init_ms: dict[tuple[str, int], int] = field(default_factory=dict)
    next_sequence: dict[tuple[str, int, int], int] = field(default_factory=dict)
    last_records: dict[tuple[str, int, int], tuple[int, int]] = field(default_factory=dict)
    sequence_includes_own: dict[tuple[str, int, int], bool] = field(default_factory=dict)
    # Set while a group of files is decoded to be chained later (transforms.decode._trace): the
    # decoders then note what they looked up and defer sequence counting. Never saved.
    trace: GroupTrace | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "templates": [
                    {
                        "origin": o,
                        "domain": d,
                        "id": t.template_id,
                        "fields": t.fields,
                        "scope_count": t.scope_count,
                        "scope_is_ie": t.scope_is_ie,
                    }
                    for (o, d, _), t in sorted(self.templates.items())
                ],
                "sampling": [a.__dict__ for a in self.sampling[-1000:]],
                "system_init_ms": [[o, d, v] for (o, d), v in sorted(self.system_init_ms.items())],
                "sequence_includes_own": [
                    [o, v, d, own] for (o, v, d), own in sorted(self.sequence_includes_own.items())
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ExporterState:
        data: dict[str, Any] = json.loads(text)
        state = cls()
        for t in data.get("templates", []):
            fields = tuple((int(a), int(b), int(c)) for a, b, c in t["fields"])
            state.templates[(t["origin"], int(t["domain"]), int(t["id"]))] = Template(
                int(t["id"]), fields, int(t["scope_count"]), bool(t["scope_is_ie"])
            )
        state.sampling = [SamplingAnnouncement(**a) for a in data.get("sampling", [])]
        state.system_init_ms = {(o, int(d)): int(v) for o, d, v in data.get("system_init_ms", [])}
        state.sequence_includes_own = {
            (o, int(v), int(d)): bool(own) for o, v, d, own in data.get("sequence_includes_own", [])
        }
        return state


@dataclass
class DecodeResult:
    """Decoded flows of one file, the sampling it announced, and what could not be decoded."""

    flows: pl.DataFrame
    sampling: list[SamplingAnnouncement]
    problems: list[InputFormatError]
    messages: int
    lost_records: int
    lost_datagrams: int
    formats: dict[str, int] = field(default_factory=dict)


@dataclass
class Clock:
    """Time references of one export packet, for relative timestamps."""

    export_ms: int
    system_init_ms: int | None


@dataclass
class Batch:
    """Canonical columns of some decoded records and where they came from."""

    columns: dict[str, np.ndarray]
    origin: str
    domain_id: int
    record_rate_source: str | None = None
    header_rate: int | None = None
    header_rate_source: str | None = None


class Accumulator:
    """Collects batches, announcements and problems while one file is decoded."""

    def __init__(self, exporter: str, source: str, state: ExporterState) -> None:
        self.exporter = exporter
        self.source = source
        self.state = state
        self.batches: list[Batch] = []
        self.sampling: list[SamplingAnnouncement] = []
        self.problems: list[InputFormatError] = []
        self.messages = 0
        self.lost_records = 0
        self.lost_datagrams = 0
        self.formats: dict[str, int] = {}
        # Records of templates with absolute timestamps wait here, per (template, origin, domain),
        # so that a whole file's records are converted in one vectorised pass.
        self.pending: dict[tuple[Template, str, int], list[np.ndarray]] = {}

    def problem(self, offset: int, reason: str, length: int = 0) -> None:
        self.problems.append(InputFormatError(self.source, f"byte {offset}", reason, length))

    def count_sequence(
        self,
        key: tuple[str, int, int],
        sequence: np.ndarray,
        records: np.ndarray,
        counted: np.ndarray,
        whole: np.ndarray,
        counts_datagrams: bool = False,
    ) -> None:
        """Counts what gaps in the sequence numbers of one stream's messages (in stream order) say
        was lost, mod 2^32: records for IPFIX and v5, whose numbers count records (`records` per
        message); datagrams for v9, whose numbers count packets (`records` all 1). `counted` is
        how many of a message's records are outside options data; `whole` is false for a message
        with records that could not be counted (a template not known yet).

        RFC 7011 numbers a message by the records sent before it. softflowd (IPFIX) numbers it by
        the records sent up to and including its own, so judged by the RFC every message longer
        or shorter than the one before looks like loss or a step back, and a healthy exporter
        would be reported as losing records. The numberings differ only where consecutive messages
        differ in size, so the first such pair of a stream tells them apart (both are read as
        equally plausible for a message whose exporter may have left its options records out of
        the count, as softflowd does). The answer is kept per stream, in saved state too: an
        exporter does not change how it counts, and asking again later would let a real loss of
        just the right size flip it; for the same reason a message whose records could not all be
        counted tells nothing. A stream that counts its own records is checked on its numbers minus
        each message's records, which is the RFC number, so a real gap still counts. A step
        backwards is a restart or reordering, not loss.
        """
        if not sequence.size:
            return
        if self.state.trace is not None:
            self.state.trace.sequence_checks.append(
                SequenceCheck(key, sequence.copy(), records.copy(), counted.copy(), whole.copy(), counts_datagrams)
            )
            return
        sequence = sequence.astype(np.int64) % SEQUENCE_MODULUS
        records = records.astype(np.int64)
        counted = counted.astype(np.int64)
        expected = self.state.next_sequence.get(key)
        last = self.state.last_records.get(key)
        includes_own = self.state.sequence_includes_own.get(key)
        if includes_own is None:
            includes_own = _numbering_includes_own(sequence, records, counted, whole, expected, last)
            if includes_own is not None:
                self.state.sequence_includes_own[key] = includes_own
            if includes_own and expected is not None:
                # The stream was followed the RFC way until now: its next number, the same way.
                expected = None if last is None else (expected - last[0]) % SEQUENCE_MODULUS
        numbers = (sequence - records) % SEQUENCE_MODULUS if includes_own else sequence
        following = np.array([expected or 0], dtype=np.int64)
        lost = sequence_gaps(
            np.zeros(sequence.size, dtype=np.int64), numbers, records, following, np.array([expected is not None])
        )
        self.state.next_sequence[key] = int(following[0])
        if whole[-1]:
            self.state.last_records[key] = (int(records[-1]), int(counted[-1]))
        else:
            self.state.last_records.pop(key, None)
        if counts_datagrams:
            self.lost_datagrams += lost
        else:
            self.lost_records += lost

    def flush(self) -> None:
        """Converts pending records into one batch per group, a cache-sized chunk at a time.

        Reading one field of every record walks the whole array; doing it per ~1 MB chunk keeps
        the chunk in cache for all fields instead of streaming the file from memory per field.
        """
        for (template, origin, domain), parts in self.pending.items():
            total = sum(part.size for part in parts)
            out: dict[str, np.ndarray] = {}
            rate_source: str | None = None
            filled = 0
            for chunk in _chunks(parts, CHUNK_RECORDS):
                decoded = flow_columns(chunk, template, Clock(0, None))
                if isinstance(decoded, str):  # checked before deferring
                    raise ValueError(decoded)
                columns, rate_source = decoded
                if not out:
                    out = {name: np.empty(total, dtype=values.dtype) for name, values in columns.items()}
                for name, values in columns.items():
                    out[name][filled : filled + chunk.size] = values
                filled += chunk.size
            self.batches.append(Batch(out, origin, domain, rate_source))
        self.pending = {}

    def result(self) -> DecodeResult:
        self.flush()
        return DecodeResult(
            to_frame(self.batches, self.exporter),
            self.sampling,
            self.problems,
            self.messages,
            self.lost_records,
            self.lost_datagrams,
            self.formats,
        )


def _numbering_includes_own(
    sequence: np.ndarray,
    records: np.ndarray,
    counted: np.ndarray,
    whole: np.ndarray,
    expected: int | None,
    last: tuple[int, int] | None,
) -> bool | None:
    """Whether a stream numbers each message by the records up to and including its own (True) or
    by those before it (False), told by the first pair of consecutive messages where only one of
    the two fits; None while no pair tells (equal sizes, every step a gap or a restart, or records
    not all counted).

    The pair across a file boundary counts too, from the previous file's last message (`last` is
    kept only when that message was whole)."""
    if expected is not None and last is not None:
        before = np.concatenate([[(expected - last[0]) % SEQUENCE_MODULUS], sequence[:-1]])
        before_records = np.concatenate([[last[0]], records[:-1]])
        before_counted = np.concatenate([[last[1]], counted[:-1]])
        before_whole = np.concatenate([[True], whole[:-1]])
        now, now_records, now_counted, now_whole = sequence, records, counted, whole
    else:
        before, before_records, before_counted, before_whole = sequence[:-1], records[:-1], counted[:-1], whole[:-1]
        now, now_records, now_counted, now_whole = sequence[1:], records[1:], counted[1:], whole[1:]
    step = (now - before) % SEQUENCE_MODULUS
    rfc = (step >= before_counted) & (step <= before_records)
    own = (step >= now_counted) & (step <= now_records)
    telling = np.flatnonzero((rfc != own) & before_whole & now_whole)
    return bool(own[telling[0]]) if telling.size else None


def _field_dtype(ie: int, length: int, index: int) -> list[tuple[str, str]]:
    name = f"f{index}_{ie}"
    if length in (1, 2, 4, 8):
        return [(name, f">u{length}")]
    if length == 16:
        return [(name + "_hi", ">u8"), (name + "_lo", ">u8")]
    return [(name, f"V{length}")]


CHUNK_RECORDS = 1 << 15


def _chunks(parts: list[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The records of `parts` in order, regrouped into arrays of about `size` records."""
    pending: list[np.ndarray] = []
    count = 0
    for part in parts:
        pending.append(part)
        count += part.size
        if count >= size:
            yield pending[0] if len(pending) == 1 else np.concatenate(pending)
            pending, count = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


@functools.lru_cache(maxsize=1024)
def record_dtype(template: Template) -> np.dtype:
    """numpy structured dtype of a fixed-length template (big-endian, no alignment)."""
    parts: list[tuple[str, str]] = []
    for index, (ie, length, _enterprise) in enumerate(template.fields):
        parts.extend(_field_dtype(ie, length, index))
    return np.dtype(parts)


def _as_uint(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "V":  # reduced-size or odd-length encoding: big-endian bytes
        raw = np.frombuffer(values.tobytes(), dtype=np.uint8).reshape(values.size, values.dtype.itemsize)
        raw = raw[:, -8:]
        out = np.zeros(values.size, dtype=np.uint64)
        for column in range(raw.shape[1]):
            out = (out << np.uint64(8)) | raw[:, column].astype(np.uint64)
        return out
    return np.asarray(values).astype(np.uint64)


def column(records: np.ndarray, template: Template, ie: int, suffix: str = "") -> np.ndarray | None:
    """Values of one information element (first occurrence, IANA fields only), as uint64."""
    for index, (field_ie, _length, enterprise) in enumerate(template.fields):
        if field_ie == ie and enterprise == 0 and index >= (0 if template.scope_is_ie else template.scope_count):
            return _as_uint(records[f"f{index}_{ie}{suffix}"])
    return None


def _addresses(records: np.ndarray, template: Template, v4_ie: int, v6_ie: int) -> tuple[np.ndarray, np.ndarray] | None:
    v4 = column(records, template, v4_ie)
    if v4 is not None:
        return np.zeros(v4.size, dtype=np.uint64), v4 | V4_MAPPED_PREFIX
    hi = column(records, template, v6_ie, "_hi")
    lo = column(records, template, v6_ie, "_lo")
    if hi is not None and lo is not None:
        return hi, lo
    return None


def _ntp_ms(values: np.ndarray) -> np.ndarray:
    seconds = (values >> np.uint64(32)).astype(np.int64) - NTP_EPOCH_OFFSET_S
    fraction = ((values & np.uint64(0xFFFF_FFFF)) * np.uint64(1000)) >> np.uint64(32)
    return seconds * 1000 + fraction.astype(np.int64)


def _timestamp(records: np.ndarray, template: Template, clock: Clock, which: str) -> np.ndarray | str | None:
    """Absolute epoch ms of flow start or end, None if the template has no such field."""
    ms_ie, s_ie, us_ie, ns_ie, up_ie, delta_ie = (
        (IE_START_MS, IE_START_S, IE_START_US, IE_START_NS, IE_START_UPTIME, IE_START_DELTA_US)
        if which == "start"
        else (IE_END_MS, IE_END_S, IE_END_US, IE_END_NS, IE_END_UPTIME, IE_END_DELTA_US)
    )
    for ie, convert in ((ms_ie, None), (s_ie, 1000)):
        values = column(records, template, ie)
        if values is not None:
            return values.astype(np.int64) * (convert or 1)
    for ie in (us_ie, ns_ie):
        values = column(records, template, ie)
        if values is not None:
            return _ntp_ms(values)
    uptime = column(records, template, up_ie)
    if uptime is not None:
        init = column(records, template, IE_SYSTEM_INIT_MS)
        if init is not None:
            return init.astype(np.int64) + uptime.astype(np.int64)
        if clock.system_init_ms is None:
            return "sysUpTime-relative timestamps but no systemInitTimeMilliseconds announced"
        return clock.system_init_ms + uptime.astype(np.int64)
    delta = column(records, template, delta_ie)
    if delta is not None:
        return clock.export_ms - (delta // np.uint64(1000)).astype(np.int64)
    return None


def flow_columns(
    records: np.ndarray, template: Template, clock: Clock
) -> tuple[dict[str, np.ndarray], str | None] | str:
    """(canonical columns, source of a per-record sampling rate) of data records, or why they are unusable."""
    n = records.size
    src = _addresses(records, template, IE_SRC_V4, IE_SRC_V6)
    dst = _addresses(records, template, IE_DST_V4, IE_DST_V6)
    if src is None or dst is None:
        return "template has no source/destination address"
    start = _timestamp(records, template, clock, "start")
    if start is None:
        return "template has no flow start time"
    if isinstance(start, str):
        return start
    end = _timestamp(records, template, clock, "end")
    if isinstance(end, str):
        return end
    if end is None:
        duration = column(records, template, IE_DURATION_MS)
        end = start + duration.astype(np.int64) if duration is not None else start
    packets = column(records, template, IE_PACKETS)
    if packets is None:
        packets = column(records, template, IE_PACKETS_TOTAL)
    octets = column(records, template, IE_OCTETS)
    if octets is None:
        octets = column(records, template, IE_OCTETS_TOTAL)
    if packets is None or octets is None:
        return "template has no packet or octet count"
    selector = column(records, template, IE_SELECTOR_ID)
    if selector is None:
        selector = column(records, template, IE_SAMPLER_ID)
    rate, rate_source = _record_rate(records, template)
    zeros = np.zeros(n, dtype=np.uint64)
    src_port = column(records, template, IE_SRC_PORT)
    dst_port = column(records, template, IE_DST_PORT)
    protocol = column(records, template, IE_PROTOCOL)
    return {
        "selector_id": selector if selector is not None else np.full(n, NO_SELECTOR, dtype=np.uint64),
        "record_rate": rate if rate is not None else np.zeros(n, dtype=np.uint64),
        "first_ts": start,
        "last_ts": end,
        "src_hi": src[0],
        "src_lo": src[1],
        "dst_hi": dst[0],
        "dst_lo": dst[1],
        "src_port": (src_port if src_port is not None else zeros).astype(np.uint16),
        "dst_port": (dst_port if dst_port is not None else zeros).astype(np.uint16),
        "protocol": (protocol if protocol is not None else zeros).astype(np.uint8),
        "packets": packets,
        "bytes": octets,
    }, rate_source


def _record_rate(records: np.ndarray, template: Template) -> tuple[np.ndarray | None, str | None]:
    """A rate carried in the flow records themselves (some exporters put IE 34/50/305+306 there)."""
    interval = column(records, template, IE_SAMPLING_PACKET_INTERVAL)
    space = column(records, template, IE_SAMPLING_PACKET_SPACE)
    if interval is not None and space is not None:
        safe = np.maximum(interval, np.uint64(1))
        return (safe + space) // safe, "record:305/306"
    for ie in (IE_SAMPLING_INTERVAL, IE_SAMPLER_RANDOM_INTERVAL):
        values = column(records, template, ie)
        if values is not None:
            return values, f"record:{ie}"
    return None, None


def split_variable_records(payload: memoryview, template: Template) -> list[dict[int, bytes]]:
    """Records of a template with variable-length fields, as field id -> raw bytes (slow path)."""
    records: list[dict[int, bytes]] = []
    pos = 0
    while pos < len(payload):
        record: dict[int, bytes] = {}
        start = pos
        for index, (ie, length, enterprise) in enumerate(template.fields):
            if length == VARIABLE_LENGTH:
                if pos >= len(payload):
                    if all(b == 0 for b in payload[start:]):
                        return records
                    raise ValueError("variable-length field runs past the end of its set")
                length = payload[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > len(payload):
                        raise ValueError("variable-length field runs past the end of its set")
                    length = int.from_bytes(payload[pos : pos + 2], "big")
                    pos += 2
            if pos + length > len(payload):
                if all(b == 0 for b in payload[start:]):
                    return records  # trailing padding
                raise ValueError("record runs past the end of its set")
            if enterprise == 0 and (template.scope_is_ie or index >= template.scope_count):
                record.setdefault(ie, bytes(payload[pos : pos + length]))
            pos += length
        if pos == start:
            raise ValueError("template describes an empty record")
        records.append(record)
    return records


def records_to_fixed(records: list[dict[int, bytes]], template: Template) -> tuple[np.ndarray, Template]:
    """Variable-length records re-packed into fixed-length ones holding the fields we read."""
    kept = tuple(
        (ie, length, 0)
        for index, (ie, length, ent) in enumerate(template.fields)
        if ent == 0 and length not in (VARIABLE_LENGTH, 0) and (template.scope_is_ie or index >= template.scope_count)
    )
    fixed = Template(template.template_id, kept, 0, True)
    out = np.zeros(len(records), dtype=record_dtype(fixed))
    for row, record in enumerate(records):
        for index, (ie, length, _e) in enumerate(kept):
            raw = record.get(ie, b"\0" * length)
            if length == 16:
                out[row][f"f{index}_{ie}_hi"] = int.from_bytes(raw[:8], "big")
                out[row][f"f{index}_{ie}_lo"] = int.from_bytes(raw[8:], "big")
            elif length in (1, 2, 4, 8):
                out[row][f"f{index}_{ie}"] = int.from_bytes(raw, "big")
            else:
                out[row][f"f{index}_{ie}"] = raw
    return out, fixed


def decode_data_records(payload: memoryview, template: Template) -> tuple[np.ndarray, Template]:
    """All records of one data set; trailing bytes shorter than a record are padding."""
    length = template.fixed_length
    if length is None:
        return records_to_fixed(split_variable_records(payload, template), template)
    if length == 0:
        raise ValueError(f"template {template.template_id} has a zero record length")
    count = len(payload) // length
    return np.frombuffer(payload, dtype=record_dtype(template), count=count), template


def options_values(records: np.ndarray, template: Template) -> list[dict[int, int]]:
    """Options records as field id -> integer value (fields of 1-8 bytes)."""
    out: list[dict[int, int]] = []
    names = records.dtype.names or ()
    for record in records:
        values: dict[int, int] = {}
        for index, (ie, length, enterprise) in enumerate(template.fields):
            if enterprise or (not template.scope_is_ie and index < template.scope_count):
                continue
            name = f"f{index}_{ie}"
            if name in names and 1 <= length <= 8:
                raw = record[name]
                values.setdefault(ie, int(raw) if length in (1, 2, 4, 8) else int.from_bytes(bytes(raw), "big"))
        out.append(values)
    return out


def sampling_from_options(
    values: dict[int, int], origin: str, domain_id: int, prefix: str
) -> SamplingAnnouncement | None:
    """Rate from one options record: IE 305/306, IE 34, IE 50 (v9: 34/35, 48-50); None if none."""
    selector = values.get(IE_SELECTOR_ID, values.get(IE_SAMPLER_ID))
    interval = values.get(IE_SAMPLING_PACKET_INTERVAL)
    space = values.get(IE_SAMPLING_PACKET_SPACE)
    if interval and space is not None:
        return SamplingAnnouncement(origin, domain_id, selector, (interval + space) // interval, f"{prefix}:305/306")
    if values.get(IE_SAMPLING_INTERVAL):
        return SamplingAnnouncement(origin, domain_id, selector, values[IE_SAMPLING_INTERVAL], f"{prefix}:34")
    if values.get(IE_SAMPLER_RANDOM_INTERVAL):
        return SamplingAnnouncement(origin, domain_id, selector, values[IE_SAMPLER_RANDOM_INTERVAL], f"{prefix}:50")
    return None


@functools.lru_cache(maxsize=1024)
def needs_clock(template: Template) -> bool:
    """True when the template's times are relative to the export packet (sysUpTime or deltas)."""
    ies = {ie for ie, _, enterprise in template.fields if enterprise == 0}
    absolute = ies & {IE_START_MS, IE_START_S, IE_START_US, IE_START_NS}
    relative = ies & {IE_START_UPTIME, IE_END_UPTIME, IE_START_DELTA_US, IE_END_DELTA_US}
    return bool(relative) and not absolute and IE_SYSTEM_INIT_MS not in ies


def handle_data_set(
    acc: Accumulator,
    payload: memoryview,
    template: Template,
    origin: str,
    domain: int,
    clock: Clock,
    offset: int,
    prefix: str,
) -> int:
    """Decodes one data set into the accumulator (flows, or options); returns its record count."""
    records, usable = decode_data_records(payload, template)
    if template.scope_count:
        for values in options_values(records, usable):
            if IE_SYSTEM_INIT_MS in values:
                acc.state.system_init_ms[(origin, domain)] = values[IE_SYSTEM_INIT_MS]
            announcement = sampling_from_options(values, origin, domain, prefix)
            if announcement is not None:
                acc.sampling.append(announcement)
                acc.state.sampling.append(announcement)
    elif records.size:
        if usable.fixed_length is not None and not needs_clock(usable):
            key = (usable, origin, domain)
            if key not in acc.pending:
                # Check the template once, on its first records, so problems still name an offset.
                decoded = flow_columns(records[:1], usable, clock)
                if isinstance(decoded, str):
                    acc.problem(
                        offset,
                        f"template {template.template_id}: {decoded}; {records.size} records set aside",
                        len(payload),
                    )
                    return int(records.size)
            acc.pending.setdefault(key, []).append(records)
            return int(records.size)
        decoded = flow_columns(records, usable, clock)
        if isinstance(decoded, str):
            acc.problem(
                offset, f"template {template.template_id}: {decoded}; {records.size} records set aside", len(payload)
            )
        else:
            acc.batches.append(Batch(decoded[0], origin, domain, decoded[1]))
    return int(records.size)


# The per-flow fields every decoder produces, after exporter/origin/domain/sampling columns.
FLOW_FIELDS = ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "protocol", "packets", "bytes")
NUMERIC_COLUMNS = ("selector_id", "record_rate", "first_ts", "last_ts", *FLOW_FIELDS)


def to_frame(batches: list[Batch], exporter: str) -> pl.DataFrame:
    """FLOW_SCHEMA rows of all batches, one chunk per batch (no copy into one buffer: a big file's
    columns would each need fresh memory of their full size)."""
    if not batches:
        return pl.DataFrame(schema=FLOW_SCHEMA)
    return pl.concat([_batch_frame(batch, exporter) for batch in batches], rechunk=False)


def _batch_frame(batch: Batch, exporter: str) -> pl.DataFrame:
    columns = batch.columns
    from_record = columns["record_rate"] > 0
    header_rate = np.uint64(batch.header_rate or 0)
    rate = np.where(from_record, columns["record_rate"], header_rate) if batch.header_rate else columns["record_rate"]
    known = pl.col("record_rate") > 0
    source = (
        pl.when(pl.col("_from_record"))
        .then(pl.lit(batch.record_rate_source, dtype=pl.String))
        .otherwise(pl.lit(batch.header_rate_source, dtype=pl.String))
    )
    frame = pl.DataFrame({name: columns[name] for name in NUMERIC_COLUMNS if name != "record_rate"})
    return (
        frame.with_columns(pl.Series("record_rate", rate), pl.Series("_from_record", from_record))
        .select(
            pl.lit(exporter).alias("exporter"),
            pl.lit(batch.origin).alias("origin"),
            pl.lit(batch.domain_id, dtype=pl.UInt32).alias("domain_id"),
            "selector_id",
            pl.when(known).then(pl.col("record_rate")).cast(pl.UInt32, strict=False).alias("record_rate"),
            pl.when(known).then(source).alias("record_rate_source"),
            pl.col("first_ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            pl.col("last_ts").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            *[pl.col(c) for c in FLOW_FIELDS],
        )
        .cast(FLOW_SCHEMA)  # type: ignore[arg-type]
    )
