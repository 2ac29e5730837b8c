"""A real FreeRADIUS server on 127.0.0.1 with its detail module, fed by radclient: the parser
reproduces the sessions, addresses and volumes that were sent."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from collections.abc import Iterator

import polars as pl
import pytest

from tests.tools.conftest import free_udp_port, require
from transforms.accounting.radius import billing_usage_by_day, build_sessions, parse_detail, sessions_to_assignments
from transforms.addresses import address_key

TZ = "Asia/Tokyo"
T0 = 1_717_340_400  # 2024-06-03 00:00 JST
GW = 1 << 32

CONFIG = """
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {root}/log
raddbdir = {root}
radacctdir = {root}/radacct
name = freeradius
confdir = ${{raddbdir}}
run_dir = {root}/run
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
log {{
    destination = stdout
}}
security {{
    allow_core_dumps = no
}}
client localhost {{
    ipaddr = 127.0.0.1
    secret = testing123
}}
modules {{
    always ok {{
        rcode = ok
    }}
    detail {{
        filename = ${{radacctdir}}/%{{%{{Packet-Src-IP-Address}}:-%{{Packet-Src-IPv6-Address}}}}/detail-%Y%m%d
        permissions = 0600
        header = "%t"
    }}
}}
server default {{
    listen {{
        type = acct
        ipaddr = 127.0.0.1
        port = {port}
    }}
    accounting {{
        detail
        ok
    }}
}}
"""


def request(status: str, session: str, event: int, **attributes: object) -> str:
    lines = [
        f"Acct-Status-Type = {status}",
        f'Acct-Session-Id = "{session}"',
        'NAS-Identifier = "bras-lab"',
        f"Event-Timestamp = {event}",
    ]
    lines += [f"{name.replace('_', '-')} = {value}" for name, value in attributes.items()]
    return "\n".join(lines) + "\n"


def counters(in_total: int, out_total: int, session_time: int) -> dict[str, object]:
    return {
        "Acct-Input-Octets": in_total % GW,
        "Acct-Input-Gigawords": in_total // GW,
        "Acct-Output-Octets": out_total % GW,
        "Acct-Output-Gigawords": out_total // GW,
        "Acct-Session-Time": session_time,
    }


PPPOE = {"User_Name": '"u1@bb.example.jp"', "Framed_Protocol": "PPP", "Framed_IP_Address": "203.0.113.7"}
IPOE = {"User_Name": '"u2@bb.example.jp"', "Delegated_IPv6_Prefix": "2400:4050:1:200::/56"}
MOBILE = {"User_Name": '"mvno.example.jp"', "Calling_Station_Id": '"819012345678"', "Framed_IP_Address": "100.64.0.9"}

REQUESTS = [
    request("Start", "S1", T0 + 60, **PPPOE),
    request(
        "Interim-Update",
        "S1",
        T0 + 1860,
        **PPPOE,
        **{k.replace("-", "_"): v for k, v in counters(GW + 12345, 3 * GW + 99, 1800).items()},
    ),
    request(
        "Stop",
        "S1",
        T0 + 3660,
        **PPPOE,
        **{k.replace("-", "_"): v for k, v in counters(2 * GW + 5, 5 * GW + 7, 3600).items()},
    ),
    request("Start", "S2", T0 + 120, **IPOE),
    request(
        "Interim-Update",
        "S2",
        T0 + 7320,
        **IPOE,
        **{k.replace("-", "_"): v for k, v in counters(777, 888_888, 7200).items()},
    ),
    # A mobile session over midnight (JST) of the first day: 23:00 -> 01:00.
    request("Start", "M1", T0 + 23 * 3600, **MOBILE),
    request(
        "Interim-Update",
        "M1",
        T0 + 25 * 3600,
        **MOBILE,
        **{k.replace("-", "_"): v for k, v in counters(2000, 40000, 7200).items()},
    ),
]
RETRANSMIT = REQUESTS[1].replace("Acct-Session-Time = 1800", "Acct-Session-Time = 1800\nAcct-Delay-Time = 4")


@pytest.fixture(scope="module")
def detail_text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require("freeradius", "radclient")
    root = tmp_path_factory.mktemp("freeradius")
    for sub in ("log", "run", "radacct"):
        (root / sub).mkdir()
    port = free_udp_port()
    (root / "radiusd.conf").write_text(CONFIG.format(root=root, port=port))
    env = {**os.environ, "TZ": TZ}
    server = subprocess.Popen(
        ["freeradius", "-f", "-l", "stdout", "-d", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert server.stdout is not None
    output = ""
    deadline = time.monotonic() + 30
    while "Ready to process requests" not in output and time.monotonic() < deadline and server.poll() is None:
        output += server.stdout.readline()
    assert "Ready to process requests" in output, output[-2000:]
    try:
        for body in [*REQUESTS, RETRANSMIT]:
            sent = subprocess.run(
                ["radclient", "-r", "2", "-t", "5", f"127.0.0.1:{port}", "acct", "testing123"],
                input=body,
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
    finally:
        server.terminate()
        server.communicate(timeout=30)
    files = sorted((root / "radacct").rglob("detail-*"))
    assert len(files) == 1, files
    yield files[0].read_text()


def test_freeradius_detail_parses_to_the_records_that_were_sent(detail_text: str) -> None:
    records, problems = parse_detail(detail_text, "detail", TZ)
    assert problems.height == 0
    assert records.height == len(REQUESTS) + 1  # the retransmission is a record of its own in the file
    # Event-Timestamp is written in the server's zone (JST) and read back to the same instant.
    firsts = records.sort("line").head(1)
    assert firsts["event_ts"].item() == dt.datetime.fromtimestamp(T0 + 60, dt.UTC)


def test_sessions_addresses_and_gigaword_volumes_are_reproduced(detail_text: str) -> None:
    records, _ = parse_detail(detail_text, "detail", TZ)
    records = records.unique(subset=["nas", "session_id", "status", "event_ts"])
    sessions = build_sessions(records).sort("session_id")
    by_id = {r["session_id"]: r for r in sessions.iter_rows(named=True)}
    assert set(by_id) == {"S1", "S2", "M1"}
    assert by_id["S1"]["start_ts"] == dt.datetime.fromtimestamp(T0 + 60, dt.UTC)
    assert by_id["S1"]["stop_ts"] == dt.datetime.fromtimestamp(T0 + 3660, dt.UTC)
    assert (by_id["S1"]["in_octets"], by_id["S1"]["out_octets"]) == (2 * GW + 5, 5 * GW + 7)
    assert by_id["S2"]["closed_by"] == "open" and by_id["S2"]["out_octets"] == 888_888
    assignments = sessions_to_assignments(sessions, dt.timedelta(hours=48))
    keys = {(r["session_id"], r["family"], r["key"], r["prefix_len"]) for r in assignments.iter_rows(named=True)}
    v4 = address_key("203.0.113.7")
    v6 = address_key("2400:4050:1:200::/56")
    assert v4 is not None and v6 is not None
    assert ("S1", "v4", v4["key"], 32) in keys
    assert ("S2", "v6", v6["key"], 56) in keys


def test_mobile_billing_splits_the_session_over_midnight(detail_text: str) -> None:
    records, _ = parse_detail(detail_text, "detail", TZ)
    records = records.unique(subset=["nas", "session_id", "status", "event_ts"])
    week = dt.datetime.fromtimestamp(T0, dt.UTC)
    days = billing_usage_by_day(records, week, TZ).sort("day")
    assert days["calling_station_id"].to_list() == ["819012345678", "819012345678"]
    assert days["day"].to_list() == [dt.date(2024, 6, 3), dt.date(2024, 6, 4)]
    assert days["out_bytes"].to_list() == pytest.approx([20000.0, 20000.0])
    assert days.select(pl.col("in_bytes").sum()).item() == pytest.approx(2000.0)
