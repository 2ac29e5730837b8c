"""A real nfacctd (pmacct) fed the generator's IPFIX over UDP on 127.0.0.1: its print-plugin CSV and
JSON files, counts renormalised or not, decode to the volumes the pipeline computes from the IPFIX
files themselves (decoded by decode_flow_file, rates resolved from their announcements)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from flows.generate import write_week
from tests.tools.conftest import free_udp_port, require
from tests.tools.replay import drain, socket_queue, wait_for_purges
from transforms.addresses import format_address
from transforms.decode._records import Accumulator, ExporterState
from transforms.decode.exports import decode_flow_file
from transforms.decode.ipfix import walk_messages
from transforms.decode.pmacct import decode_pmacct, is_pmacct_csv, is_pmacct_json
from transforms.decode.sampling import announcements_frame, resolve_sampling
from transforms.synth.week import WeekSpec, generate_week

WEEK = dt.date(2024, 6, 3)
# Both sampling styles of the generator's exporters: IE 305/306 (1-in-4096) and IE 34 (1-in-2048).
EXPORTERS = ("bb-tokyo-1", "bb-osaka-1")
ZONE = "Asia/Tokyo"  # nfacctd's local zone: the timestamps it prints without a zone are in it
AGGREGATE = "src_host, dst_host, src_port, dst_port, proto, timestamp_start, timestamp_end, sampling_rate, peer_src_ip"


def nfacctd_config(port: int, out: Path, renormalize: bool) -> str:
    """Two print plugins: CSV and JSON, one of them with timestamps since the epoch, the other as
    local time (which is which alternates with `renormalize`, so both formats see both)."""
    epoch = "json" if not renormalize else "csv"
    return "\n".join(
        [
            "daemonize: false",
            "nfacctd_ip: 127.0.0.1",
            f"nfacctd_port: {port}",
            f"nfacctd_renormalize: {str(renormalize).lower()}",
            f"logfile: {out}/nfacctd.log",
            "plugins: print[csv], print[json]",
            f"aggregate: {AGGREGATE}",
            "print_output[csv]: csv",
            "print_output[json]: json",
            f"print_output_file[csv]: {out}/csv/nfacctd-%Y%m%d-%H%M.csv",
            f"print_output_file[json]: {out}/json/nfacctd-%Y%m%d-%H%M.json",
            # A purge rewrites its time bin's file unless appending: a bin written by two purges
            # would keep only the second one's rows.
            "print_output_file_append: true",
            "print_refresh_time: 1",
            "print_history: 1h",
            "print_history_roundoff: h",  # else the hour bins start at the minute nfacctd started
            f"timestamps_since_epoch[{epoch}]: true",
            "",
        ]
    )


@dataclass
class Collector:
    renormalize: bool
    port: int
    out: Path
    proc: subprocess.Popen[bytes]


def _wait_ready(collector: Collector, deadline: float) -> None:
    log = collector.out / "nfacctd.log"
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        plugins = text.count("cache entries=")
        if f"waiting for NetFlow/IPFIX data on 127.0.0.1:{collector.port}" in text and plugins == 2:
            return
        if collector.proc.poll() is not None:
            raise RuntimeError(f"nfacctd exited: {text}")
        time.sleep(0.05)
    raise RuntimeError(f"nfacctd not ready: {log.read_text() if log.exists() else ''}")


def _stop(collector: Collector) -> None:
    """SIGINT: nfacctd's plugins purge their caches, then it exits (it ignores SIGTERM)."""
    if collector.proc.poll() is None:
        collector.proc.send_signal(signal.SIGINT)
    try:
        collector.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(collector.proc.pid, signal.SIGKILL)  # its own session: the core and its plugins
        collector.proc.wait(timeout=10)
        return
    # A purge is a forked writer that can outlive the daemon: its files are whole only once it ends.
    wait_for_purges(collector.out / "nfacctd.log", time.monotonic() + 120)


def _drain(collectors: list[Collector], below: int, deadline: float) -> None:
    drain([c.port for c in collectors], below, deadline)


def _datagrams(data: bytes) -> list[bytes]:
    """The messages of a stored IPFIX stream, in the file's order (templates first, as it has them)."""
    starts = walk_messages(data, 0, len(data), Accumulator("", "", ExporterState())).tolist()
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


@pytest.fixture(scope="module")
def ipfix_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("pmacct-landing")
    write_week(generate_week(WeekSpec(week=WEEK, year=2024, broadband_users=20, mobile_phones=20, seed=3)), out)
    return [sorted((out / "flows" / name).rglob("*.ipfix"))[0] for name in EXPORTERS]


