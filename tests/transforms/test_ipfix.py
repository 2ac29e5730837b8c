import struct

import numpy as np
import polars as pl

from transforms.decode import ipfix
from transforms.decode._records import ExporterState
from transforms.decode.sampling import ANNOUNCEMENT_SCHEMA, announcements_frame, resolve_sampling


def _records(n: int, start_ms: int = 1_717_340_400_000) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        ipfix.IE_START_MS: start_ms + np.arange(n, dtype=np.uint64) * 1000,
        ipfix.IE_END_MS: start_ms + np.arange(n, dtype=np.uint64) * 1000 + 500,
        ipfix.IE_SRC_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_DST_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_SRC_PORT: rng.integers(0, 65536, n),
        ipfix.IE_DST_PORT: rng.integers(0, 65536, n),
        ipfix.IE_PROTOCOL: rng.choice([6, 17, 50], n),
        ipfix.IE_PACKETS: rng.integers(1, 100, n, dtype=np.uint64),
        ipfix.IE_OCTETS: rng.integers(40, 150_000, n, dtype=np.uint64),
    }


def _file(records: dict[int, np.ndarray], sampling_style: str = "packet_space", rate: int = 1000) -> bytes:
    options = ipfix.sampling_options_template(sampling_style)
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, options])
    values = (
        {ipfix.IE_SELECTOR_ID: np.array([1]), ipfix.IE_SAMPLING_INTERVAL: np.array([rate])}
        if sampling_style == "interval"
        else {
            ipfix.IE_SELECTOR_ID: np.array([1]),
            ipfix.IE_SAMPLING_PACKET_INTERVAL: np.array([1]),
            ipfix.IE_SAMPLING_PACKET_SPACE: np.array([rate - 1]),
        }
    )
    first, seq = ipfix.encode_messages(9, 1_717_340_400, 0, header, options, ipfix.pack_records(options, values))
    data, _ = ipfix.encode_messages(
        9, 1_717_340_500, seq, b"", ipfix.FLOW_TEMPLATE_V4, ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, records)
    )
    return first + data


def test_round_trip_keeps_every_field_across_many_messages() -> None:
    records = _records(5000)  # more than one 64 KiB message
    result = ipfix.decode_ipfix(_file(records), "r1", "f.ipfix", ExporterState())
    assert result.problems == []
    assert result.messages > 2
    assert result.lost_records == 0
    flows = result.flows
    assert flows.height == 5000
    assert flows["src_lo"].to_numpy().tolist() == (records[ipfix.IE_SRC_V4] | np.uint64(0xFFFF_0000_0000)).tolist()
    assert flows["bytes"].to_numpy().tolist() == records[ipfix.IE_OCTETS].tolist()
    assert flows["protocol"].to_list() == records[ipfix.IE_PROTOCOL].tolist()
    assert flows["first_ts"].dt.epoch("ms").to_list() == records[ipfix.IE_START_MS].astype(np.int64).tolist()
    assert [(a.rate, a.source) for a in result.sampling] == [(1000, "ipfix:305/306")]


def test_sampling_interval_option_and_resolution_per_domain() -> None:
    result = ipfix.decode_ipfix(_file(_records(10), "interval", 512), "r1", "f", ExporterState())
    known, unknown = resolve_sampling(result.flows, announcements_frame(result.sampling), None)
    assert unknown.height == 0
    assert set(known["sampling_rate"].to_list()) == {512}
    assert set(known["sampling_source"].to_list()) == {"ipfix:34"}


def test_flows_without_a_known_rate_are_set_aside_not_scaled_by_one() -> None:
    records = _records(3)
    data, _ = ipfix.encode_messages(
        9,
        0,
        0,
        ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4]),
        ipfix.FLOW_TEMPLATE_V4,
        ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, records),
    )
    result = ipfix.decode_ipfix(data, "r1", "f", ExporterState())
    known, unknown = resolve_sampling(result.flows, pl.DataFrame(schema=ANNOUNCEMENT_SCHEMA), None)
    assert known.height == 0 and unknown.height == 3
    known, _ = resolve_sampling(result.flows, pl.DataFrame(schema=ANNOUNCEMENT_SCHEMA), 2048)
    assert known["sampling_rate"].to_list() == [2048] * 3 and known["sampling_source"].to_list() == ["config"] * 3


