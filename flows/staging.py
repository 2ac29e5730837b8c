"""A run's staging folder (decoded flows, partial aggregates), and the removal of those whose run is gone.

Each run holds a file lock (`flock`) on `<staging>/<run>/.running` while it works, which the kernel
releases however the run ends. A later run removes every staging folder whose lock it can take
(its run is no longer running), so a killed run's gigabytes of decoded flows do not stay forever.
Folders kept on purpose (`keep_staging`) are marked `.kept` and left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUNNING = ".running"
KEPT = ".kept"
# A folder without a lock file is a run's only between its mkdir and its lock (or one of an older
# version): left alone while younger than this.
UNLOCKED_GRACE_SECONDS = 600.0


# Run ids (flows.weekly.new_run_id): nothing else in a staging folder is ever removed, in case the
# staging setting points at a folder that holds other things too.
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def remove_stale_runs(staging: Path) -> list[str]:
    """Removes the staging folders of runs that are no longer running; returns their names."""
    removed = []
    for folder in sorted(staging.iterdir()) if staging.is_dir() else []:
        if not folder.is_dir() or not RUN_ID.match(folder.name) or (folder / KEPT).exists():
            continue
        lock = folder / RUNNING
        if not lock.exists():
            if time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
            continue
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is working
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


@contextlib.contextmanager
def run_folder(staging: Path, run_id: str, keep: bool = False) -> Iterator[Path]:
    """`<staging>/<run_id>`, locked as running for the block, then removed (or marked kept)."""
    folder = staging / run_id
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


@dataclass(frozen=True)
class StageLayout:
    """Every file a run stages or sets aside, by what it holds: tasks pass this, never file names.

    `root` is the run's staging folder (`<staging>/<run_id>`, removed when the run ends);
    `quarantine_root` is where the run's set-aside input is described (`<quarantine>/<period>/run=<id>`,
    kept)."""

    root: Path
    quarantine_root: Path

    @classmethod
    def of_run(cls, root: Path, quarantine: Path, partition: str, key: str) -> StageLayout:
        """The layout of run `root.name` of a week (`partition="week"`) or a month."""
        return cls(root, quarantine / f"{partition}={key}" / f"run={root.name}")

    @property
    def run_id(self) -> str:
        return self.root.name

    def exporter_flows(self, exporter: str) -> Path:
        """Folder of one exporter's decoded, sampling-resolved flow parts."""
        return self.root / "flows" / exporter

    @property
    def assignments(self) -> Path:
        """Address assignments of the week's sessions (user_key, address or prefix, valid_from/to)."""
        return self.root / "assignments.parquet"

    @property
    def users(self) -> Path:
        """The week's known users (user_key, service, customer_type)."""
        return self.root / "users.parquet"

    @property
    def billing_user_day(self) -> Path:
        """Mobile usage per phone and day from billing records."""
        return self.root / "billing_user_day.parquet"

    @property
    def radius_user_week(self) -> Path:
        """RADIUS-counted volume per broadband user over the week."""
        return self.root / "radius_user_week.parquet"

    @property
    def reconciliation(self) -> Path:
        """Flows vs RADIUS per broadband user."""
        return self.root / "reconciliation.parquet"

    def partial(self, table: str, exporter: str) -> Path:
        """One exporter's partial aggregate `table` (user_day, port, hour, port_bucket)."""
        return self.root / "partials" / f"{table}.{exporter}.parquet"

    @property
    def data_docs(self) -> Path:
        """Great Expectations Data Docs of the run's audit."""
        return self.root / "data_docs"

    def quarantine(self, name: str) -> Path:
        """A file of the run's quarantine (its folder made)."""
        self.quarantine_root.mkdir(parents=True, exist_ok=True)
        return self.quarantine_root / name
