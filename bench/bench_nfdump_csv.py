"""nfdump CSV decoding benchmark: this project's decoder, the one it replaced, and polars.read_csv.

    .venv/bin/python bench/bench_nfdump_csv.py [--rows 1100000] [--repeat 3] [--methods ...]

The file is what `nfdump -r FILE -o csv` prints (legacy 48-column header, Summary trailer): with
Debian's nfpcapd and nfdump installed it is made by them from a generated pcap of one-packet IPv4
flows over an hour of 2024-06-03 (Asia/Tokyo), as tests/tools/test_flow_tools.py makes its file;
without them the same layout is written directly. Generated once into bench/data/ (not committed).

Each method runs in its own process, so peak RSS is that method's alone (it includes the file's
bytes, read before timing). Prints rows/s per wall second and per CPU second (user + system of the
process, all threads), peak RSS, and a checksum (rows, sum of bytes) that the decoders must share;
polars.read_csv (all 48 columns, types inferred, the trailer's ragged lines set to null) is the floor.
`run(rows)` gives the figures as a dict (for a combined ingest benchmark).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.processes import thread_mapper  # noqa: E402
from transforms.decode.nfdump_csv import decode_nfdump_csv  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
TIMEZONE = "Asia/Tokyo"
START_S = 1_717_340_400  # 2024-06-03 00:00 Asia/Tokyo
HEADER = (
    "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,dvln,"
    "ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr"
)
# After ibyt, as nfdump 1.7.1 prints a one-packet flow read by nfpcapd.
TAIL = (
    "0,0,0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
    "00:00:00:00:00:00," + ",".join(["0-0-0"] * 10) + ",    0.000,    0.000,    0.000,0.0.0.0,0/0,0,"
    "2024-06-03 01:00:00.000"
)


def _flows(rows: int) -> dict[str, np.ndarray]:
    """One-packet flows between 20,000 subscribers and 200,000 remote addresses, uploads 30%."""
    rng = np.random.default_rng(42)
    subscribers = rng.integers(0x0A00_0000, 0x0AFF_FFFF, 20_000, dtype=np.uint32)  # 10.0.0.0/8
    remotes = rng.integers(0x0100_0000, 0xDF00_0000, 200_000, dtype=np.uint32)
    user = subscribers[rng.integers(0, subscribers.size, rows)]
    remote = remotes[rng.integers(0, remotes.size, rows)]
    upload = rng.random(rows) < 0.3
    tcp = rng.random(rows) < 0.8
    service = rng.choice(np.array([443, 443, 443, 80, 53, 123, 8080], np.uint16), rows)
    client = rng.integers(1024, 65536, rows, dtype=np.uint16)
    return {
        "time_us": np.sort(rng.integers(0, 3_600_000_000, rows)).astype(np.int64),
        "src": np.where(upload, user, remote),
        "dst": np.where(upload, remote, user),
        "sport": np.where(upload, client, service),
        "dport": np.where(upload, service, client),
        "proto": np.where(tcp, 6, 17).astype(np.uint8),
        "ip_len": rng.integers(40, 1500, rows).astype(np.uint16),
    }


def _pcap(flows: dict[str, np.ndarray], path: Path) -> None:
    """A pcap of one 54-byte captured frame (Ethernet, IPv4, TCP or UDP header) per flow."""
    n = flows["src"].size
    frame = np.dtype(
        [
            ("sec", "<u4"),
            ("usec", "<u4"),
            ("caplen", "<u4"),
            ("len", "<u4"),
            ("mac", "V12"),
            ("ethertype", ">u2"),
            ("vihl", "u1"),
            ("tos", "u1"),
            ("total", ">u2"),
            ("ident", ">u2"),
            ("frag", ">u2"),
            ("ttl", "u1"),
            ("proto", "u1"),
            ("checksum", ">u2"),
            ("src", ">u4"),
            ("dst", ">u4"),
            ("sport", ">u2"),
            ("dport", ">u2"),
            ("rest", "V16"),
        ]  # fmt: skip
    )
    records = np.zeros(n, frame)
    records["sec"] = START_S + flows["time_us"] // 1_000_000
    records["usec"] = flows["time_us"] % 1_000_000
    records["caplen"] = 54
    records["len"] = 14 + flows["ip_len"].astype(np.uint32)
    records["mac"] = np.void(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01")
    records["ethertype"] = 0x0800
    records["vihl"] = 0x45
    records["total"] = flows["ip_len"]
    records["frag"] = 0x4000
    records["ttl"] = 64
    for name in ("proto", "src", "dst", "sport", "dport"):
        records[name] = flows[name]
    # TCP: data offset 5 words, PSH+ACK. UDP: its length, then payload.
    rest = np.zeros((n, 16), np.uint8)
    rest[:, 8] = 0x50
    rest[:, 9] = 0x18
    udp = flows["proto"] == 17
    udp_length = flows["ip_len"][udp].astype(np.uint16) - 20
    rest[udp, 0], rest[udp, 1] = udp_length >> 8, udp_length & 0xFF
    records["rest"] = rest.view("V16").ravel()
    header = np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], "<u4").tobytes()
    with path.open("wb") as out:
        out.write(header)
        out.write(records.tobytes())


def _nfdump_csv(flows: dict[str, np.ndarray], path: Path) -> None:
    """The CSV nfdump prints, by nfpcapd (pcap -> nfcapd files) and `nfdump -R DIR -o csv`."""
    with tempfile.TemporaryDirectory(dir=DATA) as work:
        pcap, capd = Path(work) / "flows.pcap", Path(work) / "nfcapd"
        capd.mkdir()
        _pcap(flows, pcap)
        cache = str(max(1 << 19, flows["src"].size * 2))
        subprocess.run(
            ["nfpcapd", "-r", str(pcap), "-w", str(capd), "-t", "86400", "-e", "300,60", "-B", cache],
            check=True,
            capture_output=True,
        )
        with path.open("wb") as out:
            subprocess.run(
                ["nfdump", "-R", str(capd), "-o", "csv"],
                check=True,
                stdout=out,
                env={**os.environ, "TZ": TIMEZONE},
            )


def _written_csv(flows: dict[str, np.ndarray], path: Path) -> None:
    """The legacy layout nfdump prints, written without nfdump (the same columns and forms)."""
    start_ms = (START_S * 1_000_000 + flows["time_us"]) // 1000
    local = pl.from_epoch(pl.Series(start_ms), "ms").dt.replace_time_zone("UTC").dt.convert_time_zone(TIMEZONE)

    def dotted(values: np.ndarray) -> pl.Expr:
        v = pl.lit(pl.Series(values.astype(np.int64)))
        return pl.format("{}.{}.{}.{}", v // 16_777_216, v // 65_536 % 256, v // 256 % 256, v % 256)

    names = pl.Series(["", "TCP", "UDP"])[pl.Series(np.where(flows["proto"] == 6, 1, 2))]
    lines = pl.select(
        pl.format(
            "{},{},0.000,{},{},{},{},{},........,0,0,1,{}," + TAIL.replace("{", "{{"),
            pl.lit(local).dt.strftime("%Y-%m-%d %H:%M:%S"),
            pl.lit(local).dt.strftime("%Y-%m-%d %H:%M:%S"),
            dotted(flows["src"]),
            dotted(flows["dst"]),
            pl.lit(pl.Series(flows["sport"])),
            pl.lit(pl.Series(flows["dport"])),
            pl.lit(names),
            pl.lit(pl.Series(flows["ip_len"])),
        )
    ).to_series()
    total = int(flows["ip_len"].sum())
    with path.open("wb") as out:
        out.write(HEADER.encode() + b"\n")
        out.write(("\n".join(lines.to_list()) + "\n").encode())
        out.write(
            f"Summary\nflows,bytes,packets,avg_bps,avg_pps,avg_bpp\n{lines.len()},{total},{lines.len()},0,0,0\n".encode()
        )


def make_file(rows: int) -> Path:
    """bench/data/nfdump-<rows>.csv, generated once (by nfpcapd + nfdump when installed)."""
    tools = shutil.which("nfpcapd") and shutil.which("nfdump")
    path = DATA / f"nfdump-{rows}{'' if tools else '-written'}.csv"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    (_nfdump_csv if tools else _written_csv)(_flows(rows), partial)
    partial.rename(path)
    return path


def _previous_decoder() -> ModuleType:
    """The decoder this one replaced, kept in the differential test as its reference."""
    test = Path(__file__).resolve().parents[1] / "tests" / "transforms" / "test_nfdump_csv_differential.py"
    spec = importlib.util.spec_from_file_location("nfdump_reference", test)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trafficreport(data: bytes, source: str) -> tuple[int, int]:
    with thread_mapper(2) as mapper:  # as flows.flow_ingest calls it
        flows, problems = decode_nfdump_csv(data, "bench", source, TIMEZONE, mapper)
    assert not problems, problems[:3]
    return flows.height, int(flows["bytes"].sum())


def _previous(data: bytes, source: str) -> tuple[int, int]:
    flows, problems = _previous_decoder().reference_decode(data, "bench", source, TIMEZONE)
    assert not problems, problems[:3]
    return flows.height, int(flows["bytes"].sum())


def _polars(data: bytes, source: str) -> tuple[int, int]:
    frame = pl.read_csv(data, truncate_ragged_lines=True, ignore_errors=True)
    flows = frame.filter(pl.col("ibyt").is_not_null() & pl.col("ts").is_not_null())  # the trailer's lines
    return flows.height, int(flows["ibyt"].sum())


METHODS = {
    "trafficreport": _trafficreport,
    "previous decoder": _previous,
    "polars.read_csv": _polars,
}


def _child(name: str, path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    if name == "previous decoder":
        _previous_decoder()  # imported before the clock starts, as the others are
    data = Path(path).read_bytes()
    before = os.times()
    started = time.perf_counter()
    count, checksum = METHODS[name](data, path)
    seconds = time.perf_counter() - started
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((count, checksum, seconds, cpu, peak_mb))


def measure(name: str, path: Path) -> tuple[int, int, float, float, float]:
    """(rows, sum of bytes, wall seconds, CPU seconds, peak RSS MB) of one method in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(path), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result  # type: ignore[no-any-return]


