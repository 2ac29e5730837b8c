"""Real Debian tools driven by the tests: a pcap of user traffic, captures on loopback, FreeRADIUS."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from transforms.decode.pcap import ethernet_ipv4_frame, tcp_segment, udp_segment, write_pcap

START = 1_717_340_400.0  # 2024-06-03 00:00 JST


def require(*tools: str) -> None:
    """Skips outside CI when a tool is missing; in CI (.ci/run installs them) a missing tool fails."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} not installed: .ci/run installs them with tests/tools/install-debian-tools.sh")
        pytest.skip(f"{missing} not installed (tests/tools/install-debian-tools.sh installs them)")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def capture_udp(port: int, path: Path) -> Iterator[None]:
    """tshark capturing UDP to `port` on loopback into `path` (pcapng) while the block runs."""
    proc = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", f"udp port {port}", "-w", str(path), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "Capturing on" in line or "Capture started" in line:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"tshark exited: {seen}")
    time.sleep(0.5)
    try:
        yield
    finally:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


# Three conversations with fixed packet sizes and even packet counts, interleaved, so that
# 1-in-2 periodic sampling keeps exactly half of each.
CONVERSATIONS = (
    # (src, dst, protocol, sport, dport, payload bytes, packets)
    ("10.1.0.5", "93.184.216.34", 6, 50000, 443, 100, 200),
    ("93.184.216.34", "10.1.0.5", 6, 443, 50000, 1200, 200),
    ("10.1.0.6", "8.8.8.8", 17, 40000, 4500, 50, 200),
)


def ip_length(protocol: int, payload: int) -> int:
    return 20 + (20 if protocol == 6 else 8) + payload


def expected_totals() -> dict[str, tuple[int, int]]:
    """Per source address: (IP bytes, packets) the capture holds."""
    out: dict[str, tuple[int, int]] = {}
    for src, _dst, proto, _sp, _dp, payload, packets in CONVERSATIONS:
        b, p = out.get(src, (0, 0))
        out[src] = (b + packets * ip_length(proto, payload), p + packets)
    return out


@pytest.fixture(scope="session")
def user_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = []
    for i in range(200):
        for k, (src, dst, proto, sp, dp, payload, _n) in enumerate(CONVERSATIONS):
            segment = (
                tcp_segment(sp, dp, b"x" * payload, seq=1 + i * payload)
                if proto == 6
                else udp_segment(sp, dp, b"q" * payload)
            )
            frames.append((START + i * 0.1 + k * 0.01, ethernet_ipv4_frame(src, dst, proto, segment, i)))
    path = tmp_path_factory.mktemp("pcap") / "user.pcap"
    path.write_bytes(write_pcap(frames))
    return path
