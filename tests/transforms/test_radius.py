import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from transforms.accounting.radius import (
    billing_usage_by_day,
    build_sessions,
    format_detail,
    parse_detail,
    sessions_to_assignments,
    split_backward_counters,
)

TZ = "Asia/Tokyo"
DETAIL = """\
Sun Jun  2 23:00:00 2024
\tAcct-Session-Id = "S1"
\tAcct-Status-Type = Start
\tUser-Name = "u1@bb.example.jp"
\tNAS-Identifier = "bras-a"
\tFramed-Protocol = PPP
\tFramed-IP-Address = 203.0.113.9
\tEvent-Timestamp = "Jun  2 2024 23:00:00 JST"
\tTimestamp = 1717336800

Mon Jun  3 01:00:05 2024
\tAcct-Session-Id = "S1"
\tAcct-Status-Type = Interim-Update
\tUser-Name = "u1@bb.example.jp"
\tNAS-Identifier = "bras-a"
\tFramed-Protocol = PPP
\tFramed-IP-Address = 203.0.113.9
\tAcct-Session-Time = 7200
\tAcct-Input-Octets = 100
\tAcct-Output-Octets = 5
\tAcct-Input-Gigawords = 0
\tAcct-Output-Gigawords = 2
\tEvent-Timestamp = "Jun  3 2024 01:00:00 JST"
\tAcct-Delay-Time = 5
\tTimestamp = 1717344005

Mon Jun  3 02:00:00 2024
\tAcct-Session-Id = "S2"
\tAcct-Status-Type = Interim-Update
\tUser-Name = "u2@bb.example.jp"
\tNAS-Identifier = "bras-a"
\tFramed-Protocol = PPP
\tFramed-IP-Address = 203.0.113.9
\tAcct-Session-Time = 60
\tAcct-Input-Octets = 1
\tAcct-Output-Octets = 1
\tTimestamp = 1717347600

"""


def test_parse_reads_counters_with_gigawords_and_local_event_time() -> None:
    records, problems = parse_detail(DETAIL, "detail-20240603", TZ)
    assert problems.height == 0
    assert records["status"].to_list() == ["Start", "Interim-Update", "Interim-Update"]
    interim = records.row(1, named=True)
    assert interim["out_octets"] == 2 * 2**32 + 5
    assert interim["in_octets"] == 100
    # 01:00 JST is 16:00 UTC the day before; Event-Timestamp wins over Timestamp - delay.
    assert interim["event_ts"] == dt.datetime(2024, 6, 2, 16, 0, tzinfo=dt.UTC)
    # Without Event-Timestamp: Timestamp minus Acct-Delay-Time (0 here).
    assert records.row(2, named=True)["event_ts"] == dt.datetime.fromtimestamp(1717347600, dt.UTC)
    assert records.row(0, named=True)["line"] == 1


def test_unreadable_record_is_reported_with_its_line_and_the_rest_kept() -> None:
    broken = DETAIL + 'Mon Jun  3 03:00:00 2024\n\tAcct-Status-Type = Stop\n\tUser-Name = "x"\n\n'
    records, problems = parse_detail(broken, "detail-x", TZ)
    assert records.height == 3
    header_line = DETAIL.count("\n") + 1
    assert problems.to_dicts() == [
        {"source": "detail-x", "line": header_line, "reason": "record without Acct-Session-Id"}
    ]


def test_session_without_stop_ends_when_the_next_holder_of_the_address_starts() -> None:
    records, _ = parse_detail(DETAIL, "d", TZ)
    silence = dt.timedelta(hours=48)
    table = sessions_to_assignments(build_sessions(records), silence).sort("valid_from")
    assert table["user_name"].to_list() == ["u1@bb.example.jp", "u2@bb.example.jp"]
    s2_start = dt.datetime.fromtimestamp(1717347600 - 60, dt.UTC)
    s2_last_seen = dt.datetime.fromtimestamp(1717347600, dt.UTC)
    assert table["valid_to"].to_list() == [s2_start, s2_last_seen + silence]
    assert table["conflict"].to_list() == [True, False]
    assert table["valid_from"][0] == dt.datetime(2024, 6, 2, 14, 0, tzinfo=dt.UTC)


def test_accounting_on_closes_the_open_sessions_of_that_nas_only() -> None:
    reboot = """\
Mon Jun  3 05:00:00 2024
\tAcct-Status-Type = Accounting-On
\tNAS-Identifier = "bras-a"
\tTimestamp = 1717358400

"""
    other_nas = DETAIL.replace('"bras-a"', '"bras-b"').replace('"S1"', '"T1"').replace('"S2"', '"T2"')
    records, problems = parse_detail(DETAIL + reboot + other_nas, "d", TZ)
    assert problems.height == 0
    sessions = build_sessions(records).sort("nas", "session_id")
    closed = dict(zip(sessions["session_id"], sessions["closed_by"]))
    assert closed == {"S1": "nas_reset", "S2": "nas_reset", "T1": "open", "T2": "open"}
    reset = dt.datetime.fromtimestamp(1717358400, dt.UTC)
    assert sessions.filter(pl.col("session_id") == "S2")["stop_ts"].item() == reset