def test_templates_from_an_earlier_file_decode_later_data() -> None:
    state = ExporterState()
    first = _file(_records(5))
    ipfix.decode_ipfix(first, "r1", "day1", state)
    data_only, _ = ipfix.encode_messages(
        9, 0, 0, b"", ipfix.FLOW_TEMPLATE_V4, ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, _records(4))
    )
    later = ipfix.decode_ipfix(data_only, "r1", "day2", state)
    assert later.flows.height == 4 and later.problems == []
    fresh = ipfix.decode_ipfix(data_only, "r1", "day2", ExporterState())
    assert fresh.flows.height == 0
    assert "unknown template 256" in str(fresh.problems[0])


def test_truncated_file_keeps_complete_messages_and_names_the_offset() -> None:
    data = _file(_records(3000))
    cut = len(data) - 100
    result = ipfix.decode_ipfix(data[:cut], "r1", "cut.ipfix", ExporterState())
    assert 0 < result.flows.height < 3000
    problem = result.problems[0]
    assert problem.source == "cut.ipfix" and problem.position.startswith("byte ")
    assert "runs past the end" in problem.reason


def test_sequence_gap_is_counted_as_lost_records() -> None:
    records = _records(5000)
    data = _file(records)
    messages = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!H", data, pos + 2)
        messages.append(data[pos : pos + length])
        pos += length
    dropped = messages[2]
    kept = b"".join(messages[:2] + messages[3:])
    result = ipfix.decode_ipfix(kept, "r1", "gap", ExporterState())
    dropped_records = (len(dropped) - 16 - 4) // ipfix.FLOW_TEMPLATE_V4.fixed_length  # type: ignore[operator]
    assert result.lost_records == dropped_records
    assert result.flows.height == 5000 - dropped_records


def test_variable_length_and_enterprise_fields_are_skipped_correctly() -> None:
    fields = [
        (ipfix.IE_START_MS, 8),
        (ipfix.IE_SRC_V4, 4),
        (0x8000 | 12, 65535),
        (ipfix.IE_DST_V4, 4),
        (ipfix.IE_PACKETS, 4),
        (ipfix.IE_OCTETS, 8),
    ]
    template_body = struct.pack("!HH", 300, len(fields))
    for ie, length in fields:
        template_body += struct.pack("!HH", ie, length) + (struct.pack("!I", 29305) if ie & 0x8000 else b"")
    template_set = struct.pack("!HH", 2, len(template_body) + 4) + template_body
    short = (
        struct.pack("!Q", 1_717_340_400_000)
        + bytes([10, 0, 0, 1])
        + bytes([3])
        + b"abc"
        + bytes([10, 0, 0, 2])
        + struct.pack("!IQ", 2, 999)
    )
    long = (
        struct.pack("!Q", 1_717_340_401_000)
        + bytes([10, 0, 0, 3])
        + bytes([255])
        + struct.pack("!H", 300)
        + b"x" * 300
        + bytes([10, 0, 0, 4])
        + struct.pack("!IQ", 1, 5)
    )
    payload = short + long + b"\0\0"  # set padding
    data_set = struct.pack("!HH", 300, len(payload) + 4) + payload
    body = template_set + data_set
    message = struct.pack("!HHIII", 10, 16 + len(body), 0, 0, 1) + body
    result = ipfix.decode_ipfix(message, "r", "var", ExporterState())
    assert result.problems == []
    assert result.flows["bytes"].to_list() == [999, 5]
    assert result.flows["packets"].to_list() == [2, 1]
    assert [lo & 0xFFFFFFFF for lo in result.flows["dst_lo"].to_list()] == [0x0A000002, 0x0A000004]
