"""IPFIX decoding benchmark: this project's decoder vs the `netflow` package on the same file.

    .venv/bin/python bench/bench_ipfix.py [--records 10000000] [--baseline-records 200000]

Each method runs in its own process, so peak RSS is that method's alone. Prints records/s,
peak memory and a checksum (sum of octets) that must agree between methods on the same file.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.decode import (
    ExporterState,  # noqa: E402
    ipfix,  # noqa: E402
)

DATA = Path(__file__).resolve().parent / "data"


def make_file(records: int, path: Path) -> Path:
    """A stored IPFIX stream of `records` IPv4 flows (fixed-length template), built in chunks."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    options = ipfix.sampling_options_template("interval")
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, options])
    announce, sequence = ipfix.encode_messages(
        1,
        0,
        0,
        header,
        options,
        ipfix.pack_records(
            options, {ipfix.IE_SELECTOR_ID: np.array([1]), ipfix.IE_SAMPLING_INTERVAL: np.array([1024])}
        ),
    )
    with path.open("wb") as out:
        out.write(announce)
        done = 0
        while done < records:
            n = min(1_000_000, records - done)
            start = 1_717_340_400_000 + np.sort(rng.integers(0, 86_400_000, n)).astype(np.uint64)
            columns = {
                ipfix.IE_START_MS: start,
                ipfix.IE_END_MS: start + rng.integers(0, 60_000, n).astype(np.uint64),
                ipfix.IE_SRC_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
                ipfix.IE_DST_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
                ipfix.IE_SRC_PORT: rng.integers(0, 65536, n),
                ipfix.IE_DST_PORT: rng.integers(0, 65536, n),
                ipfix.IE_PROTOCOL: rng.choice([6, 17], n),
                ipfix.IE_PACKETS: rng.integers(1, 64, n).astype(np.uint64),
                ipfix.IE_OCTETS: rng.integers(40, 90_000, n).astype(np.uint64),
            }
            data, sequence = ipfix.encode_messages(
                1, 0, sequence, b"", ipfix.FLOW_TEMPLATE_V4, ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, columns)
            )
            out.write(data)
            done += n
    return path


def run_trafficreport(path: Path) -> tuple[int, int]:
    result = ipfix.decode_ipfix(path.read_bytes(), "bench", str(path), ExporterState())
    assert not result.problems, result.problems[:3]
    return result.flows.height, int(result.flows["bytes"].sum())


def run_netflow_package(path: Path) -> tuple[int, int]:
    import netflow

    data = path.read_bytes()
    templates: dict[str, dict[object, object]] = {"netflow": {}, "ipfix": {}}
    pos = count = octets = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!H", data, pos + 2)
        packet = netflow.parse_packet(data[pos : pos + length], templates)
        for flow in packet.flows:
            if "octetDeltaCount" in flow.data:  # options records come back as flows too
                count += 1
                octets += flow.data["octetDeltaCount"]
        pos += length
    return count, octets


METHODS = {"trafficreport": run_trafficreport, "netflow (PyPI)": run_netflow_package}


def _child(name: str, path: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    started = time.perf_counter()
    count, checksum = METHODS[name](Path(path))
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((count, checksum, seconds, peak_mb))


def measure(name: str, path: Path) -> tuple[int, int, float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(path), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--baseline-records", type=int, default=200_000)
    args = parser.parse_args()
    big = make_file(args.records, DATA / f"flows-{args.records}.ipfix")
    small = make_file(args.baseline_records, DATA / f"flows-{args.baseline_records}.ipfix")
    print(
        f"{'method':16} {'records':>11} {'file MB':>8} {'seconds':>8} {'records/s':>12} {'peak RSS MB':>12}  checksum"
    )
    for name, path in (("trafficreport", big), ("trafficreport", small), ("netflow (PyPI)", small)):
        count, checksum, seconds, peak = measure(name, path)
        size_mb = path.stat().st_size / 1e6
        print(
            f"{name:16} {count:11,d} {size_mb:8.1f} {seconds:8.2f} {count / seconds:12,.0f} {peak:12,.0f}  {checksum}"
        )


if __name__ == "__main__":
    main()
