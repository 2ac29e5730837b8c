"""Property tests: decoders either decode or report the project's own error, on any input; and
what the writers produce decodes back exactly."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.accounting.radius import parse_detail
from transforms.decode import ipfix, netflow
from transforms.decode._records import ExporterState
from transforms.decode.exports import decode_flow_file
from transforms.decode.nfdump_csv import decode_nfdump_csv
from transforms.decode.pcap import ethernet_ipv4_frame, udp_segment, write_pcap
from transforms.errors import InputFormatError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ipfix_file(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    records = {
        ipfix.IE_START_MS: 1_717_340_400_000 + rng.integers(0, 10**9, n, dtype=np.uint64),
        ipfix.IE_END_MS: 1_717_340_400_000 + rng.integers(0, 10**9, n, dtype=np.uint64),
        ipfix.IE_SRC_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_DST_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_SRC_PORT: rng.integers(0, 65536, n),
        ipfix.IE_DST_PORT: rng.integers(0, 65536, n),
        ipfix.IE_PROTOCOL: rng.integers(0, 256, n),
        ipfix.IE_PACKETS: rng.integers(0, 2**63, n, dtype=np.uint64),
        ipfix.IE_OCTETS: rng.integers(0, 2**63, n, dtype=np.uint64),
    }
    options = ipfix.sampling_options_template("interval")
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, options])
    first, seq = ipfix.encode_messages(
        7,
        1,
        0,
        header,
        options,
        ipfix.pack_records(options, {ipfix.IE_SELECTOR_ID: np.array([1]), ipfix.IE_SAMPLING_INTERVAL: np.array([100])}),
    )
    data, _ = ipfix.encode_messages(
        7, 2, seq, b"", ipfix.FLOW_TEMPLATE_V4, ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, records)
    )
    return first + data


VALID_IPFIX = _ipfix_file(300, 1)


def _decode_anything(data: bytes) -> None:
    try:
        result = decode_flow_file(data, "x", "fuzz", ExporterState())
    except InputFormatError:
        return
    for problem in result.problems:
        assert isinstance(problem, InputFormatError) and problem.source == "fuzz"
        assert problem.position.startswith(("byte ", "line "))


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_decode_or_report(data: bytes) -> None:
    _decode_anything(data)
    _decode_anything(b"\x00\x0a" + data)  # looks like IPFIX
    _decode_anything(b"\xd4\xc3\xb2\xa1" + data)  # looks like pcap


@FAST
@given(
    st.lists(st.tuples(st.integers(0, len(VALID_IPFIX) - 1), st.integers(0, 255)), min_size=1, max_size=12),
    st.integers(0, len(VALID_IPFIX)),
)
def test_mutated_ipfix_decodes_or_reports(mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(VALID_IPFIX)
    for position, value in mutations:
        data[position] = value
    _decode_anything(bytes(data))
    _decode_anything(bytes(data[:cut]))


def _v9_values(seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 20
    values = {
        netflow.IE_SRC_V4: rng.integers(0, 2**32, n),
        netflow.IE_DST_V4: rng.integers(0, 2**32, n),
        netflow.IE_SRC_PORT: rng.integers(0, 65536, n),
        netflow.IE_DST_PORT: rng.integers(0, 65536, n),
        netflow.IE_PROTOCOL: rng.integers(0, 256, n),
        netflow.IE_PACKETS: rng.integers(0, 2**32, n),
        netflow.IE_OCTETS: rng.integers(0, 2**62, n),
        netflow.IE_START_UPTIME: rng.integers(0, 10**6, n),
        netflow.IE_END_UPTIME: rng.integers(10**6, 2 * 10**6, n),
        netflow.IE_SAMPLER_ID: np.full(n, 3),
    }
    return values


def _v9_capture(seed: int) -> bytes:
    values = _v9_values(seed)
    options = netflow.pack_v9_records(
        netflow.V9_SAMPLER_OPTIONS,
        {
            1: np.array([0]),
            netflow.IE_SAMPLER_ID: np.array([3]),
            netflow.IE_SAMPLER_MODE: np.array([2]),
            netflow.IE_SAMPLER_RANDOM_INTERVAL: np.array([512]),
        },
    )
    packet = netflow.encode_v9_packet(
        5_000_000,
        1_717_340_400,
        17,
        42,
        [netflow.V9_FLOW_TEMPLATE, netflow.V9_SAMPLER_OPTIONS],
        [
            (netflow.V9_SAMPLER_OPTIONS, options),
            (netflow.V9_FLOW_TEMPLATE, netflow.pack_v9_records(netflow.V9_FLOW_TEMPLATE, values)),
        ],
    )
    frame = ethernet_ipv4_frame("192.0.2.9", "192.0.2.1", 17, udp_segment(2055, 9995, packet))
    return write_pcap([(1_717_340_400.0, frame)])


VALID_V9 = _v9_capture(3)


@FAST
@given(st.lists(st.tuples(st.integers(0, len(VALID_V9) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_v9_capture_decodes_or_reports(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_V9)
    for position, value in mutations:
        data[position] = value
    _decode_anything(bytes(data))


@FAST
@given(st.integers(1, 2000), st.integers(0, 2**32 - 1))
def test_ipfix_writer_then_decoder_round_trips_exactly(n: int, seed: int) -> None:
    data = _ipfix_file(n, seed)
    result = ipfix.decode_ipfix(data, "x", "rt", ExporterState())
    assert result.problems == [] and result.lost_records == 0
    rng = np.random.default_rng(seed)
    start = 1_717_340_400_000 + rng.integers(0, 10**9, n, dtype=np.uint64)
    end = 1_717_340_400_000 + rng.integers(0, 10**9, n, dtype=np.uint64)
    src = rng.integers(0, 2**32, n, dtype=np.uint64)
    assert result.flows.height == n
    assert result.flows["first_ts"].dt.epoch("ms").to_list() == start.astype(np.int64).tolist()
    assert result.flows["last_ts"].dt.epoch("ms").to_list() == end.astype(np.int64).tolist()
    assert [v & 0xFFFFFFFF for v in result.flows["src_lo"].to_list()] == src.tolist()


def test_v9_capture_round_trips_with_uptime_clock_and_sampler_options() -> None:
    result = decode_flow_file(VALID_V9, "x", "v9", ExporterState())
    assert result.problems == []
    flows = result.flows
    values = _v9_values(3)
    assert flows.height == 20
    assert set(flows["origin"].to_list()) == {"192.0.2.9"}
    assert flows["domain_id"].to_list() == [42] * 20
    # Absolute time = export time - sysUptime + FIRST_SWITCHED (all in ms).
    system_init_ms = 1_717_340_400_000 - 5_000_000
    assert flows["first_ts"].dt.epoch("ms").to_list() == (system_init_ms + values[netflow.IE_START_UPTIME]).tolist()
    assert flows["bytes"].to_list() == values[netflow.IE_OCTETS].tolist()
    assert flows["selector_id"].to_list() == [3] * 20
    assert [(a.rate, a.selector_id, a.source) for a in result.sampling] == [(512, 3, "v9:50")]


@FAST
@given(st.text(max_size=1500))
def test_detail_parser_never_raises_on_text(text: str) -> None:
    records, problems = parse_detail(text, "fuzz", "Asia/Tokyo")
    assert set(problems.columns) == {"source", "line", "reason"}
    assert records["event_ts"].null_count() == 0


@FAST
@given(st.text(alphabet="0123456789,.:- abcTCPUDPts\n", max_size=800))
def test_nfdump_csv_reader_raises_only_its_own_error(body: str) -> None:
    header = "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt\n"
    with contextlib.suppress(InputFormatError):
        flows, problems = decode_nfdump_csv((header + body).encode(), "x", "fuzz", "UTC")
        assert all(p.position.startswith("line") for p in problems)
        assert flows["first_ts"].null_count() == 0
