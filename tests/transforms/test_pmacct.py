"""pmacct nfacctd print-plugin files (CSV and JSON, as nfacctd 1.7.7 writes them) read as flows:
title variants, markers, bad lines, time formats, IPv6, and counts raw or renormalised."""

from __future__ import annotations

import datetime as dt
import ipaddress

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.addresses import format_address
from transforms.decode._records import FLOW_SCHEMA, NO_SELECTOR
from transforms.decode.pmacct import MAX_REPORTED, decode_pmacct, is_pmacct_csv, is_pmacct_json
from transforms.errors import InputFormatError

TITLE = (
    b"PEER_SRC_IP,SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,SAMPLING_RATE,TIMESTAMP_START,TIMESTAMP_END,PACKETS,BYTES\n"
)
# Rows as nfacctd printed them for the generator's 1-in-100 IPFIX (renormalising off).
RAW_CSV = TITLE + (
    b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,100,2024-06-02 15:00:00.123000,2024-06-02 15:00:02.623000,3,300\n"
    b"127.0.0.1,10.1.0.6,8.8.8.8,40000,4500,gre,100,2024-06-02 15:00:01.123000,2024-06-02 15:00:03.623000,5,5000\n"
    b"127.0.0.1,2001:db8::1,2001:db8:0:1::5,1234,80,udp,100,"
    b"2024-06-02 15:00:02.123000,2024-06-02 15:00:04.623000,7,700\n"
)
# The same flows with nfacctd_renormalize: true: SAMPLING_RATE 1, counts times 100.
SCALED_CSV = TITLE + (
    b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,1,2024-06-02 15:00:00.123000,2024-06-02 15:00:02.623000,300,30000\n"
    b"127.0.0.1,10.1.0.6,8.8.8.8,40000,4500,gre,1,2024-06-02 15:00:01.123000,2024-06-02 15:00:03.623000,500,500000\n"
    b"127.0.0.1,2001:db8::1,2001:db8:0:1::5,1234,80,udp,1,"
    b"2024-06-02 15:00:02.123000,2024-06-02 15:00:04.623000,700,70000\n"
)
JSON_LINES = (
    b'{"event_type": "purge_init", "writer_id": "p/10324"}\n'
    b'{"event_type": "purge", "peer_ip_src": "127.0.0.1", "ip_src": "10.1.0.5", "ip_dst": "8.8.8.8", '
    b'"port_src": 50000, "port_dst": 443, "ip_proto": "tcp", "sampling_rate": 100, '
    b'"timestamp_start": "1717340400.123000", "timestamp_end": "1717340402.623000", "export_proto_sysid": 16, '
    b'"stamp_inserted": "1717340340", "stamp_updated": "1796624427", "flows": 1, "packets": 3, "bytes": 300}\n'
    b'{"event_type": "purge", "peer_ip_src": "127.0.0.1", "ip_src": "2001:db8::2", "ip_dst": "2001:db8:0:1::5", '
    b'"port_src": 1235, "port_dst": 80, "ip_proto": "17", "sampling_rate": 100, '
    b'"timestamp_start": "2024-06-03T00:00:01.500000+09:00", "timestamp_end": "2024-06-02T15:00:03.5Z", '
    b'"export_proto_sysid": 17, "packets": 17, "bytes": 1700}\n'
    b'{"event_type": "purge_close", "writer_id": "p/10324", "purged_entries": 2, "total_entries": 2, "duration": 0}\n'
)
T0 = dt.datetime(2024, 6, 2, 15, 0, 0, 123000, tzinfo=dt.UTC)


def addresses(flows: pl.DataFrame, side: str) -> list[str]:
    return [format_address(hi, lo) for hi, lo in flows.select(f"{side}_hi", f"{side}_lo").iter_rows()]


def test_raw_csv_as_nfacctd_writes_it() -> None:
    assert is_pmacct_csv(RAW_CSV) and not is_pmacct_json(RAW_CSV)
    flows, problems = decode_pmacct(RAW_CSV, "collector-1", "a.csv", None, counts_scaled=False)
    assert problems == []
    assert flows.schema == pl.Schema(FLOW_SCHEMA)
    assert addresses(flows, "src") == ["10.1.0.5", "10.1.0.6", "2001:db8::1"]
    assert addresses(flows, "dst") == ["8.8.8.8", "8.8.8.8", "2001:db8:0:1::5"]
    assert flows["src_hi"].to_list()[:2] == [0, 0]  # IPv4 as ::ffff:a.b.c.d
    assert flows["src_lo"][0] == 0xFFFF_0A01_0005
    assert flows["src_port"].to_list() == [50000, 40000, 1234]
    assert flows["protocol"].to_list() == [6, 47, 17]
    assert flows["packets"].to_list() == [3, 5, 7] and flows["bytes"].to_list() == [300, 5000, 700]
    assert flows["record_rate"].to_list() == [100] * 3
    assert flows["record_rate_source"].to_list() == ["pmacct"] * 3
    assert flows["origin"].to_list() == ["127.0.0.1"] * 3
    assert flows["exporter"].to_list() == ["collector-1"] * 3
    assert flows["domain_id"].to_list() == [0] * 3
    assert flows["selector_id"].to_list() == [NO_SELECTOR] * 3
    assert flows["first_ts"][0] == T0
    assert flows["last_ts"][0] == T0 + dt.timedelta(seconds=2.5)


