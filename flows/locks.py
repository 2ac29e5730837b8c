"""One run per week (or month) at a time.

Two locks, both held for the whole run:
- a file lock (`flock`) in `<state>/locks/<period>.lock`: the kernel releases it when the process
  ends, however it ends (SIGKILL, OOM), so a killed run never keeps its week on this machine (or on
  a shared state folder). The file names the holder (host, pid, since, command) for `status`.
- with a persistent Prefect server ($PREFECT_API_URL), a Prefect global concurrency limit of one
  slot per period, so runs started on other machines against the same API exclude each other too.
  A run killed outright keeps that slot until its lease expires (LEASE_SECONDS after its last
  renewal); a server restarted meanwhile forgets the lease and the slot stays taken:
  `trafficreport release --week W` frees it. The temporary server a command starts for itself
  keeps leases in its memory only, so it is not used for this: the file lock is enough there.
The manifest's conditional swap still guards the warehouse itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flows import prefect_api
from flows.failures import WeekBusy as WeekBusy  # raised here; defined with the other errors

LEASE_SECONDS = 300.0
LIMIT_PREFIX = "trafficreport-"


def week_limit_name(period: dt.date | str) -> str:
    return f"{LIMIT_PREFIX}{period}"


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "unknown holder"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"


@contextlib.contextmanager
def _file_lock(path: Path, period: dt.date | str, timeout_seconds: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WeekBusy(
                        f"{period} is being run by another run ({_holder_text(path)}; lock {path})"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200],
        }
        handle.write(json.dumps(holder))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


@contextlib.contextmanager
def _prefect_slot(period: dt.date | str, timeout_seconds: float) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    name = week_limit_name(period)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=timeout_seconds, lease_duration=LEASE_SECONDS, strict=True)
            )
        except TimeoutError as exc:
            raise WeekBusy(
                f"{period} is being run by another run (Prefect concurrency limit {name!r}; a run that was "
                f"killed holds it until its lease expires, {LEASE_SECONDS:.0f} s after it last renewed it; "
                f"`trafficreport release --week {period}` frees a slot whose holder is gone)"
            ) from exc
        yield


def uses_prefect_slots() -> bool:
    """Prefect slots only with a configured server, which outlives this process (see the module's
    docstring); never with a temporary one, Prefect's own ephemeral server included."""
    return prefect_api.configured_api_url() is not None


@contextlib.contextmanager
def one_run_at_a_time(
    period: dt.date | str, enabled: bool = True, lock_dir: Path | None = None, timeout_seconds: float = 10.0
) -> Iterator[None]:
    """Holds the period's file lock (in `lock_dir`, when given) and, with a persistent Prefect server,
    its global concurrency slot, for the block; WeekBusy if another run keeps either longer than
    `timeout_seconds`. `enabled=False` takes neither."""
    if not enabled:
        yield
        return
    with contextlib.ExitStack() as stack:
        if lock_dir is not None:
            stack.enter_context(_file_lock(lock_dir / f"{period}.lock", period, timeout_seconds))
        if uses_prefect_slots():
            stack.enter_context(_prefect_slot(period, timeout_seconds))
        yield


@dataclass(frozen=True)
class HeldPeriod:
    """A week or month a run holds right now: by a file lock here or a Prefect slot."""

    period: str
    kind: str
    holder: str


def held_locks(lock_dir: Path) -> list[HeldPeriod]:
    """The file locks under `lock_dir` held right now."""
    rows = []
    for path in sorted(lock_dir.glob("*.lock")) if lock_dir.is_dir() else []:
        try:
            handle = open(path)  # noqa: SIM115 - read-only is enough for flock: another account can look too
        except OSError:
            rows.append(HeldPeriod(path.stem, "file lock", "unknown (cannot open the lock)"))
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                rows.append(HeldPeriod(path.stem, "file lock", _holder_text(path)))
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return rows


def held_prefect_slots() -> list[HeldPeriod]:
    """This project's Prefect concurrency limits with a slot taken."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limits = client.read_global_concurrency_limits(limit=200)
    return [
        HeldPeriod(limit.name[len(LIMIT_PREFIX) :], "Prefect slot", f"{limit.active_slots} active")
        for limit in limits
        if limit.name.startswith(LIMIT_PREFIX) and limit.active_slots > 0
    ]


def release_prefect_slot(period: str) -> int:
    """Frees the period's Prefect slot (for a holder that is gone); returns the slots it held."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    name = week_limit_name(period)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except Exception as exc:  # prefect raises ObjectNotFound; nothing to free then
            if type(exc).__name__ == "ObjectNotFound":
                return 0
            raise
        held = int(limit.active_slots)
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    return held
