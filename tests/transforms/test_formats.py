"""Format details: nfdump CSV headers, v9 losses, template withdrawal and odd templates, and the
generator's own flows through its writer and the decoder."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import polars as pl
import pytest

from transforms.decode import ipfix, netflow
from transforms.decode._records import ExporterState
from transforms.decode.exports import decode_flow_file
from transforms.decode.nfdump_csv import decode_nfdump_csv
from transforms.decode.pcap import ethernet_ipv4_frame, udp_segment, write_pcap
from transforms.synth.exporter import ExportShape, encode_export_stream
from transforms.synth.week import WeekSpec, generate_week

MODERN_CSV = b"""firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows
2024-06-03 09:00:00.250,1.500,TCP,2400:4050:1:200::5,51000,2001:db8::1,443,10,12000,1
2024-06-03 09:00:01.000,0.000,ESP,192.0.2.5,0,198.51.100.7,0,3,4500,1
2024-06-03 09:00:02.000,0.000,TCP,not-an-address,1,192.0.2.1,2,1,1,1
Summary
flows,bytes,packets,avg_bps,avg_pps,avg_bpp
3,16501,14,0,0,0
"""


def test_nfdump_modern_header_local_time_and_summary_trailer() -> None:
    flows, problems = decode_nfdump_csv(MODERN_CSV, "r", "x.csv", "Asia/Tokyo")
    assert [(p.position, p.reason) for p in problems] == [("line 4", "unreadable src_lo")]
    assert flows.height == 2
    assert flows["first_ts"].to_list() == [
        dt.datetime(2024, 6, 3, 0, 0, 0, 250000, tzinfo=dt.UTC),
        dt.datetime(2024, 6, 3, 0, 0, 1, tzinfo=dt.UTC),
    ]
    assert flows["last_ts"][0] == dt.datetime(2024, 6, 3, 0, 0, 1, 750000, tzinfo=dt.UTC)
    assert flows["protocol"].to_list() == [6, 50]
    assert flows["src_hi"][0] == 0x2400_4050_0001_0200
    assert flows["record_rate"].to_list() == [1, 1] and flows["record_rate_source"].to_list() == ["nfdump", "nfdump"]


def test_nfdump_legacy_bidirectional_record_gives_both_directions() -> None:
    header = b"ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt\n"
    row = b"2024-06-03 00:00:00,2024-06-03 00:00:05,5.000,10.0.0.1,10.0.0.2,1000,443,TCP,......,0,0,2,100,3,900\n"
    flows, problems = decode_nfdump_csv(header + row, "r", "x.csv", "UTC")
    assert problems == []
    assert flows.select("src_port", "dst_port", "bytes").rows() == [(1000, 443, 100), (443, 1000, 900)]


def _v9(sequence: int, records: int) -> bytes:
    values = {
        netflow.IE_SRC_V4: np.arange(records),
        netflow.IE_DST_V4: np.arange(records),
        netflow.IE_OCTETS: np.full(records, 10),
        netflow.IE_PACKETS: np.full(records, 1),
        netflow.IE_START_UPTIME: np.full(records, 1000),
        netflow.IE_END_UPTIME: np.full(records, 2000),
    }
    packet = netflow.encode_v9_packet(
        10_000,
        1_717_340_400,
        sequence,
        1,
        [netflow.V9_FLOW_TEMPLATE],
        [(netflow.V9_FLOW_TEMPLATE, netflow.pack_v9_records(netflow.V9_FLOW_TEMPLATE, values))],
    )
    return ethernet_ipv4_frame("192.0.2.1", "192.0.2.2", 17, udp_segment(2055, 9995, packet))


def test_v9_sequence_gap_counts_lost_datagrams() -> None:
    capture = write_pcap([(1.0, _v9(100, 3)), (2.0, _v9(101, 3)), (3.0, _v9(104, 3))])
    result = decode_flow_file(capture, "r", "c.pcap", ExporterState())
    assert result.lost_datagrams == 2 and result.lost_records == 0
    assert result.flows.height == 9


def _one_record(template: ipfix.Template, src: np.ndarray, dst: np.ndarray, protocol: int, octets: int) -> np.ndarray:
    """One flow record of `template` (v4 or v6 addresses given as the template expects)."""
    v6 = any(ie == ipfix.IE_SRC_V6 for ie, _, _ in template.fields)
    return ipfix.pack_records(
        template,
        {
            ipfix.IE_START_MS: np.array([1_717_340_400_000]),
            ipfix.IE_END_MS: np.array([1_717_340_400_000]),
            ipfix.IE_SRC_V6 if v6 else ipfix.IE_SRC_V4: src,
            ipfix.IE_DST_V6 if v6 else ipfix.IE_DST_V4: dst,
            ipfix.IE_SRC_PORT: np.array([3]),
            ipfix.IE_DST_PORT: np.array([4]),
            ipfix.IE_PROTOCOL: np.array([protocol]),
            ipfix.IE_PACKETS: np.array([1]),
            ipfix.IE_OCTETS: np.array([octets]),
        },
    )


def test_template_withdrawal_makes_later_data_unknown_and_redefinition_replaces_it() -> None:
    state = ExporterState()
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4])
    records = _one_record(ipfix.FLOW_TEMPLATE_V4, np.array([1]), np.array([2]), 6, 99)
    first, seq = ipfix.encode_messages(5, 0, 0, header, ipfix.FLOW_TEMPLATE_V4, records)
    withdrawal_set = struct.pack("!HHHH", 2, 8, 256, 0)
    withdraw = struct.pack("!HHIII", 10, 16 + len(withdrawal_set), 0, seq, 5) + withdrawal_set
    after, _ = ipfix.encode_messages(5, 0, seq, b"", ipfix.FLOW_TEMPLATE_V4, records)
    result = ipfix.decode_ipfix(first + withdraw + after, "r", "w.ipfix", state)
    assert result.flows.height == 1
    assert [p.reason for p in result.problems] == ["data set for unknown template 256 in domain 5; set skipped"]
    # Redefinition: template 256 now means IPv6 records.
    redefined = ipfix.Template(256, ipfix.FLOW_TEMPLATE_V6.fields)
    v6 = _one_record(
        redefined,
        np.array([[0x2400_4050_0000_0000, 1]], dtype=np.uint64),
        np.array([[0x2001_0DB8_0000_0000, 2]], dtype=np.uint64),
        17,
        7,
    )
    again, _ = ipfix.encode_messages(5, 0, 0, ipfix.encode_template_set([redefined]), redefined, v6)
    result = ipfix.decode_ipfix(again, "r", "w2.ipfix", state)
    assert result.flows["src_hi"].to_list() == [0x2400_4050_0000_0000]


def test_template_with_a_zero_length_field_or_only_variable_fields_is_reported() -> None:
    zero = struct.pack("!HH", 300, 2) + struct.pack("!HH", ipfix.IE_OCTETS, 0) + struct.pack("!HH", ipfix.IE_PACKETS, 8)
    variable = struct.pack("!HH", 301, 1) + struct.pack("!HH", ipfix.IE_OCTETS, 65535)
    body = struct.pack("!HH", 2, 4 + len(zero)) + zero + struct.pack("!HH", 2, 4 + len(variable)) + variable
    # A data set for 301 whose length byte points past the end of the set.
    data_set = struct.pack("!HH", 301, 4 + 3) + bytes([200, 1, 2])
    message = struct.pack("!HHIII", 10, 16 + len(body) + len(data_set), 0, 0, 1) + body + data_set
    result = ipfix.decode_ipfix(message, "r", "odd.ipfix", ExporterState())
    reasons = [p.reason for p in result.problems]
    assert reasons[0] == "template 300: field 1 has length 0"
    assert reasons[1] == "record runs past the end of its set"
    assert all(p.position.startswith("byte ") for p in result.problems)


def test_generator_flows_through_its_ipfix_writer_decode_back_exactly() -> None:
    week = generate_week(WeekSpec(week=dt.date(2024, 6, 3), year=2024, broadband_users=60, mobile_phones=40, seed=9))
    exporter = week.spec.exporters[0]
    flows = week.flows[exporter.name]
    shape = ExportShape(first_sequence=(1 << 32) - 500)  # the numbers wrap within this stream
    data = encode_export_stream(flows, shape, 16, exporter.sampling_style, exporter.sampling_rate)
    result = ipfix.decode_ipfix(data, exporter.name, "gen.ipfix", ExporterState())
    assert result.problems == []
    assert result.lost_records == 0
    # Shaped as exporters send it: every message fits one datagram, records spread over domains.
    pos, sizes = 0, []
    while pos < len(data):
        sizes.append(int.from_bytes(data[pos + 2 : pos + 4], "big"))
        pos += sizes[-1]
    assert max(sizes) <= 1400 and result.messages == len(sizes)
    assert set(result.flows["domain_id"].unique()) == {16, 17}
    columns = ["first_ts", "last_ts", "src_hi", "src_lo", "dst_hi", "dst_lo"]
    columns += ["src_port", "dst_port", "protocol", "packets", "bytes"]
    decoded = result.flows.select(columns).with_columns(pl.col("first_ts", "last_ts").dt.epoch("ms")).sort(pl.all())
    expected = flows.select(columns).cast(decoded.schema).sort(pl.all())  # type: ignore[arg-type]
    assert decoded.equals(expected)
    # Each domain announces its rate with its templates, again at every refresh.
    assert {(a.domain_id, a.rate, a.source) for a in result.sampling} == {
        (domain, exporter.sampling_rate, "ipfix:305/306") for domain in (16, 17)
    }
    assert len(result.sampling) > 2


def test_nfdump_csv_addresses_read_in_columns_agree_with_pythons_ipaddress() -> None:
    import ipaddress

    import numpy as np
    import polars as pl

    from transforms.addresses import V4_MAPPED
    from transforms.decode.nfdump_csv import _addresses

    rng = np.random.default_rng(7)
    texts = [str(ipaddress.IPv4Address(int(v))) for v in rng.integers(0, 2**32, 2000, dtype=np.uint64)]
    texts += ["0.0.0.0", "255.255.255.255", " 10.0.0.1 ", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "a.b.c.d"]
    texts += ["2001:db8::1", "::ffff:10.0.0.1", "fe80::1", "not an address", ""]
    out = _addresses(pl.DataFrame({"a": texts}), "a", "src")
    for text, hi, lo in out.select("a", "src_hi", "src_lo").iter_rows():
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            assert (hi, lo) == (None, None), text
            continue
        value = V4_MAPPED | int(address) if address.version == 4 else int(address)
        assert (hi, lo) == ((0, value) if address.version == 4 else (value >> 64, value & (2**64 - 1))), text


def test_the_same_flows_framed_as_mtu_datagrams_or_big_messages_decode_to_the_same_records() -> None:
    week = generate_week(WeekSpec(week=dt.date(2024, 6, 3), year=2024, broadband_users=40, mobile_phones=40, seed=4))
    exporter = week.spec.exporters[1]
    flows = week.flows[exporter.name]
    decoded = []
    for shape in (ExportShape(), ExportShape(message_size=65535, flush_ms=60_000, domains=1), ExportShape(domains=5)):
        data = encode_export_stream(flows, shape, 32, exporter.sampling_style, exporter.sampling_rate)
        result = ipfix.decode_ipfix(data, exporter.name, "x.ipfix", ExporterState())
        assert result.problems == [] and result.lost_records == 0
        decoded.append(result.flows.drop("domain_id").sort(pl.all()))
    assert decoded[0].height == flows.height
    assert decoded[0].equals(decoded[1]) and decoded[0].equals(decoded[2])


def _set(set_id: int, body: bytes) -> bytes:
    return struct.pack("!HH", set_id, len(body) + 4) + body


def _message(body: bytes, sequence: int = 0, domain: int = 1) -> bytes:
    return struct.pack("!HHIII", 10, 16 + len(body), 1_700_000_000, sequence, domain) + body


def test_a_template_without_addresses_is_reported_even_when_its_first_set_holds_no_record() -> None:
    no_addresses = struct.pack("!HH", 320, 3) + struct.pack("!HHHHHH", 152, 8, 2, 8, 1, 8)
    data = _message(_set(2, no_addresses) + _set(320, b"")) + _message(_set(320, struct.pack("!QQQ", 1, 2, 3)))
    result = ipfix.decode_ipfix(data, "r", "x.ipfix", ExporterState())
    assert result.flows.height == 0
    assert [p.reason for p in result.problems] == [
        "template 320: template has no source/destination address; 1 records set aside"
    ]


def test_an_out_of_range_clock_reference_is_reported_and_ignored() -> None:
    options = struct.pack("!HHH", 400, 2, 1) + struct.pack("!HHHH", 149, 4, 160, 8)
    uptime = struct.pack("!HH", 300, 6) + struct.pack("!HHHHHHHHHHHH", 22, 4, 21, 4, 8, 4, 12, 4, 2, 4, 1, 4)
    record = struct.pack("!IIIIII", 1000, 2000, 0x0A000001, 0x0B000001, 1, 60)
    data = _message(
        _set(3, options) + _set(400, struct.pack("!IQ", 1, 2**63 + 5)) + _set(2, uptime) + _set(300, record)
    )
    result = ipfix.decode_ipfix(data, "r", "x.ipfix", ExporterState())
    assert result.flows.height == 0
    reasons = [p.reason for p in result.problems]
    assert reasons[0] == f"systemInitTimeMilliseconds {2**63 + 5} is out of range; ignored"
    assert reasons[1].startswith("template 300: sysUpTime-relative timestamps but no systemInitTimeMilliseconds")


def test_a_capture_from_more_than_65536_source_addresses_keeps_each_exporters_templates() -> None:
    # Origins used to be packed into 16 bits: the 65,537th address read the first one's templates.
    template = netflow.V9_FLOW_TEMPLATE
    records = netflow.pack_v9_records(
        template,
        {
            8: np.array([0x0A000001]),
            12: np.array([0x0B000001]),
            7: np.array([1]),
            11: np.array([2]),
            4: np.array([6]),
            2: np.array([3]),
            1: np.array([300]),
            22: np.array([10]),
            21: np.array([20]),
            48: np.array([0]),
        },
    )
    defining = netflow.encode_v9_packet(1000, 1_717_340_400, 0, 1, [template], [(template, records)])
    data_only = netflow.encode_v9_packet(1000, 1_717_340_400, 0, 1, [], [(template, records)])
    junk = udp_segment(9, 9, b"\x00\x09")
    frames = [(1.0, ethernet_ipv4_frame("1.0.0.0", "192.0.2.9", 17, udp_segment(2055, 2055, defining)))]
    # 65,535 other sources sort between the two: 9.9.9.9 is the 65,537th address, index 65,536.
    frames += [(1.0, ethernet_ipv4_frame(f"2.0.{i >> 8}.{i & 255}", "192.0.2.9", 17, junk)) for i in range(1, 65_536)]
    frames.append((1.0, ethernet_ipv4_frame("9.9.9.9", "192.0.2.9", 17, udp_segment(2055, 2055, data_only))))
    result = decode_flow_file(write_pcap(frames), "r", "many.pcap", ExporterState())
    assert result.flows["origin"].to_list() == ["1.0.0.0"]
    unknown = [p.reason for p in result.problems if "unknown template" in p.reason]
    assert unknown == ["data flowset for unknown template 256 of source id 1; skipped"]


def _pcapng(frames: list[bytes], interface_of: list[int] | None = None, sections: int = 1) -> bytes:
    """A little-endian pcapng: per section an SHB and one Ethernet IDB, then an EPB per frame."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = b""
    per_section = -(-len(frames) // sections)
    for section in range(sections):
        out += block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        out += block(1, struct.pack("<HHI", 1, 0, 65535))
        for index in range(section * per_section, min(len(frames), (section + 1) * per_section)):
            interface = interface_of[index] if interface_of else 0
            frame = frames[index]
            out += block(6, struct.pack("<IIIII", interface, 0, index, len(frame), len(frame)) + frame)
    return out


@pytest.mark.slow
def test_pcapng_read_in_one_pass_gives_what_the_block_by_block_walk_gives() -> None:
    week = generate_week(WeekSpec(week=dt.date(2024, 6, 3), year=2024, broadband_users=8, mobile_phones=8, seed=5))
    exporter = week.spec.exporters[0]
    data = encode_export_stream(week.flows[exporter.name], ExportShape(), 16, "interval", 64)
    messages, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        messages.append(data[pos : pos + length])
        pos += length
    frames = [ethernet_ipv4_frame("192.0.2.1", "192.0.2.9", 17, udp_segment(4739, 4739, m)) for m in messages]
    expected = decode_flow_file(write_pcap([(1.0, f) for f in frames]), "r", "x.pcap", ExporterState())
    one_pass = decode_flow_file(_pcapng(frames), "r", "x.pcapng", ExporterState())
    two_sections = decode_flow_file(_pcapng(frames, sections=2), "r", "y.pcapng", ExporterState())
    assert expected.problems == one_pass.problems == two_sections.problems == []
    for result in (one_pass, two_sections):
        assert result.flows.sort(pl.all()).equals(expected.flows.sort(pl.all()))
    # A packet naming an interface nobody described: the block-by-block walk names that block.
    bad = decode_flow_file(_pcapng(frames[:3], interface_of=[0, 5, 0]), "r", "z.pcapng", ExporterState())
    assert [p.reason for p in bad.problems] == ["enhanced packet block for an unknown interface or too short"]
    assert bad.messages == 2