def test_renormalised_counts_are_divided_back_to_sampled_counts() -> None:
    # SAMPLING_RATE 1 says nothing of the rate: without a configured one it is the counts' gcd.
    inferred, problems = decode_pmacct(SCALED_CSV, "c", "a.csv", None, counts_scaled=True)
    assert problems == []
    assert inferred["record_rate"].to_list() == [100] * 3
    assert inferred["record_rate_source"].to_list() == ["pmacct:inferred"] * 3
    assert inferred["packets"].to_list() == [3, 5, 7] and inferred["bytes"].to_list() == [300, 5000, 700]
    configured, _ = decode_pmacct(SCALED_CSV, "c", "a.csv", 50, counts_scaled=True)
    assert configured["record_rate"].to_list() == [50] * 3
    assert configured["record_rate_source"].to_list() == ["config:collector_sampling"] * 3
    assert configured["bytes"].to_list() == [600, 10000, 1400]
    # Volumes (counts times rate) are what nfacctd printed, whichever rate.
    for flows in (inferred, configured):
        assert (flows["bytes"] * flows["record_rate"]).to_list() == [30000, 500000, 70000]


def test_the_same_renormalised_file_read_as_raw_keeps_its_counts() -> None:
    flows, problems = decode_pmacct(SCALED_CSV, "c", "a.csv", None, counts_scaled=False)
    assert problems == []
    assert flows["record_rate"].to_list() == [1] * 3  # a 1-in-1 exporter's rows look the same
    assert flows["bytes"].to_list() == [30000, 500000, 70000]


def test_rate_zero_is_unknown_and_scaled_only_by_a_configured_rate() -> None:
    rows = TITLE + (
        b"192.0.2.1,10.1.0.5,8.8.8.8,1,2,tcp,0,2024-06-02 15:00:00,2024-06-02 15:00:01,3,300\n"
        b"192.0.2.1,10.1.0.5,8.8.8.8,1,2,tcp,1,2024-06-02 15:00:00,2024-06-02 15:00:01,400,40000\n"
        b"192.0.2.1,10.1.0.5,8.8.8.8,1,2,tcp,64,2024-06-02 15:00:00,2024-06-02 15:00:01,128,6400\n"
    )
    raw, _ = decode_pmacct(rows, "c", "a.csv", None, counts_scaled=False)
    assert raw["record_rate"].to_list() == [None, 1, 64]
    assert raw["record_rate_source"].to_list() == [None, "pmacct", "pmacct"]
    raw_configured, _ = decode_pmacct(rows, "c", "a.csv", 10, counts_scaled=False)
    assert raw_configured["record_rate"].to_list() == [10, 1, 64]
    assert raw_configured["record_rate_source"].to_list() == ["config:collector_sampling", "pmacct", "pmacct"]
    # Renormalising, nfacctd left a row without a rate as it was (0): it is not divided. A printed
    # rate above 1 is the one the counts were scaled by.
    # SAMPLING_RATE 1 gets the gcd of the counts of the exporter's rows without a stated rate (one
    # row here, so its own counts' gcd, 400): never below the true rate.
    scaled, _ = decode_pmacct(rows, "c", "a.csv", None, counts_scaled=True)
    assert scaled["record_rate"].to_list() == [None, 400, 64]
    assert scaled["packets"].to_list() == [3, 1, 2]
    assert scaled["record_rate_source"].to_list() == [None, "pmacct:inferred", "pmacct"]
    # With nfacctd_ext_sampling_rate, nfacctd scaled every row by it (SAMPLING_RATE 0 or 1).
    rows_ext = rows.replace(b",3,300\n", b",30,3000\n")
    scaled_ext, _ = decode_pmacct(rows_ext, "c", "a.csv", 10, counts_scaled=True)
    assert scaled_ext["record_rate"].to_list() == [10, 10, 64]
    assert scaled_ext["packets"].to_list() == [3, 40, 2]
    assert scaled_ext["record_rate_source"].to_list() == [
        "config:collector_sampling",
        "config:collector_sampling",
        "pmacct",
    ]


