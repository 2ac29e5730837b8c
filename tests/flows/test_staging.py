"""Staging that outlives nobody: a task's local scratch left by a killed process is removed by the
next one, and run folders in object storage are judged by their heartbeat, by the store's clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs

from flows import staging, storage

SCRATCH_HOLDER = """
import sys, time
from flows.staging import task_scratch
with task_scratch() as folder:
    (folder / "part-00000.parquet").write_bytes(b"x" * 1024)
    print(folder, flush=True)
    time.sleep(120)
"""


def test_the_scratch_of_a_killed_process_is_removed_by_the_next_process(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed = subprocess.Popen([sys.executable, "-c", SCRATCH_HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    alive = subprocess.Popen([sys.executable, "-c", SCRATCH_HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout is not None and alive.stdout is not None
        killed_folder = Path(killed.stdout.readline().strip())
        alive_folder = Path(alive.stdout.readline().strip())
        assert (killed_folder / "part-00000.parquet").exists() and (alive_folder / "part-00000.parquet").exists()
        killed.send_signal(signal.SIGKILL)  # no cleanup: its scratch stays behind
        killed.wait()
        assert killed_folder.exists()
        subprocess.run(
            [sys.executable, "-c", "from flows.staging import task_scratch\nwith task_scratch(): pass"],
            env=env,
            check=True,
            timeout=60,
        )
        assert not killed_folder.parent.exists()  # the dead process's scratch, whole
        assert (alive_folder / "part-00000.parquet").exists()  # a live process's is left alone
    finally:
        for process in (killed, alive):
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


def test_remote_run_folders_are_removed_only_when_their_heartbeat_is_stale(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = s3fs.S3FileSystem()
    fs.mkdir("staging-heartbeats")
    root = storage.storage_path("s3://staging-heartbeats/staging")
    live, kept, killed = "20261207T010000Z-aaaaaa", "20261207T010000Z-bbbbbb", "20261207T010000Z-cccccc"
    storage.write_bytes(root / "notes" / "keep.txt", b"not a run")
    with staging.run_folder(root, live) as folder:
        storage.write_bytes(folder / "flows" / "part-00000.parquet", b"x")
        with staging.run_folder(root, kept, keep=True):
            pass
        storage.write_bytes(root / killed / staging.RUNNING, str(time.time()).encode())
        storage.write_bytes(root / killed / "flows" / "part-00000.parquet", b"x")
        # Every heartbeat is fresh by the store's clock: nothing is removed.
        assert staging.remove_stale_runs(root) == []
        # A writer whose clock is a day ahead changes nothing: the store's times are compared.
        storage.write_bytes(root / killed / staging.RUNNING, str(time.time() + 86_400).encode())
        assert staging.remove_stale_runs(root) == []
        monkeypatch.setattr(staging, "STALE_SECONDS", -1.0)  # every heartbeat is now too old
        removed = staging.remove_stale_runs(root)
    assert sorted(removed) == sorted([killed, live])
    names = {path.split("/")[2] for path in fs.find("staging-heartbeats/staging")}
    assert names == {kept, "notes", ".clock"}
