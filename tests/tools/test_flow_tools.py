"""Flow exports written by real tools (nfpcapd/nfdump/nfreplay, softflowd) decode to what the pcap holds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import polars as pl
import pytest

from tests.tools.conftest import START, capture_udp, expected_totals, free_udp_port, require
from transforms.addresses import format_address
from transforms.decode._records import ExporterState
from transforms.decode.exports import decode_flow_file
from transforms.decode.nfdump_csv import decode_nfdump_csv
from transforms.decode.pcap import ethernet_ipv4_frame, udp_segment, write_pcap
from transforms.decode.sampling import announcements_frame, resolve_sampling


def totals(flows: pl.DataFrame, scale: int = 1) -> dict[str, tuple[int, int]]:
    grouped = flows.group_by("src_hi", "src_lo").agg(pl.col("bytes").sum(), pl.col("packets").sum())
    return {
        format_address(r["src_hi"], r["src_lo"]): (r["bytes"] * scale, r["packets"] * scale)
        for r in grouped.iter_rows(named=True)
    }


@pytest.fixture(scope="module")
def nfcapd_file(user_pcap: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("nfpcapd")
    out = tmp_path_factory.mktemp("nfcapd")
    subprocess.run(["nfpcapd", "-r", str(user_pcap), "-w", str(out)], check=True, capture_output=True, timeout=120)
    files = sorted(p for p in out.rglob("nfcapd.*") if p.is_file())
    assert files, "nfpcapd wrote no nfcapd file"
    return files[0]


def test_nfpcapd_then_nfdump_csv_reads_back_the_pcap_totals(nfcapd_file: Path) -> None:
    require("nfdump")
    csv = subprocess.run(
        ["nfdump", "-r", str(nfcapd_file), "-o", "csv"],
        check=True,
        capture_output=True,
        env={**os.environ, "TZ": "Asia/Tokyo"},
        timeout=60,
    ).stdout
    assert csv.startswith(b"ts,te,td,sa,da,sp,dp,pr"), csv[:80]
    assert b"\nSummary\n" in csv
    flows, problems = decode_nfdump_csv(csv, "nfpcapd", "nfdump.csv", "Asia/Tokyo")
    assert problems == []
    assert totals(flows) == expected_totals()
    # nfdump prints local time: read in the same zone, the first flow starts at the pcap's first packet.
    assert flows["first_ts"].min().timestamp() == pytest.approx(1_717_340_400.0, abs=1.0)  # type: ignore[union-attr]
    assert set(flows["protocol"].to_list()) == {6, 17}


@pytest.fixture(scope="module")
def nfreplay_v9(nfcapd_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nfreplay's NetFlow v9 stream of the nfcapd file, captured by tshark."""
    require("nfreplay", "tshark")
    port = free_udp_port()
    capture = tmp_path_factory.mktemp("nfreplay") / "v9.pcapng"
    with capture_udp(port, capture):
        subprocess.run(
            ["nfreplay", "-r", str(nfcapd_file), "-H", "127.0.0.1", "-p", str(port), "-v", "9", "-d", "1000"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return capture


def test_nfreplay_v9_captured_by_tshark_decodes_to_the_pcap_totals(nfreplay_v9: Path) -> None:
    capture = nfreplay_v9
    result = decode_flow_file(capture.read_bytes(), "nfreplay", str(capture), ExporterState())
    assert result.problems == []
    assert result.formats.get("netflow_v9", 0) >= 1
    assert result.lost_datagrams == 0
    assert totals(result.flows) == expected_totals()
    assert set(result.flows["origin"].to_list()) == {"127.0.0.1"}


def test_nfreplay_v9_without_sampling_options_needs_default_sampling_and_says_so(nfreplay_v9: Path) -> None:
    # nfreplay announces no sampling: with no default every flow is set aside, and the reason names
    # the setting that rates them; default_sampling 1 (an unsampled exporter) rates them all.
    result = decode_flow_file(nfreplay_v9.read_bytes(), "nfreplay", str(nfreplay_v9), ExporterState())
    assert result.sampling == [] and result.flows.height > 0
    announcements = announcements_frame(result.sampling)
    known, unknown = resolve_sampling(result.flows, announcements, None)
    assert known.height == 0 and unknown.height == result.flows.height
    [reason] = unknown["reason"].unique().to_list()
    assert "\n" not in reason
    for named in (
        "default_sampling",
        '[default_sampling] "<exporter glob>" = N',
        "TRAFFICREPORT_DEFAULT_SAMPLING=",
        "N = 1",
    ):
        assert named in reason, named
    known, unknown = resolve_sampling(result.flows, announcements, 1)
    assert unknown.height == 0 and known.height == result.flows.height
    assert set(known["sampling_rate"].to_list()) == {1} and set(known["sampling_source"].to_list()) == {"config"}
    assert totals(known) == expected_totals()


def _softflowd(user_pcap: Path, tmp_path: Path, *args: str) -> Path:
    port = free_udp_port()
    capture = tmp_path / f"softflowd{'-'.join(args)}.pcapng"
    with capture_udp(port, capture):
        subprocess.run(
            ["softflowd", "-r", str(user_pcap), "-n", f"127.0.0.1:{port}", "-d", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return capture


def test_softflowd_ipfix_with_absolute_times_matches_the_pcap(user_pcap: Path, tmp_path: Path) -> None:
    require("softflowd", "tshark")
    capture = _softflowd(user_pcap, tmp_path, "-v", "10", "-A", "milli")
    result = decode_flow_file(capture.read_bytes(), "softflowd", str(capture), ExporterState())
    assert result.problems == []
    assert result.formats == {"ipfix": result.messages}
    assert totals(result.flows) == expected_totals()
    first = result.flows["first_ts"].min()
    assert first.timestamp() == pytest.approx(1_717_340_400.0, abs=0.01)  # type: ignore[union-attr]
    # softflowd announces its (1-in-1) sampling with IE 305/306 in options data.
    assert [(a.rate, a.source) for a in result.sampling] == [(1, "ipfix:305/306")]


@pytest.mark.parametrize("version", ["9", "5"])
def test_softflowd_netflow_v9_and_v5_match_the_pcap_totals(user_pcap: Path, tmp_path: Path, version: str) -> None:
    require("softflowd", "tshark")
    capture = _softflowd(user_pcap, tmp_path, "-v", version)
    result = decode_flow_file(capture.read_bytes(), "softflowd", str(capture), ExporterState())
    assert result.problems == []
    assert result.formats == {f"netflow_v{version}": result.messages}
    assert totals(result.flows) == expected_totals()


def test_softflowd_one_in_two_sampling_scaled_back_matches_the_pcap(user_pcap: Path, tmp_path: Path) -> None:
    require("softflowd", "tshark")
    capture = _softflowd(user_pcap, tmp_path, "-v", "10", "-A", "milli", "-s", "2")
    result = decode_flow_file(capture.read_bytes(), "softflowd", str(capture), ExporterState())
    assert [(a.rate, a.source) for a in result.sampling] == [(2, "ipfix:305/306")]
    assert totals(result.flows, scale=2) == expected_totals()


@pytest.fixture(scope="module")
def many_flows_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 UDP conversations of 3 packets: enough flows for softflowd to send several messages."""
    frames = [
        (
            START + i * 0.1 + k * 0.001,
            ethernet_ipv4_frame(f"10.2.0.{k + 1}", "8.8.8.8", 17, udp_segment(40000 + k, 53, b"q" * 50), i),
        )
        for i in range(3)
        for k in range(100)
    ]
    path = tmp_path_factory.mktemp("pcap") / "many.pcap"
    path.write_bytes(write_pcap(frames))
    return path


@pytest.mark.parametrize("version", ["10", "9"])
def test_softflowd_sequence_numbers_report_no_loss_when_nothing_was_lost(
    many_flows_pcap: Path, tmp_path: Path, version: str
) -> None:
    # softflowd numbers an IPFIX message by the records sent up to and including its own (24, 56,
    # 88, 100 for messages of 24, 32, 32, 12 flows), not by those sent before it (RFC 7011).
    require("softflowd", "tshark")
    capture = _softflowd(many_flows_pcap, tmp_path, "-v", version)
    result = decode_flow_file(capture.read_bytes(), "softflowd", str(capture), ExporterState())
    assert result.problems == []
    assert result.messages > 2
    assert result.flows.height == 100
    assert (result.lost_records, result.lost_datagrams) == (0, 0)


def test_softflowd_ipfix_message_lost_on_the_way_counts_its_records(many_flows_pcap: Path, tmp_path: Path) -> None:
    require("softflowd", "tshark", "editcap")
    capture = _softflowd(many_flows_pcap, tmp_path, "-v", "10")
    lossy = tmp_path / "lossy.pcapng"
    subprocess.run(["editcap", str(capture), str(lossy), "3"], check=True, capture_output=True, timeout=60)
    result = decode_flow_file(lossy.read_bytes(), "softflowd", str(lossy), ExporterState())
    assert result.problems == []
    assert result.lost_records > 0
    assert result.flows.height + result.lost_records == 100
