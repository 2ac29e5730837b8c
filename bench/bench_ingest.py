"""Ingest benchmark: every input path on files shaped as exporters and collectors write them.

    .venv/bin/python bench/bench_ingest.py [--records 10000000] [--runs 3] [--paths ipfix-mtu,...]

Paths (each decoded in its own process, so peak RSS is that decode's alone):
  ipfix-mtu     stored IPFIX datagrams of a busy exporter: <= 1,400-byte messages, 5 s flush
                timer, 2 observation domains, IPv4 and IPv6 sets, templates + options every 10 min
  ipfix-sparse  the same records from a quiet exporter: 1 s flush timer, 8 domains, over a week
                (about 2 records a message, the shape that costs most per record)
  ipfix-pcap    the ipfix-mtu datagrams captured on the wire (Ethernet/IPv4/UDP pcap)
  ipfix-pcapng  the same capture as pcapng (tshark's and dumpcap's format)
  v9-pcap       NetFlow v9 export packets of the same flows (IPv4), MTU-sized, in a pcap
  nfdump        baseline: Debian's nfcapd receives the ipfix-mtu datagrams on 127.0.0.1, then
                `nfdump -R <dir> -s proto/bytes` reads its files (every record, least work each)
  nfdump-ip     the same files read by `nfdump -R <dir> -s ip/bytes` (top talkers: a hash per record)
Each prints records/s per wall second and per CPU second (median of --runs), peak RSS, and a
checksum (records, sum of octets) that the independent reader (nfdump) must agree with.
nfdump CSV and FreeRADIUS detail have their own scripts (bench_nfdump_csv.py, bench_radius.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.decode import (  # noqa: E402
    ExporterState,  # noqa: E402
    ipfix,
    netflow,
)
from transforms.decode.exports import decode_flow_file  # noqa: E402
from transforms.decode.pcap import ethernet_ipv4_frame, udp_segment, write_pcap  # noqa: E402
from transforms.synth.exporter import ExportShape, encode_export_stream  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
DAY_MS = 86_400_000
START_MS = 1_717_340_400_000  # 2024-06-03 00:00 JST
RATE = 1024


def synthetic_flows(records: int, days: int, seed: int = 42) -> pl.DataFrame:
    """`records` flows spread over `days` (30% IPv6), with realistic port/size mixes."""
    rng = np.random.default_rng(seed)
    first = START_MS + np.sort(rng.integers(0, days * DAY_MS, records)).astype(np.int64)
    v6 = rng.random(records) < 0.3
    v4_address = rng.integers(0, 2**32, (2, records), dtype=np.uint64)
    return pl.DataFrame(
        {
            "first_ts": first,
            "last_ts": first + rng.integers(0, 60_000, records),
            "is_v6": v6,
            "src_hi": np.where(v6, rng.integers(0, 2**63, records, dtype=np.uint64), 0).astype(np.uint64),
            "src_lo": np.where(v6, rng.integers(0, 2**63, records, dtype=np.uint64), v4_address[0] | 0xFFFF_0000_0000),
            "dst_hi": np.where(v6, rng.integers(0, 2**63, records, dtype=np.uint64), 0).astype(np.uint64),
            "dst_lo": np.where(v6, rng.integers(0, 2**63, records, dtype=np.uint64), v4_address[1] | 0xFFFF_0000_0000),
            "src_port": rng.choice([443, 80, 53, 50000, 51234, 4500], records).astype(np.uint16),
            "dst_port": rng.integers(1024, 65536, records).astype(np.uint16),
            "protocol": rng.choice([6, 17], records).astype(np.uint8),
            "packets": rng.integers(1, 64, records).astype(np.uint64),
            "bytes": rng.integers(40, 90_000, records).astype(np.uint64),
        }
    )


def _write_ipfix(records: int, path: Path, shape: ExportShape, days: int) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_export_stream(synthetic_flows(records, days), shape, 1, "interval", RATE)
        path.write_bytes(data)
    return path


def ipfix_mtu(records: int) -> Path:
    return _write_ipfix(records, DATA / f"ingest-ipfix-mtu-{records}.ipfix", ExportShape(flush_ms=5_000), 1)


def ipfix_sparse(records: int) -> Path:
    shape = ExportShape(flush_ms=1_000, domains=8)
    return _write_ipfix(records, DATA / f"ingest-ipfix-sparse-{records}.ipfix", shape, 7)


def messages(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append(data[pos : pos + length])
        pos += length
    return out


def ipfix_pcap(records: int) -> Path:
    path = DATA / f"ingest-ipfix-{records}.pcap"
    if not path.exists():
        frames = [
            (START_MS / 1000 + i * 1e-3, ethernet_ipv4_frame("192.0.2.1", "192.0.2.9", 17, udp_segment(4739, 4739, m)))
            for i, m in enumerate(messages(ipfix_mtu(records).read_bytes()))
        ]
        path.write_bytes(write_pcap(frames))
    return path


def ipfix_pcapng(records: int) -> Path:
    """The ipfix-pcap capture as pcapng (what tshark and dumpcap write): one section, one Ethernet
    interface, an enhanced packet block per frame."""
    path = DATA / f"ingest-ipfix-{records}.pcapng"
    if path.exists():
        return path
    data = ipfix_pcap(records).read_bytes()

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)), block(1, struct.pack("<HHI", 1, 0, 65535))]
    pos = 24
    while pos < len(data):
        seconds, micros, captured, original = struct.unpack_from("<IIII", data, pos)
        stamp = seconds * 1_000_000 + micros
        frame = data[pos + 16 : pos + 16 + captured]
        out.append(block(6, struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, captured, original) + frame))
        pos += 16 + captured
    path.write_bytes(b"".join(out))
    return path


def v9_pcap(records: int) -> Path:
    """v9 packets of <= 1,400 bytes (40 records of the v9 flow template), templates and the sampler
    options every 100 packets, sequence numbers counting packets."""
    path = DATA / f"ingest-v9-{records}.pcap"
    if path.exists():
        return path
    flows = synthetic_flows(records, 1).filter(~pl.col("is_v6"))
    template = netflow.V9_FLOW_TEMPLATE
    boot_ms = START_MS - 3_600_000
    columns = {
        ipfix.IE_SRC_V4: flows["src_lo"].to_numpy() & np.uint64(0xFFFF_FFFF),
        ipfix.IE_DST_V4: flows["dst_lo"].to_numpy() & np.uint64(0xFFFF_FFFF),
        ipfix.IE_SRC_PORT: flows["src_port"].to_numpy(),
        ipfix.IE_DST_PORT: flows["dst_port"].to_numpy(),
        ipfix.IE_PROTOCOL: flows["protocol"].to_numpy(),
        ipfix.IE_PACKETS: flows["packets"].to_numpy(),
        ipfix.IE_OCTETS: flows["bytes"].to_numpy(),
        21: (flows["last_ts"].to_numpy() - boot_ms).astype(np.uint64),
        22: (flows["first_ts"].to_numpy() - boot_ms).astype(np.uint64),
        48: np.ones(flows.height, dtype=np.uint64),
    }
    packed = netflow.pack_v9_records(template, columns)
    sampler = netflow.pack_v9_records(
        netflow.V9_SAMPLER_OPTIONS, {48: np.array([1]), 49: np.array([2]), 50: np.array([RATE])}
    )
    last_ts = flows["last_ts"].to_numpy()
    frames = []
    per_packet = 40
    for number, start in enumerate(range(0, packed.size, per_packet)):
        chunk = packed[start : start + per_packet]
        unix_ms = int(last_ts[min(start + per_packet, packed.size) - 1]) + 1000
        templates = [template, netflow.V9_SAMPLER_OPTIONS] if number % 100 == 0 else []
        data = [(netflow.V9_SAMPLER_OPTIONS, sampler)] if number % 100 == 0 else []
        payload = netflow.encode_v9_packet(
            unix_ms - boot_ms, unix_ms // 1000, number, 7, templates, [*data, (template, chunk)]
        )
        frames.append(
            (unix_ms / 1000, ethernet_ipv4_frame("192.0.2.2", "192.0.2.9", 17, udp_segment(2055, 2055, payload)))
        )
    path.write_bytes(write_pcap(frames))
    return path


def decode(path: Path) -> tuple[int, int]:
    result = decode_flow_file(path.read_bytes(), "bench", str(path), ExporterState())
    if result.problems:
        raise RuntimeError(f"{path}: {result.problems[:3]}")
    return result.flows.height, int(result.flows["bytes"].sum())


def nfdump_baseline(path: Path, workdir: Path, statistic: str) -> tuple[int, int, float, float, float]:
    """nfcapd receives the file's datagrams on loopback (paced, so none is dropped), then nfdump
    reads its files. Returns records, octets, nfdump wall s, nfdump CPU s, nfdump peak RSS MB."""
    if shutil.which("nfcapd") is None or shutil.which("nfdump") is None:
        raise RuntimeError("nfcapd/nfdump not installed (tests/tools/install-debian-tools.sh installs them)")
    store = workdir / "nfcapd"
    store.mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    collector = subprocess.Popen(
        ["nfcapd", "-w", str(store), "-b", "127.0.0.1", "-p", str(port), "-B", "16000000", "-t", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for number, message in enumerate(messages(path.read_bytes())):
            sender.sendto(message, ("127.0.0.1", port))
            if number % 64 == 63:
                time.sleep(0.0005)
    time.sleep(2)
    collector.terminate()
    collector.wait(timeout=60)
    command = ["nfdump", "-R", str(store), "-s", statistic, "-n", "10", "-N"]
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    flows = int(re.search(r"total flows: (\d+)", out).group(1))  # type: ignore[union-attr]
    octets = int(re.search(r"total bytes: (\d+)", out).group(1))  # type: ignore[union-attr]
    return flows, octets, wall, cpu, after.ru_maxrss / 1024


def _child(name: str, path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    if name.startswith("nfdump"):  # in a process of its own: RUSAGE_CHILDREN is nfcapd's and nfdump's only
        with tempfile.TemporaryDirectory() as tmp:
            queue.put(nfdump_baseline(Path(path), Path(tmp), NFDUMP_STATISTICS[name]))
        return
    started, cpu = time.perf_counter(), time.process_time()
    count, checksum = decode(Path(path))
    queue.put(
        (
            count,
            checksum,
            time.perf_counter() - started,
            time.process_time() - cpu,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
    )


def measure(name: str, path: Path) -> tuple[int, int, float, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(path), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result  # type: ignore[no-any-return]


NFDUMP_STATISTICS = {"nfdump": "proto/bytes", "nfdump-ip": "ip/bytes"}
FILES: dict[str, Callable[[int], Path]] = {
    "ipfix-mtu": ipfix_mtu,
    "ipfix-sparse": ipfix_sparse,
    "ipfix-pcap": ipfix_pcap,
    "ipfix-pcapng": ipfix_pcapng,
    "v9-pcap": v9_pcap,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", default="ipfix-mtu,ipfix-sparse,ipfix-pcap,ipfix-pcapng,v9-pcap,nfdump,nfdump-ip")
    args = parser.parse_args()
    print(
        f"{'path':13} {'records':>11} {'file MB':>8} {'wall s':>7} {'M rec/s':>8} {'M rec/CPU s':>11} "
        f"{'peak MB':>8}  checksum (records, octets)"
    )
    for name in args.paths.split(","):
        path = ipfix_mtu(args.records) if name.startswith("nfdump") else FILES[name](args.records)
        runs = [measure(name, path) for _ in range(args.runs)]
        count, checksum = runs[0][0], runs[0][1]
        wall = statistics.median(r[2] for r in runs)
        cpu = statistics.median(r[3] for r in runs)
        peak = max(r[4] for r in runs)
        print(
            f"{name:13} {count:11,d} {path.stat().st_size / 1e6:8.1f} {wall:7.2f} {count / wall / 1e6:8.2f} "
            f"{count / cpu / 1e6:11.2f} {peak:8,.0f}  ({count}, {checksum})"
        )


if __name__ == "__main__":
    main()