@pytest.fixture(scope="module")
def nfacctd_output(ipfix_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, Path]]:
    """Output directories of two nfacctd, counts as exported and renormalised, fed the same IPFIX."""
    require("nfacctd")
    collectors: list[Collector] = []
    try:
        for renormalize in (False, True):
            out = tmp_path_factory.mktemp(f"nfacctd-{'renormalised' if renormalize else 'raw'}")
            port = free_udp_port()
            (out / "nfacctd.conf").write_text(nfacctd_config(port, out, renormalize))
            proc = subprocess.Popen(
                ["nfacctd", "-f", str(out / "nfacctd.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "TZ": ZONE},
                start_new_session=True,
            )
            collectors.append(Collector(renormalize, port, out, proc))
        for collector in collectors:
            _wait_ready(collector, time.monotonic() + 20)
        deadline = time.monotonic() + 60
        for path in ipfix_files:
            # One socket per file, as one exporter sends; each datagram to both collectors.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for index, datagram in enumerate(_datagrams(path.read_bytes())):
                    if index % 32 == 0:
                        _drain(collectors, 32 * 1024, deadline)
                    for collector in collectors:
                        sender.sendto(datagram, ("127.0.0.1", collector.port))
        _drain(collectors, 1, deadline)
        assert [socket_queue(c.port)[1] for c in collectors] == [0, 0], "nfacctd's socket dropped datagrams"
        time.sleep(1.0)  # the core hands the last datagrams to the plugins
        for collector in collectors:
            collector.proc.send_signal(signal.SIGINT)
        for collector in collectors:
            _stop(collector)
        yield {c.renormalize: c.out for c in collectors}
    finally:
        for collector in collectors:
            _stop(collector)


def estimated_totals(flows: pl.DataFrame, rate: str) -> dict[str, tuple[int, int]]:
    """Per source address: (bytes, packets) scaled by each flow's rate."""
    grouped = flows.group_by("src_hi", "src_lo").agg(
        (pl.col("bytes") * pl.col(rate).cast(pl.UInt64)).sum().alias("bytes"),
        (pl.col("packets") * pl.col(rate).cast(pl.UInt64)).sum().alias("packets"),
    )
    return {format_address(r["src_hi"], r["src_lo"]): (r["bytes"], r["packets"]) for r in grouped.iter_rows(named=True)}


@pytest.fixture(scope="module")
def reference(ipfix_files: list[Path]) -> pl.DataFrame:
    """The IPFIX files as the pipeline reads them: decoded, rates resolved from their announcements."""
    parts = []
    for path in ipfix_files:
        result = decode_flow_file(path.read_bytes(), "reference", str(path), ExporterState())
        assert result.problems == []
        known, unknown = resolve_sampling(result.flows, announcements_frame(result.sampling), None)
        assert unknown.is_empty()
        parts.append(known)
    return pl.concat(parts)


@pytest.mark.parametrize("renormalize", [False, True], ids=["raw", "renormalised"])
@pytest.mark.parametrize("output", ["csv", "json"])
def test_nfacctd_print_output_decodes_to_the_ipfix_volumes(
    nfacctd_output: dict[bool, Path], reference: pl.DataFrame, renormalize: bool, output: str
) -> None:
    files = sorted((nfacctd_output[renormalize] / output).glob(f"nfacctd-*.{output}"))
    assert files, f"nfacctd wrote no {output} file"
    parts = []
    for path in files:
        data = path.read_bytes()
        assert (is_pmacct_csv(data), is_pmacct_json(data)) == (output == "csv", output == "json")
        flows, problems = decode_pmacct(data, "pmacct", str(path), None, counts_scaled=renormalize, timezone=ZONE)
        assert problems == []
        parts.append(flows)
    flows = pl.concat(parts)
    assert flows["record_rate"].null_count() == 0
    assert estimated_totals(flows, "record_rate") == estimated_totals(reference, "sampling_rate")
    assert set(flows["origin"].to_list()) == {"127.0.0.1"}
    # Epoch seconds and local times both give the flows' own start times.
    assert flows["first_ts"].min() == reference["first_ts"].min()
    assert flows["last_ts"].max() == reference["last_ts"].max()
    if renormalize:
        # pmacct printed SAMPLING_RATE 1 with scaled counts: the rate is the counts' common divisor.
        assert set(flows["record_rate_source"].to_list()) == {"pmacct:inferred"}
    else:
        assert set(flows["record_rate_source"].to_list()) == {"pmacct"}
        assert set(flows["record_rate"].to_list()) == {4096, 2048}
        assert flows["packets"].sum() == reference["packets"].sum()
