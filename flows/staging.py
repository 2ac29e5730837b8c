"""A run's staging folder (decoded flows, partial aggregates), and the removal of those whose run is gone.

On a local (or mounted) filesystem each run holds a file lock (`flock`) on `<staging>/<run>/.running`
while it works, which the kernel releases however the run ends. A later run removes every staging
folder whose lock it can take (its run is no longer running), so a killed run's gigabytes of
decoded flows do not stay forever. Folders kept on purpose (`keep_staging`) are marked `.kept`
and left alone.

In object storage (`s3://...`, where Dask workers share nothing else) there is no lock: the run
rewrites `<run>/.running` with the time every HEARTBEAT_SECONDS, and a later run removes the folders
whose heartbeat is older than STALE_SECONDS (a killed run's, at the latest that long after it died).
"""

from __future__ import annotations

import atexit
import calendar
import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows import storage
from flows.storage import AnyPath

RUNNING = ".running"
KEPT = ".kept"
# A folder without a lock file is a run's only between its mkdir and its lock (or one of an older
# version): left alone while younger than this.
UNLOCKED_GRACE_SECONDS = 600.0
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 900.0


# Run ids (flows.weekly.new_run_id): nothing else in a staging folder is ever removed, in case the
# staging setting points at a folder that holds other things too.
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def remove_stale_runs(staging: AnyPath) -> list[str]:
    """Removes the staging folders of runs that are no longer running; returns their names."""
    if not storage.is_local(staging):
        return _remove_stale_remote_runs(staging)
    staging = storage.local_path(staging)
    removed = []
    for folder in sorted(staging.iterdir()) if staging.is_dir() else []:
        if not folder.is_dir() or not RUN_ID.match(folder.name) or (folder / KEPT).exists():
            continue
        if not (folder / RUNNING).exists():
            if time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
            continue
        if _remove_if_unlocked(folder):
            removed.append(folder.name)
    return removed


def _remove_if_unlocked(folder: Path) -> bool:
    """Removes `folder` if the `flock` on its `.running` can be taken (whoever held it is gone)."""
    with open(folder / RUNNING, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its run (or process) is working
        shutil.rmtree(folder, ignore_errors=True)
        return True


def _remove_stale_remote_runs(staging: AnyPath) -> list[str]:
    removed = []
    folders = storage.entries(staging) if staging.exists() else []
    now = None
    for folder in folders:
        if not RUN_ID.match(folder.name) or (folder / KEPT).exists():
            continue
        if now is None:
            now = _store_now(staging)
        try:
            beat = _modified(folder / RUNNING)
        except FileNotFoundError:
            # Between its first file and its heartbeat, or an older version's: judged by the run id's time.
            beat = calendar.timegm(time.strptime(folder.name[:16], "%Y%m%dT%H%M%SZ"))
        if now - beat > STALE_SECONDS:
            storage.remove_tree(folder)
            removed.append(folder.name)
    return removed


def _modified(path: AnyPath) -> float:
    """When the store last wrote `path`, by the store's clock (S3 LastModified)."""
    info = path.fs.info(path.path)  # type: ignore[union-attr]
    moment = info.get("LastModified") or info.get("mtime") or info.get("created")
    if moment is None:
        raise FileNotFoundError(path)
    return moment.timestamp() if hasattr(moment, "timestamp") else float(moment)


def _store_now(staging: AnyPath) -> float:
    """The store's time now: the modification time of a marker written for that. Heartbeats are
    compared with it, never with this machine's clock, which may be off from the writer's."""
    marker = staging / ".clock"
    storage.write_bytes(marker, b"")
    return _modified(marker)


@dataclass
class _Heartbeat:
    path: AnyPath
    stop: threading.Event = field(default_factory=threading.Event)

    def beat(self) -> None:
        storage.write_bytes(self.path, str(time.time()).encode())

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a missed beat is retried; STALE_SECONDS allows many
                self.beat()


@contextlib.contextmanager
def run_folder(staging: AnyPath, run_id: str, keep: bool = False) -> Iterator[AnyPath]:
    """`<staging>/<run_id>`, marked as running for the block, then removed (or marked kept)."""
    if not storage.is_local(staging):
        with _remote_run_folder(staging / run_id, keep) as folder:
            yield folder
        return
    folder = storage.local_path(staging) / run_id
    folder.mkdir(parents=True, exist_ok=False)
    handle = open(folder / RUNNING, "a")  # noqa: SIM115 - held for the whole block
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield folder
    finally:
        if keep:
            (folder / KEPT).touch()
        else:
            shutil.rmtree(folder, ignore_errors=True)
        handle.close()


@contextlib.contextmanager
def _remote_run_folder(folder: AnyPath, keep: bool) -> Iterator[AnyPath]:
    heartbeat = _Heartbeat(folder / RUNNING)
    heartbeat.beat()
    beating = threading.Thread(target=heartbeat.run, name="staging-heartbeat", daemon=True)
    beating.start()
    try:
        yield folder
    finally:
        heartbeat.stop.set()
        beating.join()
        if keep:
            storage.write_bytes(folder / KEPT, b"")
        else:
            storage.remove_tree(folder)


_SCRATCH_ROOT = Path(tempfile.gettempdir()) / "trafficreport-scratch"
_process_scratch: Path | None = None
_process_scratch_lock = threading.Lock()


def _scratch_of_this_process() -> Path:
    """`<tmp>/trafficreport-scratch/<pid>-<random>`, locked (`flock`) for this process's life. Made
    once per process, after removing the folders of processes that died without cleaning up (a
    Dask worker killed mid-task leaves its downloads behind otherwise)."""
    global _process_scratch
    with _process_scratch_lock:
        if _process_scratch is not None and _process_scratch.is_dir():
            return _process_scratch
        _SCRATCH_ROOT.mkdir(parents=True, exist_ok=True)
        for folder in _SCRATCH_ROOT.iterdir():
            if folder.is_dir() and (folder / RUNNING).exists():
                _remove_if_unlocked(folder)
        folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=_SCRATCH_ROOT))
        handle = open(folder / RUNNING, "a")  # noqa: SIM115 - held (by atexit) for the process's life
        fcntl.flock(handle, fcntl.LOCK_EX)
        _process_scratch = folder
        atexit.register(_remove_scratch_of_this_process, folder, handle, os.getpid())
        return folder