def run(rows: int, repeat: int = 3, methods: list[str] | None = None) -> dict[str, object]:
    """Medians of `repeat` runs of each method on the file of `rows` flows, as a dict."""
    path = make_file(rows)
    out: dict[str, object] = {"file": str(path), "file_mb": path.stat().st_size / 1e6, "methods": {}}
    for name in methods or list(METHODS):
        runs = [measure(name, path) for _ in range(repeat)]
        count, checksum = runs[0][:2]
        assert all(r[:2] == (count, checksum) for r in runs), runs
        wall = statistics.median(r[2] for r in runs)
        cpu = statistics.median(r[3] for r in runs)
        out["methods"][name] = {  # type: ignore[index]
            "rows": count,
            "bytes_sum": checksum,
            "seconds": wall,
            "seconds_each": [round(r[2], 3) for r in runs],
            "cpu_seconds": cpu,
            "rows_per_s": count / wall,
            "rows_per_cpu_s": count / cpu,
            "peak_rss_mb": max(r[4] for r in runs),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    result = run(args.rows, args.repeat, args.methods)
    print(f"{result['file']}: {result['file_mb']:.1f} MB; medians of {args.repeat} runs, each in its own process")
    print(
        f"{'method':18} {'rows':>10} {'seconds':>8} {'rows/s':>11} {'CPU s':>6} {'rows/CPU s':>11}"
        f" {'peak RSS MB':>11}  checksum (rows, bytes)  runs"
    )
    for name, m in result["methods"].items():  # type: ignore[attr-defined]
        print(
            f"{name:18} {m['rows']:10,d} {m['seconds']:8.2f} {m['rows_per_s']:11,.0f} {m['cpu_seconds']:6.2f}"
            f" {m['rows_per_cpu_s']:11,.0f} {m['peak_rss_mb']:11,.0f}  ({m['rows']}, {m['bytes_sum']})"
            f"  {m['seconds_each']}"
        )


if __name__ == "__main__":
    main()
