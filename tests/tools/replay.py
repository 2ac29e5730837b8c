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

BATCH = 32  # datagrams sent before the collectors' sockets are looked at again
# Bytes a collector's socket may hold before more is sent: well below Linux's default receive
# buffer (rmem_default 208 KiB), so a busy machine slows the replay instead of dropping datagrams.
QUEUE_LIMIT = 32 * 1024


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


def socket_queue(port: int) -> tuple[int, int]:
    """(bytes waiting, datagrams dropped) of the UDP socket bound to 127.0.0.1:`port` (/proc/net/udp)."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16), int(fields[-1])
    raise RuntimeError(f"no UDP socket on 127.0.0.1:{port}")


def drain(ports: list[int], below: int, deadline: float) -> None:
    """Waits until every port's socket holds fewer than `below` bytes."""
    while any(socket_queue(port)[0] >= below for port in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("a collector does not read its socket")
        time.sleep(0.001)


def replay_week(landing: Path, ports: list[int], between_days: Callable[[], None]) -> None:
    """Sends the week's IPFIX to every port on 127.0.0.1, day by day, calling `between_days`
    after each day; fails if a collector's socket dropped a datagram."""
    deadline = time.monotonic() + 600
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
                    if index % BATCH == 0:
                        drain(ports, QUEUE_LIMIT, deadline)
                    for port in ports:
                        sock.sendto(message, ("127.0.0.1", port))
            drain(ports, 1, deadline)
            between_days()
    dropped = {port: socket_queue(port)[1] for port in ports}
    assert not any(dropped.values()), f"collectors' sockets dropped datagrams: {dropped}"


@contextmanager
def running(
    command: list[str], log: Path, port: int, stop: signal.Signals = signal.SIGTERM, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A collector process for the block, once its socket on `port` is open; stopped with `stop`
    (nfcapd writes its last file on SIGTERM; nfacctd purges its caches on SIGINT only)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text(errors="replace")
                try:
                    socket_queue(port)
                    break
                except RuntimeError:
                    assert time.monotonic() < deadline, f"{command[0]} did not open 127.0.0.1:{port}"
                    time.sleep(0.05)
            time.sleep(0.5)
            yield proc
        finally:
            proc.send_signal(stop)
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
            stack.enter_context(running(command, out / f"nfcapd-{name}.log", ports[name]))
        # Each day in files of its own: nfcapd rotates every 2 s.
        replay_week(landing, list(ports.values()), lambda: time.sleep(2.5))
    for folder in folders.values():
        for exporter in sources:
            rename_into_tree(folder / exporter)
    return folders


NFACCTD_CONFIG = """daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: {port}
nfacctd_renormalize: {renormalize}
logfile: {out}/nfacctd.log
plugins: print[csv]
aggregate: src_host, dst_host, src_port, dst_port, proto, timestamp_start, timestamp_end, sampling_rate, peer_src_ip
print_output[csv]: csv
print_output_file[csv]: {out}/$peer_src_ip/nfacctd-%Y%m%d-%H%M.csv
print_output_file_append: true
print_refresh_time: 2
print_history: 1h
print_history_roundoff: h
"""


def collect_with_nfacctd(landing: Path, out: Path, renormalize: bool, zone: str = "Asia/Tokyo") -> Path:
    """The week replayed to nfacctd (pmacct) with a CSV print plugin writing hourly files per
    exporter address (`<out>/127_0_0_2/nfacctd-YYYYmmdd-HHMM.csv`, times local in `zone`), counts
    renormalised or not. Returns a folder of exporter-named links to those folders."""
    import os

    port = free_udp_port()
    out.mkdir(parents=True)
    config = out / "nfacctd.conf"
    config.write_text(NFACCTD_CONFIG.format(port=port, renormalize=str(renormalize).lower(), out=out))
    env = {**os.environ, "TZ": zone}
    with running(["nfacctd", "-f", str(config)], out / "nfacctd.out", port, signal.SIGINT, env):
        replay_week(landing, [port], lambda: None)
        time.sleep(3)  # nfacctd's core hands the last datagrams to its plugin
    wait_for_purges(out / "nfacctd.log", deadline=time.monotonic() + 300)
    by_name = out / "by-exporter"
    by_name.mkdir()
    for exporter, address in exporter_sources(landing).items():
        (by_name / exporter).symlink_to(out / address.replace(".", "_"))
    return by_name


def wait_for_purges(log: Path, deadline: float) -> None:
    """Waits until every cache purge nfacctd's print plugin started has ended: each purge is a
    forked writer that outlives the daemon (one took 35 s on a loaded machine)."""
    while True:
        text = log.read_text(errors="replace")
        if text.count("Purging cache - START") == text.count("Purging cache - END"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nfacctd's print plugin is still writing after 5 minutes: {log}")
        time.sleep(0.2)


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