def _remove_scratch_of_this_process(folder: Path, handle: Any, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child that inherited the handler
        shutil.rmtree(folder, ignore_errors=True)
    handle.close()


@contextlib.contextmanager
def task_scratch() -> Iterator[Path]:
    """A local folder for one task's downloads and outputs before upload, removed when it ends
    (and by a later process if this one is killed)."""
    with tempfile.TemporaryDirectory(prefix="task-", dir=_scratch_of_this_process()) as folder:
        yield Path(folder)


@dataclass(frozen=True)
class StageLayout:
    """Every file a run stages or sets aside, by what it holds: tasks pass this, never file names.

    `root` is the run's staging folder (`<staging>/<run_id>`, removed when the run ends);
    `quarantine_root` is where the run's set-aside input is described (`<quarantine>/<period>/run=<id>`,
    kept)."""

    root: AnyPath
    quarantine_root: AnyPath
    # The flow process's own local scratch (the audit's Data Docs): `root` itself when that is local.
    local_root: Path

    @classmethod
    def of_run(
        cls, root: AnyPath, quarantine: AnyPath, partition: str, key: str, local_root: Path | None = None
    ) -> StageLayout:
        """The layout of run `root.name` of a week (`partition="week"`) or a month."""
        local = local_root if local_root is not None else storage.local_path(root)
        return cls(root, quarantine / f"{partition}={key}" / f"run={root.name}", local)

    @property
    def run_id(self) -> str:
        return self.root.name

    def exporter_flows(self, exporter: str) -> AnyPath:
        """Folder of one exporter's decoded, sampling-resolved flow parts."""
        return self.root / "flows" / exporter

    @property
    def assignments(self) -> AnyPath:
        """Address assignments of the week's sessions (user_key, address or prefix, valid_from/to)."""
        return self.root / "assignments.parquet"

    @property
    def users(self) -> AnyPath:
        """The week's known users (user_key, service, customer_type)."""
        return self.root / "users.parquet"

    @property
    def billing_user_day(self) -> AnyPath:
        """Mobile usage per phone and day from billing records."""
        return self.root / "billing_user_day.parquet"

    @property
    def radius_user_week(self) -> AnyPath:
        """RADIUS-counted volume per broadband user over the week."""
        return self.root / "radius_user_week.parquet"

    @property
    def reconciliation(self) -> AnyPath:
        """Flows vs RADIUS per broadband user."""
        return self.root / "reconciliation.parquet"

    @property
    def exporter_state(self) -> AnyPath:
        """Exporter states at the end of the run's ingest (flows.flow_ingest), committed once every ingest ended."""
        return self.root / "state"

    def file_groups(self, exporter: str) -> AnyPath:
        """The groups (a day's files each) one exporter's week is decoded in, on a cluster (JSON)."""
        return self.root / "ingest" / f"{exporter}.groups.json"

    def file_group(self, exporter: str, index: int) -> AnyPath:
        """One decoded group: its staged parts, counts and trace (flows.flow_ingest.FileGroup, pickled)."""
        return self.root / "ingest" / f"{exporter}.{index:03d}.pickle"

    @property
    def lookup(self) -> AnyPath:
        """The week's assignment lookup (flows.attribute), built once for every attribution task."""
        return self.root / "assignment_lookup.pickle"

    def partial(self, table: str, exporter: str, task: int = 0) -> AnyPath:
        """Partial aggregate `table` (user_day, port, hour, port_bucket) of one attribution task:
        an exporter's `task`-th group of parts."""
        return self.root / "partials" / f"{table}.{exporter}.{task:05d}.parquet"

    @property
    def data_docs(self) -> Path:
        """Great Expectations Data Docs of the run's audit (local: GX writes files)."""
        return self.local_root / "data_docs"

    def quarantine(self, name: str) -> AnyPath:
        """A file of the run's quarantine (its folder made when local)."""
        if storage.is_local(self.quarantine_root):
            storage.local_path(self.quarantine_root).mkdir(parents=True, exist_ok=True)
        return self.quarantine_root / name