def test_repeated_attribute_with_another_value_sets_the_record_aside() -> None:
    doubled = DETAIL.replace(
        "\tFramed-IP-Address = 203.0.113.9\n\tAcct-Session-Time = 60",
        "\tFramed-IP-Address = 203.0.113.9\n\tFramed-IP-Address = 203.0.113.10\n\tAcct-Session-Time = 60",
    )
    records, problems = parse_detail(doubled, "d", TZ)
    assert records["session_id"].to_list() == ["S1", "S1"]
    assert problems["reason"].to_list() == ["attribute framed_ip repeated with different values"]


def test_counters_that_go_backwards_are_set_aside_and_the_next_delta_uses_the_last_good_value() -> None:
    week = dt.datetime(2024, 6, 2, 15, tzinfo=dt.UTC)
    t = int(week.timestamp())
    records = _mobile(
        [
            ("Interim-Update", t + 3600, 3600, 3000),
            ("Interim-Update", t + 7200, 7200, 1000),  # went backwards: a broken or replayed record
            ("Interim-Update", t + 10800, 10800, 4000),
        ]
    ).with_columns(source=pl.lit("d"), line=pl.Series([1, 20, 40]))
    good, bad = split_backward_counters(records)
    assert bad["line"].to_list() == [20]
    days = billing_usage_by_day(good.drop("source", "line"), week, TZ)
    assert days["out_bytes"].sum() == pytest.approx(4000.0)


