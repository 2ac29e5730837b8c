"""The columnar detail parser against the polars parser it replaced, on generated detail files with
the quirks real files have: the same records, the same problems, at the same lines."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.transforms import radius_reference
from transforms.accounting import radius
from transforms.accounting.radius import ATTRIBUTES, format_detail, parse_detail

TZ = "Asia/Tokyo"
OTHER_NAMES = ["NAS-Port", "Acct-Unique-Session-Id", "Service-Type", "Acct-Session", "User-Name-X", "Timestamp2"]
NUMERIC = {
    "Acct-Session-Time",
    "Acct-Input-Octets",
    "Acct-Output-Octets",
    "Acct-Input-Gigawords",
    "Acct-Output-Gigawords",
    "Acct-Delay-Time",
    "Timestamp",
}
STATUSES = ["Start", "Stop", "Interim-Update", "Alive", "Accounting-On", "Accounting-Off", "Tunnel-Start", "15", "x@y"]
EVENT_TIMES = [
    '"Jun  3 2024 01:00:00 JST"',
    '"Jun 13 2024 23:59:59 JST"',
    '"Jun 03 2024 01:00:00 UTC"',
    '"Feb 29 2024 12:00:00 GMT"',
    '"Feb 30 2024 12:00:00 JST"',
    '"Jun  3 2024 24:00:00 JST"',
    '"Jun  3 2024 23:59:60 JST"',
    '"jun  3 2024 01:00:00 JST"',
    '"Mar 10 2024 02:30:00 EST"',
    '"Jun  3 2024 01:00:00"',
    '"Jun  3  2024  01:00:00 JST"',
    '" Jun  3 2024 01:00:00 JST "',
    '"1717340400"',
    "1717340400",
    '"Jun  3 1969 01:00:00 JST"',
    "",
    "junk",
]
JUNK_LINES = [
    "\t",
    " ",
    "\t\u3000",
    "\tnot an attribute",
    "\t= 5",
    "\tName-Only",
    "\tName\t=\tvalue",
    "\t\u00e9 = 5",
    "\tX=\u00a0",
    "\t\x1c = 1",
    "\tAcct-Status-Type =",
]
SPACINGS = [("\t", " = ", ""), ("\t", "=", ""), ("  ", " =  ", " "), ("\t\t", "\t=\t", "\t"), ("\t", " = ", "\u3000")]


def _value(name: str, draw: st.DrawFn) -> str:
    if name == "Acct-Status-Type":
        return draw(st.sampled_from(STATUSES))
    if name == "Event-Timestamp":
        return draw(st.sampled_from(EVENT_TIMES))
    if name in NUMERIC:
        return draw(
            st.sampled_from(["0", "7", "1717340400", "4294967295", "+5", "-1", "05", "1e3", "99999999999999999999"])
        )
    return draw(st.sampled_from(['"S1"', '"S2"', "203.0.113.9", '""quoted""', '"u\u00e9@x"', '"', "PPP", '" a "']))


BASE_RECORD = [
    ("Acct-Session-Id", '"S1"'),
    ("Acct-Status-Type", "Interim-Update"),
    ("User-Name", '"u1@bb.example.jp"'),
    ("NAS-Identifier", '"bras-a"'),
    ("Framed-IP-Address", "203.0.113.9"),
    ("Acct-Input-Octets", "100"),
    ("Acct-Output-Octets", "5"),
    ("Acct-Output-Gigawords", "2"),
    ("Event-Timestamp", '"Jun  3 2024 01:00:00 JST"'),
    ("Timestamp", "1717344005"),
]


@st.composite
def detail_files(draw: st.DrawFn) -> bytes:
    """Detail text: mostly readable records with quirks (values, spacing, CRLF, repeats, junk, Latin-1)."""
    lines: list[str] = []
    if draw(st.integers(0, 3)) == 0:
        lines += draw(st.lists(st.sampled_from(["", "\tUser-Name = x", "\tjunk", "\t"]), max_size=2))
    for _ in range(draw(st.integers(0, 5))):
        lines.append(draw(st.sampled_from(["Mon Jun  3 01:00:05 2024"] * 4 + ["Mon Jun\u00a03", "\u3000head", "x"])))
        attributes = list(BASE_RECORD)
        if draw(st.integers(0, 2)) == 0:
            attributes = [
                (name, _value(name, draw))
                for name in draw(st.lists(st.sampled_from(list(ATTRIBUTES) + OTHER_NAMES), max_size=20))
            ]
        for name, value in attributes:
            if draw(st.integers(0, 4)) == 0:
                value = _value(name, draw)
            if draw(st.integers(0, 9)) == 0:
                continue  # dropped
            lead, sep, trail = draw(st.sampled_from(SPACINGS[:1] * 12 + SPACINGS))
            lines.append(f"{lead}{name}{sep}{value}{trail}")
            if draw(st.integers(0, 12)) == 0:  # repeated, with the same value or another
                lines.append(f"\t{name} = {draw(st.sampled_from([value, _value(name, draw)]))}")
            if draw(st.integers(0, 15)) == 0:
                lines.append(draw(st.sampled_from(JUNK_LINES + [f"\t{n} = 1" for n in OTHER_NAMES])))
        lines.append("")
    ends = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    text = "".join(line + (("\r\n" if draw(st.booleans()) else "\n") if ends == "mixed" else ends) for line in lines)
    data = text.encode("utf-8")
    if data and draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xe9", b"\xff\xfe", b"\xef\xbf\xbd"])) + data[at:]
    return data


@contextlib.contextmanager
def _slices_of(size: int) -> Iterator[None]:
    saved = radius._SLICE_BYTES
    radius._SLICE_BYTES = size
    try:
        yield
    finally:
        radius._SLICE_BYTES = saved


def _same_as_reference(data: bytes | str) -> None:
    expected = radius_reference.parse_detail(data, "d", TZ)
    got = parse_detail(data, "d", TZ)
    assert_frame_equal(got[0], expected[0])
    assert_frame_equal(got[1], expected[1])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detail_files(), st.sampled_from([1 << 22, 64, 1]))
def test_generated_detail_files_read_as_the_polars_parser_read_them(data: bytes, slice_bytes: int) -> None:
    with _slices_of(slice_bytes):
        _same_as_reference(data)
        with contextlib.suppress(UnicodeDecodeError):
            _same_as_reference(data.decode("utf-8"))


def _frame(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_ms": [1717340400000 + 61_000 * i for i in range(n)],
            "delay_s": [i % 3 for i in range(n)],
            "status": [["Start", "Interim-Update", "Stop"][i % 3] for i in range(n)],
            "session_id": [f"S{i // 3}" for i in range(n)],
            "user_name": [f"user{i}@bb.example.jp" for i in range(n)],
            "nas_ip": "192.0.2.1",
            "nas_identifier": "bras",
            "framed_protocol": "PPP",
            "framed_ip": [f"10.0.{i // 250}.{i % 250}" for i in range(n)],
            "delegated_prefix": None,
            "calling_station_id": None,
            "session_time_s": [60 * i for i in range(n)],
            "in_octets": [i * 2**31 for i in range(n)],
            "out_octets": [i * 12345 for i in range(n)],
        },
        schema_overrides={"delegated_prefix": pl.String, "calling_station_id": pl.String},
    )


@pytest.mark.parametrize("slice_bytes", [1 << 22, 997, 1])
def test_written_detail_reads_the_same_in_slices_of_any_size(slice_bytes: int) -> None:
    text = format_detail(_frame(300), TZ)
    with _slices_of(slice_bytes):
        _same_as_reference(text)
        _same_as_reference(text.encode().replace(b"\n", b"\r\n"))
        _same_as_reference(text.rstrip("\n"))  # the last value ends the data


def test_an_attribute_repeated_with_its_value_is_kept_and_another_value_sets_the_record_aside() -> None:
    text = format_detail(_frame(6), TZ)
    records = text.split("\n\n")
    records[1] = records[1].replace("\tNAS-Identifier", '\tUser-Name = "user1@bb.example.jp"\n\tNAS-Identifier')
    records[2] = records[2].replace("\tNAS-Identifier", '\tUser-Name = "other"\n\tNAS-Identifier')
    records[3] = records[3].replace("\tNAS-Identifier", "\tNAS-Identifier=bras\n\tNAS-Identifier")
    _same_as_reference("\n\n".join(records))
    got, problems = parse_detail("\n\n".join(records), "d", TZ)
    assert got["session_id"].to_list() == ["S0", "S0", "S1", "S1", "S1"]
    assert problems["reason"].to_list() == ["attribute user_name repeated with different values"]


def test_quotes_are_stripped_however_many_and_only_at_the_ends() -> None:
    text = format_detail(_frame(3), TZ)
    text = text.replace('"bras"', '""bras""', 1).replace('"user1@bb.example.jp"', '"\\"user1\\""', 1)
    _same_as_reference(text)
    records, _ = parse_detail(text, "d", TZ)
    assert records["nas"].to_list() == ["bras"] * 3
    assert records["user_name"][1] == '\\"user1\\'