def test_title_variants_markers_and_repeated_titles() -> None:
    # print_markers, export_proto_sysid and flows primitives; a second purge appended with its title.
    title = (
        b"PEER_SRC_IP,SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,SAMPLING_RATE,TIMESTAMP_START,TIMESTAMP_END,"
        b"EXPORT_PROTO_SYSID,PACKETS,FLOWS,BYTES\n"
    )
    row = b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,100,2024-06-02 15:00:00.123000,2024-06-02 15:00:02.623000,"
    row += b"16,3,1,300\n"
    data = b"--START (10297)--\n" + title + row + b"--END (10297)--\n\n--START (10298)--\n" + title + row
    data += b"--END (10298)--\n"
    assert is_pmacct_csv(data)
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert problems == []
    assert flows.height == 2
    assert flows["domain_id"].to_list() == [16, 16]
    assert flows["packets"].to_list() == [3, 3] and flows["bytes"].to_list() == [300, 300]


def test_a_title_without_rate_peer_or_end_time_and_another_separator() -> None:
    data = (
        b"SRC_IP;DST_IP;SRC_PORT;DST_PORT;PROTOCOL;TIMESTAMP_START;PACKETS;BYTES\r\n"
        b"10.1.0.5;8.8.8.8;50000;443;6;2024-06-02 15:00:00.123000;3;300\r\n"
    )
    assert is_pmacct_csv(data)
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert problems == []
    assert flows["origin"].to_list() == ["pmacct"]
    assert flows["record_rate"].to_list() == [None]  # resolved later, like other flows without a rate
    assert flows["first_ts"].to_list() == flows["last_ts"].to_list() == [T0]
    configured, _ = decode_pmacct(data, "c", "a.csv", 512, counts_scaled=False)
    assert configured["record_rate"].to_list() == [512]
    assert configured["record_rate_source"].to_list() == ["config:collector_sampling"]
    # Renormalised without a SAMPLING_RATE column: the configured rate, else the counts' gcd.
    scaled, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=True)
    assert problems == []
    assert scaled.select("packets", "bytes", "record_rate", "record_rate_source").rows() == [
        (1, 100, 3, "pmacct:inferred")
    ]
    scaled_configured, _ = decode_pmacct(data, "c", "a.csv", 3, counts_scaled=True)
    assert scaled_configured.select("packets", "record_rate", "record_rate_source").rows() == [
        (1, 3, "config:collector_sampling")
    ]


def test_bad_lines_are_one_problem_each_and_the_rest_is_kept() -> None:
    good = b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,100,2024-06-02 15:00:00.123000,2024-06-02 15:00:02.623000,3,300\n"
    data = (
        TITLE
        + good
        + b"127.0.0.1,10.1.0.999,8.8.8.8,50000,443,tcp,100,2024-06-02 15:00:00,2024-06-02 15:00:02,3,300\n"
        + b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,100,2024-06-02 15:00:00,2024-06-02 15:00:02,3\n"
        + b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,100,yesterday,2024-06-02 15:00:02,3,300\n"
        + b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,tcp,100,2024-06-02 15:00:00,2024-06-02 15:00:02,3,-1\n"
        + b"127.0.0.1,10.1.0.5,8.8.8.8,70000,443,tcp,100,2024-06-02 15:00:00,2024-06-02 15:00:02,3,300\n"
        + b"127.0.0.1,10.1.0.5,8.8.8.8,50000,443,nosuch,100,2024-06-02 15:00:00,2024-06-02 15:00:02,3,300\n"
        + good
        + good[:-9]  # cut off: no line end
    )
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert flows.height == 2
    assert [(p.position, p.reason) for p in problems] == [
        ("line 3", "unreadable SRC_IP '10.1.0.999'"),
        ("line 4", "10 fields, the title has 11"),
        ("line 5", "unreadable TIMESTAMP_START 'yesterday'"),
        ("line 6", "unreadable BYTES '-1'"),
        ("line 7", "unreadable SRC_PORT '70000'"),
        ("line 8", "unreadable PROTOCOL 'nosuch'"),
        ("line 10", f"truncated: the last line has no line end, the file ends after {len(data)} bytes"),
    ]
    assert all(p.records == 1 and p.source == "a.csv" for p in problems)
    assert problems[0].length == len(data.split(b"\n")[2])


