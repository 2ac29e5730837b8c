"""CPU-bound steps in worker processes, so that a week's exporters decode on every core.

Prefect runs a flow's tasks in threads of one process, which share one interpreter lock; a decoder
spends part of its time in Python (message walks, template sets), so threads alone keep a second
core idle. Steps go to worker processes, at most one per core at a time, started fresh ("spawn":
no copy of the parent's threads or locks) on first use and reused for the life of this process.
Workers die with their parent, send their progress reports to the parent's listeners, and hand
back the result or the exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flows import interrupts, progress
from flows.failures import ChildProcessDied as ChildProcessDied  # raised here; defined with the other errors
from transforms.mapping import Mapper

T = TypeVar("T")

CORES = max(1, len(os.sched_getaffinity(0)))
# Steps that already use two threads each (attribution): one per pair of cores.
_pairs = threading.BoundedSemaphore(max(1, CORES // 2))


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


def _serve(connection: Any) -> None:
    """A worker's life: run each (function, args) it is sent, reporting progress on the way."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # Ctrl-C in the terminal reaches the whole foreground group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def forward(stage: str, key: str, done: int, total: int) -> None:
        connection.send(("progress", (stage, key, done, total)))

    while True:
        try:
            function, args, environment = connection.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        _follow_environment(environment)
        try:
            with progress.listening(forward):
                value = function(*args)
        except Exception as exc:
            connection.send(("error", _picklable(exc)))
            continue
        try:
            connection.send(("result", value))
        except Exception as exc:  # noqa: BLE001 - a result that cannot be pickled
            connection.send(
                ("error", RuntimeError(f"the result of {function.__name__} is not transferable: {type(exc).__name__}"))
            )


def _follow_environment(environment: dict[str, str]) -> None:
    """Makes the worker's environment the parent's as of this call: a worker outlives the call
    that started it, and settings such as S3 endpoints and credentials come from the environment.
    Cached S3 clients made with the old one are dropped."""
    if environment == dict(os.environ):
        return
    os.environ.clear()
    os.environ.update(environment)
    if "s3fs" in sys.modules:
        sys.modules["s3fs"].S3FileSystem.clear_instance_cache()


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else one of its type name only (its message
    may quote input data, so it is not carried over as text)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a stand-in
        return RuntimeError(f"{type(exc).__name__} in a worker process (not transferable)")
    return exc


class _Worker:
    """One worker process and the pipe to it (pipes, not multiprocessing queues: no named
    semaphores, so nothing is left for the resource tracker to warn about when a run is killed)."""

    def __init__(self) -> None:
        context = mp.get_context("spawn")
        self.connection, theirs = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(theirs,), name="trafficreport-worker", daemon=True)
        self.process.start()
        theirs.close()

    def stop(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=5)


_slots = threading.BoundedSemaphore(CORES)
_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def _take_worker() -> _Worker:
    with _idle_lock:
        while _idle:
            worker = _idle.pop()
            if worker.process.is_alive():
                return worker
            worker.stop()
    return _spawned_worker()


# The kernel sends PR_SET_PDEATHSIG when the *thread* that forked the child ends, so workers are
# started by one thread that lives as long as this process: a worker started for one Prefect
# task thread keeps serving after that thread is gone (backfill runs weeks one after another).
_spawn_requests: queue.Queue[tuple[threading.Event, list[Any]]] = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawn_forever() -> None:
    while True:
        done, box = _spawn_requests.get()
        try:
            box.append(_Worker())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that asked
            box.append(exc)
        done.set()


def _spawned_worker() -> _Worker:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_spawn_forever, name="worker-spawner", daemon=True)
            _spawner.start()
    done, box = threading.Event(), list[Any]()
    _spawn_requests.put((done, box))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]  # type: ignore[no-any-return]


def run_in_process(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a worker process (at most one per core at a time; a call waits for a
    free one, and workers are reused from call to call, so a week of 30 exporters starts two
    interpreters, not thirty). Its progress reports reach this process's listeners and its
    exception is raised here. Ctrl-C ends the wait at once and the worker with it."""
    name = getattr(function, "__name__", "a step")
    while not _slots.acquire(timeout=0.5):
        interrupts.check(name)
    worker: _Worker | None = None
    try:
        interrupts.check(name)
        worker = _take_worker()
        worker.connection.send((function, args, dict(os.environ)))
        while True:
            if not worker.connection.poll(0.5):
                interrupts.check(name)
                if not worker.process.is_alive() and not worker.connection.poll(0):
                    raise ChildProcessDied(
                        f"{name} ended without a result (exit code {worker.process.exitcode}: its worker "
                        "process was killed, or ran out of memory)"
                    )
                continue
            try:
                kind, payload = worker.connection.recv()
            except (EOFError, OSError):
                worker.process.join(timeout=5)
                raise ChildProcessDied(
                    f"{name} ended without a result (exit code {worker.process.exitcode}: its worker "
                    "process was killed, or ran out of memory)"
                ) from None
            if kind == "progress":
                progress.report(*payload)
                continue
            with _idle_lock:
                _idle.append(worker)
            worker = None
            if kind == "error":
                raise payload
            return payload  # type: ignore[no-any-return]
    finally:
        if worker is not None:  # interrupted, or the worker died: it is not reused
            worker.stop()
        _slots.release()


def processes_allowed() -> bool:
    """False inside a daemonic process (a Dask worker, a pool worker), which may not have children."""
    return not mp.current_process().daemon


@contextlib.contextmanager
def thread_mapper(workers: int = 2) -> Iterator[Mapper]:
    """A thread pool's `map`, for transforms whose independent pieces let go of the GIL (numpy,
    polars): transforms/ starts no thread itself."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield pool.map
