"""nfcapd file reading: this project's decoder beside nfdump reading the same files.

    .venv/bin/python bench/bench_nfcapd.py [--records 10000000] [--variants plain lz4 lzo bz2] [--repeat 3]

The files are written by Debian's nfcapd itself: bench/data/ingest-ipfix-mtu-<N>.ipfix (MTU-sized
IPFIX messages of a generated week, made by bench/bench_ipfix.py) is sent over UDP on loopback,
one datagram per message (waiting whenever nfcapd's socket holds 32 KiB), to one nfcapd per
compression (`-y` LZ4, `-z` LZO, `-j` BZ2), each writing one file for the whole send (`-t 3600`).
They are made once into bench/data/nfcapd-* (not committed); a file that lost records on the way is refused.

Each reader runs in its own process and reads the file once before timing (so both read from
the page cache). Ours: `decode_nfcapd` (flows in FLOW_SCHEMA, counts back to sampled counts).
nfdump: `nfdump -r FILE -s proto/bytes -q` (reads and aggregates every record; its cheapest full
read). Printed per reader: records/s per wall second and per CPU second (user + system, all
threads), and peak RSS; the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tools.replay import drain  # noqa: E402
from transforms.decode._walk import ipfix_message_starts  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
VARIANTS = {"plain": [], "lz4": ["-y"], "lzo": ["-z"], "bz2": ["-j"]}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nfcapd_file(records: int, variant: str) -> Path:
    """The nfcapd file of the N-record IPFIX week as `nfcapd <options of variant>` wrote it."""
    folder = DATA / f"nfcapd-{variant}-{records}"
    done = sorted(folder.glob("nfcapd.2*"))
    if done:
        return done[0]
    source = DATA / f"ingest-ipfix-mtu-{records}.ipfix"
    if not source.exists():
        sys.exit(f"{source} missing: make it with bench/bench_ipfix.py --records {records}")
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    command = ["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(folder), "-t", "3600", "-B", "33554432"]
    proc = subprocess.Popen([*command, *VARIANTS[variant]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    data = source.read_bytes()
    starts, end = ipfix_message_starts(np.frombuffer(data, dtype=np.uint8), 0, len(data))
    bounds = [*starts.tolist(), end]
    deadline = time.monotonic() + 3600
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index in range(len(bounds) - 1):
            if index % 32 == 0:
                drain([port], 32 * 1024, deadline)  # nfcapd's socket never overflows
            sock.sendto(data[bounds[index] : bounds[index + 1]], ("127.0.0.1", port))
    drain([port], 1, deadline)
    time.sleep(1.0)
    proc.terminate()
    proc.wait(timeout=60)
    files = sorted(folder.glob("nfcapd.2*"))
    if len(files) != 1:
        sys.exit(f"{folder}: nfcapd wrote {len(files)} files (a rotation during the send?): remove it and retry")
    got = _records_by_nfdump(files[0])
    if got != records:
        for f in files:
            f.unlink()
        sys.exit(f"{variant}: nfcapd stored {got} of {records} records (loopback dropped some): retry")
    return files[0]


def _records_by_nfdump(path: Path) -> int:
    out = subprocess.run(["nfdump", "-r", str(path), "-I"], check=True, capture_output=True, text=True).stdout
    return int(next(line.split(":")[1] for line in out.splitlines() if line.startswith("Flows:")))


def _ours(path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from transforms.decode.nfcapd import decode_nfcapd

    data = Path(path).read_bytes()
    decode_nfcapd(data[:100_000] + b"", "bench", path)  # compile numba's loops before timing
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    decoded = decode_nfcapd(data, "bench", path)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    queue.put((decoded.flows.height, wall, cpu, after.ru_maxrss / 1024, len(decoded.problems)))


def _nfdump(path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    Path(path).read_bytes()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["nfdump", "-r", path, "-s", "proto/bytes", "-q"], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    queue.put((_records_by_nfdump(Path(path)), wall, cpu, after.ru_maxrss / 1024, 0))


def measure(reader: str, path: Path, repeat: int) -> tuple[int, float, float, float, int]:
    """(records, best wall s, CPU s of that run, peak RSS MB, problems) of `repeat` runs."""
    target = _ours if reader == "ours" else _nfdump
    runs = []
    for _ in range(repeat):
        context = mp.get_context("spawn")
        queue: mp.Queue = context.Queue()  # type: ignore[type-arg]
        proc = context.Process(target=target, args=(str(path), queue))
        proc.start()
        runs.append(queue.get())
        proc.join()
    return min(runs, key=lambda r: r[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| file | reader | records | wall s | CPU s | records/s (wall) | records/s per CPU s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for variant in args.variants:
        path = nfcapd_file(args.records, variant)
        size = path.stat().st_size / 1e6
        for reader in ("ours", "nfdump"):
            records, wall, cpu, rss, problems = measure(reader, path, args.repeat)
            assert problems == 0, f"{path}: {problems} problems"
            print(
                f"| {variant} ({size:.0f} MB) | {reader} | {records:,} | {wall:.2f} | {cpu:.2f} | "
                f"{records / wall / 1e6:.2f} M | {records / max(cpu, 1e-9) / 1e6:.2f} M | {rss:.0f} |"
            )


if __name__ == "__main__":
    main()