def test_a_title_lacking_a_required_column_sets_every_line_aside() -> None:
    data = b"SRC_IP,DST_IP,PACKETS,BYTES\n10.1.0.5,8.8.8.8,3,300\n10.1.0.6,8.8.8.8,3,300\n"
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert flows.is_empty() and flows.schema == pl.Schema(FLOW_SCHEMA)
    assert len(problems) == 1
    assert problems[0].position == "line 1"
    assert "lacks ['SRC_PORT', 'DST_PORT', 'PROTOCOL', 'TIMESTAMP_START']" in problems[0].reason
    assert problems[0].records == 2


def test_many_bad_lines_are_reported_up_to_a_limit_then_counted() -> None:
    data = TITLE + b"junk\n" * (MAX_REPORTED + 5)
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert flows.is_empty()
    assert len(problems) == MAX_REPORTED + 1
    assert problems[-1].reason == "5 more unreadable lines" and problems[-1].records == 5
    assert sum(p.records for p in problems) == MAX_REPORTED + 5


def test_json_lines_markers_epoch_and_rfc3339_times() -> None:
    assert is_pmacct_json(JSON_LINES) and not is_pmacct_csv(JSON_LINES)
    flows, problems = decode_pmacct(JSON_LINES, "c", "a.json", None, counts_scaled=False)
    assert problems == []
    assert addresses(flows, "src") == ["10.1.0.5", "2001:db8::2"]
    assert flows["protocol"].to_list() == [6, 17]
    assert flows["domain_id"].to_list() == [16, 17]
    assert flows["record_rate"].to_list() == [100, 100]
    assert flows["first_ts"].to_list() == [
        dt.datetime(2024, 6, 2, 15, 0, 0, 123000, tzinfo=dt.UTC),
        dt.datetime(2024, 6, 2, 15, 0, 1, 500000, tzinfo=dt.UTC),
    ]
    assert flows["last_ts"][1] == dt.datetime(2024, 6, 2, 15, 0, 3, 500000, tzinfo=dt.UTC)


def test_json_bad_lines() -> None:
    good = JSON_LINES.split(b"\n")[1] + b"\n"
    data = (
        good
        + b'{"event_type": "purge", "ip_src": "10.1.0.5"\n'
        + b"[1, 2]\n"
        + good.replace(b'"ip_dst": "8.8.8.8", ', b"")
        + good.replace(b'"packets": 3', b'"packets": "three"')
        + good
    )
    flows, problems = decode_pmacct(data, "c", "a.json", None, counts_scaled=False)
    assert flows.height == 2
    assert [(p.position, p.reason) for p in problems] == [
        ("line 2", "not a JSON object"),
        ("line 3", "not a JSON object"),
        ("line 4", "no ip_dst"),
        ("line 5", "unreadable packets 'three'"),
    ]


def test_json_renormalised() -> None:
    scaled = JSON_LINES.replace(b'"sampling_rate": 100', b'"sampling_rate": 1')
    scaled = scaled.replace(b'"packets": 3, "bytes": 300', b'"packets": 300, "bytes": 30000')
    scaled = scaled.replace(b'"packets": 17, "bytes": 1700', b'"packets": 1700, "bytes": 170000')
    flows, problems = decode_pmacct(scaled, "c", "a.json", 100, counts_scaled=True)
    assert problems == []
    assert flows["packets"].to_list() == [3, 17] and flows["record_rate"].to_list() == [100, 100]


@pytest.mark.parametrize(
    ("text", "timezone", "expected"),
    [
        ("2024-06-03 00:00:00.123000", "Asia/Tokyo", T0),  # the collector's local time, no zone
        ("2024-06-02 15:00:00.123000", "UTC", T0),  # timestamps_utc
        ("2024-06-03T00:00:00.123000+09:00", "UTC", T0),  # timestamps_rfc3339
        ("2024-06-02T15:00:00.123000Z", "Asia/Tokyo", T0),  # timestamps_rfc3339 + timestamps_utc
        ("1717340400.123000", "Asia/Tokyo", T0),  # timestamps_since_epoch
        ("1717340400.000000", "UTC", T0.replace(microsecond=0)),  # ... with timestamps_secs
        ("1717340400", "UTC", T0.replace(microsecond=0)),
        ("2024-06-02 15:00:00", "UTC", T0.replace(microsecond=0)),
    ],
)
def test_timestamp_formats(text: str, timezone: str, expected: dt.datetime) -> None:
    data = TITLE + f"127.0.0.1,10.1.0.5,8.8.8.8,1,2,tcp,100,{text},{text},3,300\n".encode()
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False, timezone=timezone)
    assert problems == []
    assert flows["first_ts"].to_list() == flows["last_ts"].to_list() == [expected]