def _mobile(rows: list[tuple[str, int, int, int]]) -> pl.DataFrame:
    """(status, epoch seconds of event, session time, out octets) rows of one phone's session."""
    return pl.DataFrame(
        {
            "nas": "pgw",
            "session_id": "M1",
            "calling_station_id": "819000000001",
            "status": [r[0] for r in rows],
            "event_ts": [dt.datetime.fromtimestamp(r[1], dt.UTC) for r in rows],
            "session_time_s": [r[2] for r in rows],
            "in_octets": [r[3] // 10 if r[0] != "Start" else None for r in rows],
            "out_octets": [r[3] if r[0] != "Start" else None for r in rows],
        }
    ).with_columns(pl.col("event_ts").cast(pl.Datetime("ms", "UTC")))


def test_billing_splits_a_counter_delta_across_midnight_by_time() -> None:
    week = dt.datetime(2024, 6, 3, tzinfo=dt.UTC) - dt.timedelta(hours=9)  # Monday 00:00 JST
    t = int(week.timestamp())
    records = _mobile([("Start", t + 22 * 3600, 0, 0), ("Interim-Update", t + 26 * 3600, 4 * 3600, 4000)])
    days = billing_usage_by_day(records, week, TZ).sort("day")
    assert days["day"].to_list() == [dt.date(2024, 6, 3), dt.date(2024, 6, 4)]
    assert days["out_bytes"].to_list() == pytest.approx([2000.0, 2000.0])
    assert days["in_bytes"].to_list() == pytest.approx([200.0, 200.0])


def test_billing_keeps_only_the_part_inside_the_week() -> None:
    week = dt.datetime(2024, 6, 2, 15, tzinfo=dt.UTC)
    t = int(week.timestamp())
    records = _mobile([("Interim-Update", t + 3600, 2 * 3600, 3000)])  # session began 1 h before the week
    days = billing_usage_by_day(records, week, TZ)
    assert days["out_bytes"].sum() == pytest.approx(1500.0)


def test_written_detail_parses_back_to_the_same_records() -> None:
    frame = pl.DataFrame(
        {
            "event_ms": [1717340400000, 1717344000000],
            "delay_s": [0, 3],
            "status": ["Start", "Stop"],
            "session_id": ["A1", "A1"],
            "user_name": ["u@x", "u@x"],
            "nas_ip": ["192.0.2.1"] * 2,
            "nas_identifier": ["bras"] * 2,
            "framed_protocol": [None, None],
            "framed_ip": [None, None],
            "delegated_prefix": ["2400:4050::/56"] * 2,
            "calling_station_id": [None, None],
            "session_time_s": [0, 3600],
            "in_octets": [0, 5 * 2**32 + 7],
            "out_octets": [0, 9],
        }
    )
    records, problems = parse_detail(format_detail(frame, TZ), "rt", TZ)
    assert problems.height == 0
    assert records["delegated_prefix"].to_list() == ["2400:4050::/56"] * 2
    assert records["in_octets"].to_list() == [None, 5 * 2**32 + 7]
    assert [int(t.timestamp() * 1000) for t in records["event_ts"]] == [1717340400000, 1717344000000]


def _line_ends(text: str, ends: list[str]) -> str:
    """`text` with its line ends taken from `ends` in turn."""
    lines = text.split("\n")
    return "".join(line + ends[i % len(ends)] for i, line in enumerate(lines[:-1])) + lines[-1]


@pytest.mark.parametrize("ends", [["\r\n"], ["\r\n", "\n"], ["\n", "\n", "\r\n"]], ids=["crlf", "mixed", "some-crlf"])
def test_crlf_line_ends_give_the_same_records_as_lf(ends: list[str]) -> None:
    expected, none = parse_detail(DETAIL, "d", TZ)
    assert none.height == 0 and expected.height == 3
    for detail in (_line_ends(DETAIL, ends), _line_ends(DETAIL, ends).encode()):
        records, problems = parse_detail(detail, "d", TZ)
        assert problems.height == 0
        assert_frame_equal(records, expected)


# The third record (S2, lines 27-37) with Latin-1 bytes where FreeRADIUS would write UTF-8.
LATIN1_CASES = {
    "user-name": ('\tUser-Name = "u2@bb.example.jp"', '\tUser-Name = "jos\xe9.u2@bb.example.jp"', 30),
    "calling-station-id": (
        "\tFramed-IP-Address = 203.0.113.9\n\tAcct-Session-Time = 60",
        '\tFramed-IP-Address = 203.0.113.9\n\tCalling-Station-Id = "+81\xa0901234\xa05678"\n\tAcct-Session-Time = 60',
        34,
    ),
    "header": ("Mon Jun  3 02:00:00 2024", "Mon Jun\xa0 3 02:00:00 2024", 27),
}


@pytest.mark.parametrize("case", list(LATIN1_CASES))
def test_a_record_with_bytes_that_are_not_utf8_is_set_aside_at_that_line(case: str) -> None:
    old, new, line = LATIN1_CASES[case]
    detail = DETAIL.replace(old, new).encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        detail.decode("utf-8")
    records, problems = parse_detail(detail, "detail-x", TZ)
    # The record is set aside whole (not kept with U+FFFD as an unknown user); the others are kept.
    assert records["session_id"].to_list() == ["S1", "S1"]
    assert problems.to_dicts() == [{"source": "detail-x", "line": line, "reason": "bytes that are not UTF-8"}]
    quoted = " ".join(str(v) for row in problems.iter_rows() for v in row)
    for identity in ("u2@", "jos", "1234", "5678", "\ufffd"):
        assert identity not in quoted


def test_bytes_that_are_not_utf8_set_aside_each_record_once_and_crlf_still_reads() -> None:
    detail = _line_ends(DETAIL.replace('"u1@bb.example.jp"', '"\xfc1@bb"', 1), ["\r\n"]).encode("latin-1")
    records, problems = parse_detail(detail + b'\xff\xfe\r\n\tUser-Name = "\xe9"\r\n', "d", TZ)
    assert records["session_id"].to_list() == ["S1", "S2"]
    # The stray line is a record header of its own (no status either): one problem per record.
    assert problems.select("line", "reason").rows() == [
        (4, "bytes that are not UTF-8"),
        (39, "bytes that are not UTF-8"),
    ]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(0, len(DETAIL)))
def test_any_bytes_in_a_detail_file_never_become_a_replacement_character_in_a_record(junk: bytes, at: int) -> None:
    data = DETAIL.encode()
    records, problems = parse_detail(data[:at] + junk + data[at:], "fuzz", TZ)
    assert set(problems.columns) == {"source", "line", "reason"}
    for column in ("user_name", "calling_station_id", "session_id", "nas"):
        assert not records[column].str.contains("\ufffd", literal=True).any()


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("Tunnel-Start", "unknown Acct-Status-Type Tunnel-Start"),
        ("15", "unknown Acct-Status-Type 15"),
        ('"u9@bb.example.jp"', "unknown Acct-Status-Type (value not shown)"),
    ],
)
def test_an_unknown_status_is_named_only_when_it_is_an_rfc_value(status: str, reason: str) -> None:
    detail = DETAIL.replace(
        'Acct-Status-Type = Interim-Update\n\tUser-Name = "u2', f'Acct-Status-Type = {status}\n\tUser-Name = "u2'
    )
    records, problems = parse_detail(detail, "d", TZ)
    assert records["session_id"].to_list() == ["S1", "S1"]
    assert problems.rows() == [("d", 27, reason)]
