"""A generated week replayed to real collectors on loopback, as routers would send it.

Each exporter sends its IPFIX messages, one UDP datagram each, from its own loopback address
(127.0.0.2, 127.0.0.3, ...), day by day. A live collector names its files by the time they
arrive; a replayed past week arrives today, so each file is then renamed into the collector's
own tree with the time of the latest flow it holds, as it would have been named had the week
been collected live (that name only decides which week reads the file).
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from tests.tools.conftest import free_udp_port
from transforms.decode._walk import ipfix_message_starts

PACE_DATAGRAMS = 100  # datagrams sent before a 1 ms pause: loopback never drops at this pace


def exporter_sources(landing: Path) -> dict[str, str]:
    """Exporter name -> the loopback address it sends from."""
    names = sorted(p.name for p in (landing / "flows").iterdir() if p.is_dir())
    return {name: f"127.0.0.{2 + i}" for i, name in enumerate(names)}


def day_messages(landing: Path, exporter: str, day: str) -> list[bytes]:
    """The IPFIX messages of one exporter's day files, in file order."""
    out: list[bytes] = []
    for path in sorted((landing / "flows" / exporter / day).iterdir()):
        data = path.read_bytes()
        starts, end = ipfix_message_starts(np.frombuffer(data, dtype=np.uint8), 0, len(data))
        assert end == len(data), f"{path}: not a plain IPFIX stream"
        bounds = [*starts.tolist(), end]
        out.extend(data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return out


def replay_week(landing: Path, ports: list[int], between_days: Callable[[], None]) -> None:
    """Sends the week's IPFIX to every port on 127.0.0.1, day by day, calling `between_days`
    after each day."""
    sources = exporter_sources(landing)
    days = sorted({p.name for e in sources for p in (landing / "flows" / e).iterdir() if p.is_dir()})
    with ExitStack() as stack:
        sockets = {}
        for exporter, address in sources.items():
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind((address, 0))
            sockets[exporter] = sock
        for day in days:
            for exporter, sock in sockets.items():
                if not (landing / "flows" / exporter / day).is_dir():
                    continue
                for index, message in enumerate(day_messages(landing, exporter, day)):
                    for port in ports:
                        sock.sendto(message, ("127.0.0.1", port))
                    if index % PACE_DATAGRAMS == PACE_DATAGRAMS - 1:
                        time.sleep(0.001)
            between_days()


@contextmanager
def running(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A collector process for the block; stopped with SIGTERM (it then writes its last file)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)
            assert proc.poll() is None, log.read_text(errors="replace")
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def collect_with_nfcapd(landing: Path, out: Path, variants: dict[str, list[str]]) -> dict[str, Path]:
    """The week replayed to one nfcapd per variant (name -> extra options, e.g. ["-y"] for LZ4),
    each writing `<out>/<variant>/<exporter>/nfcapd.<time>` (nfcapd's `-n` per exporter
    address); the files then renamed into `YYYY/MM/DD/nfcapd.YYYYMMDDhhmmss` trees. Returns
    variant -> its folder of exporter folders."""
    sources = exporter_sources(landing)
    ports = {name: free_udp_port() for name in variants}
    folders = {name: out / name for name in variants}
    with ExitStack() as stack:
        for name, options in variants.items():
            command = ["nfcapd", "-b", "127.0.0.1", "-p", str(ports[name]), "-t", "2", "-B", "16000000", *options]
            for exporter, address in sources.items():
                (folders[name] / exporter).mkdir(parents=True)
                command += ["-n", f"{exporter},{address},{folders[name] / exporter}"]
            stack.enter_context(running(command, out / f"nfcapd-{name}.log"))
        # Each day in files of its own: nfcapd rotates every 2 s.
        replay_week(landing, list(ports.values()), lambda: time.sleep(2.5))
    for folder in folders.values():
        for exporter in sources:
            rename_into_tree(folder / exporter)
    return folders


def rename_into_tree(folder: Path, zone: str = "Asia/Tokyo") -> None:
    """nfcapd's files in `folder` moved to `YYYY/MM/DD/nfcapd.YYYYMMDDhhmmss` after the latest
    flow each holds (local time in `zone`); files without flows are removed."""
    from transforms.decode.nfcapd import decode_nfcapd

    taken: set[str] = set()
    for path in sorted(folder.glob("nfcapd.*")):
        flows = decode_nfcapd(path.read_bytes(), "replay", str(path)).flows
        if flows.is_empty():
            path.unlink()
            continue
        latest = flows["first_ts"].max()
        assert isinstance(latest, dt.datetime)
        local = latest.astimezone(ZoneInfo(zone)).replace(microsecond=0)
        while local.strftime("%Y%m%d%H%M%S") in taken:  # two files of one second keep both
            local += dt.timedelta(seconds=1)
        taken.add(local.strftime("%Y%m%d%H%M%S"))
        target = folder / local.strftime("%Y/%m/%d") / f"nfcapd.{local:%Y%m%d%H%M%S}"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)


def landing_with_flows(generated: Path, flows: Path, target: Path) -> Path:
    """A landing zone with the generated week's RADIUS and directory and `flows` as its flow folders."""
    target.mkdir(parents=True)
    for name in ("radius", "directory"):
        (target / name).symlink_to(generated / name)
    (target / "flows").symlink_to(flows)
    return target


def records_of(folder: Path) -> pl.DataFrame:
    """Every nfcapd file's flows under `folder`, decoded by the project."""
    from transforms.decode.nfcapd import decode_nfcapd

    frames = [decode_nfcapd(p.read_bytes(), "x", str(p)).flows for p in sorted(folder.rglob("nfcapd.*"))]
    return pl.concat(frames)