def test_protocol_names_and_numbers() -> None:
    names = ["ipv6-icmp", "IPcomp", "esp", "ax.25", "200", "sctp"]
    data = TITLE + b"".join(
        f"127.0.0.1,10.1.0.5,8.8.8.8,0,0,{name},100,1717340400,1717340400,1,100\n".encode() for name in names
    )
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert problems == []
    assert flows["protocol"].to_list() == [58, 108, 50, 93, 200, 132]


def test_ipv6_halves() -> None:
    data = TITLE + (
        b"2001:db8::53,2400:4050:2:53:3682:7f17:a6c9:8153,::ffff:192.0.2.1,60001,53,udp,100,"
        b"1717340400,1717340400,1,100\n"
    )
    flows, problems = decode_pmacct(data, "c", "a.csv", None, counts_scaled=False)
    assert problems == []
    value = int(ipaddress.IPv6Address("2400:4050:2:53:3682:7f17:a6c9:8153"))
    assert flows.select("src_hi", "src_lo").row(0) == (value >> 64, value & ((1 << 64) - 1))
    assert addresses(flows, "dst") == ["192.0.2.1"]  # ::ffff:192.0.2.1 is the IPv4 address
    assert flows["origin"].to_list() == ["2001:db8::53"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n",
        b"ts,te,td,sa,da,sp,dp,pr\n",  # nfdump CSV
        b"\x00\x0a\x00\x10" + bytes(12),  # IPFIX
        b"SRC_IP,DST_IP\n",
        b'{"a": 1}\n',
        b"\xff\xfe junk",
    ],
)
def test_other_content_is_not_pmacct_and_is_one_problem(data: bytes) -> None:
    assert not is_pmacct_csv(data) and not is_pmacct_json(data)
    flows, problems = decode_pmacct(data, "c", "a", None, counts_scaled=False)
    assert flows.is_empty() and flows.schema == pl.Schema(FLOW_SCHEMA)
    assert [p.reason for p in problems] == ["not pmacct print-plugin CSV or JSON"]


def test_a_title_only_file_has_no_flows_and_no_problems() -> None:
    flows, problems = decode_pmacct(TITLE, "c", "a.csv", None, counts_scaled=True)
    assert flows.is_empty() and problems == []
    assert flows.schema == pl.Schema(FLOW_SCHEMA)


def test_without_being_told_each_row_is_read_by_its_printed_rate() -> None:
    rows = TITLE + (
        b"192.0.2.1,10.1.0.5,8.8.8.8,1,2,tcp,0,2024-06-02 15:00:00,2024-06-02 15:00:01,3,300\n"
        b"192.0.2.1,10.1.0.5,8.8.8.8,1,2,tcp,1,2024-06-02 15:00:00,2024-06-02 15:00:01,400,40000\n"
        b"192.0.2.1,10.1.0.5,8.8.8.8,1,2,tcp,64,2024-06-02 15:00:00,2024-06-02 15:00:01,128,6400\n"
    )
    auto, problems = decode_pmacct(rows, "c", "a.csv", None)
    assert problems == []
    # 0: a raw count of an unknown rate; 1: renormalised by a rate not printed; 64: raw at 1 in 64.
    assert auto["record_rate"].to_list() == [None, 400, 64]
    assert auto["record_rate_source"].to_list() == [None, "pmacct:inferred", "pmacct"]
    assert auto["packets"].to_list() == [3, 1, 128]
    # A configured collector rate is what rows printed 0 were scaled by.
    configured, _ = decode_pmacct(rows.replace(b",3,300\n", b",30,3000\n"), "c", "a.csv", 10)
    assert configured["record_rate"].to_list() == [10, 10, 64]
    assert configured["packets"].to_list() == [3, 40, 128]
    # Renormalised files are read as if told, raw ones too.
    for data in (SCALED_CSV, RAW_CSV):
        told, _ = decode_pmacct(data, "c", "a.csv", None, counts_scaled=data is SCALED_CSV)
        assert decode_pmacct(data, "c", "a.csv", None)[0].equals(told)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400), st.booleans())
def test_any_text_after_a_title_decodes_or_reports(body: str, json_lines: bool) -> None:
    data = (b'{"event_type": "purge", "ip_src": "10.0.0.1"}\n' if json_lines else TITLE) + body.encode()
    for counts_scaled in (None, True, False):
        flows, problems = decode_pmacct(data, "c", "fuzz", 100, counts_scaled=counts_scaled)
        assert flows.columns == list(FLOW_SCHEMA)
        for problem in problems:
            assert isinstance(problem, InputFormatError) and problem.source == "fuzz"
