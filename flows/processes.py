"""CPU-bound steps in worker processes, so that a week's exporters decode on every core.

Prefect runs a flow's tasks in threads of one process, which share one interpreter lock; a decoder
spends part of its time in Python (message walks, template sets), so threads alone keep a second
core idle. Steps go to a pool of one worker process per core, started fresh ("spawn": no copy of
the parent's threads or locks) on first use and kept for the life of this process, so a week of
30 exporters pays the start of two interpreters, not thirty. Workers die with their parent, send
their progress reports to the parent's listeners, and hand back the result or the exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from flows import interrupts, progress

T = TypeVar("T")

CORES = max(1, len(os.sched_getaffinity(0)))
# Steps that already use two threads each (attribution): one per pair of cores.
_pairs = threading.BoundedSemaphore(max(1, CORES // 2))


class ChildProcessDied(RuntimeError):
    """A worker process ended without a result (killed, or out of memory)."""


@contextlib.contextmanager
def two_core_step(name: str) -> Iterator[None]:
    """Runs the block when a pair of cores is free (waiting stops on Ctrl-C): a week of many
    exporters then holds one exporter's working memory per pair of cores, not one per thread."""
    while not _pairs.acquire(timeout=0.5):
        interrupts.check(name)
    try:
        yield
    finally:
        _pairs.release()


# In a worker: where its progress reports go.
_channel: Any = None


def _start_worker(channel: Any) -> None:
    global _channel
    _channel = channel
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # Ctrl-C in the terminal reaches the whole foreground group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _forward(stage: str, key: str, done: int, total: int) -> None:
    _channel.put((stage, key, done, total))


def _call(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        with progress.listening(_forward):
            return function(*args)
    except Exception as exc:
        raise _picklable(exc) from None


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else one of its type name only (its message
    may quote input data, so it is not carried over as text)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a stand-in
        return RuntimeError(f"{type(exc).__name__} in a worker process (not transferable)")
    return exc


class _Pool:
    """The worker processes and the thread that relays their progress reports."""

    def __init__(self) -> None:
        context = mp.get_context("spawn")
        self.channel = context.Queue()
        self.executor = ProcessPoolExecutor(
            CORES, mp_context=context, initializer=_start_worker, initargs=(self.channel,)
        )
        self.relay = threading.Thread(target=self._relay, name="worker-progress", daemon=True)
        self.closed = threading.Event()
        self.relay.start()

    def _relay(self) -> None:
        while not self.closed.is_set():
            try:
                event = self.channel.get(timeout=0.5)
            except (queue.Empty, OSError, EOFError, ValueError):
                continue
            progress.report(*event)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.closed.set()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _current_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool()
        return _pool


def _discard_pool(broken: _Pool) -> None:
    global _pool
    with _pool_lock:
        if _pool is broken:
            _pool = None
    broken.close()


def run_in_process(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a worker process (one per core; a call waits for a free one); its
    progress reports reach this process's listeners and its exception is raised here. On Ctrl-C
    the wait ends at once (the workers die with this process)."""
    name = getattr(function, "__name__", "a step")
    pool = _current_pool()
    try:
        future = pool.executor.submit(_call, function, args)
    except BrokenProcessPool:  # a worker died during an earlier step: start afresh
        _discard_pool(pool)
        pool = _current_pool()
        future = pool.executor.submit(_call, function, args)
    while True:
        interrupts.check(name)
        try:
            return future.result(timeout=0.5)  # type: ignore[no-any-return]
        except TimeoutError:
            continue
        except BrokenProcessPool:
            _discard_pool(pool)
            raise ChildProcessDied(
                f"{name} ended without a result (its worker process was killed, or ran out of memory)"
            ) from None


def processes_allowed() -> bool:
    """False inside a daemonic process (a Dask worker, a pool worker), which may not have children."""
    return not mp.current_process().daemon
