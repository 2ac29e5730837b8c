"""CPU-bound steps in a child process of their own, so that a week's exporters decode on every core.

Prefect runs a flow's tasks in threads of one process, which share one interpreter lock; a decoder
spends part of its time in Python (message walks, template sets), so threads alone keep a second
core idle. The child is started fresh ("spawn": no copy of the parent's threads or locks), reports
progress back to the parent's listeners, dies with its parent, and hands back the result or the
exception.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import queue
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from flows import progress

T = TypeVar("T")


class ChildProcessDied(RuntimeError):
    """The child process ended without a result (killed, or out of memory)."""


def _child(channel: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # Ctrl-C in the terminal reaches the whole foreground group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def forward(stage: str, key: str, done: int, total: int) -> None:
        channel.put(("progress", (stage, key, done, total)))

    try:
        with progress.listening(forward):
            value = function(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        channel.put(("error", _picklable(exc)))
    else:
        channel.put(("result", value))


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else one of its type name only (its message
    may quote input data, so it is not carried over as text)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a stand-in
        return RuntimeError(f"{type(exc).__name__} in a child process (not transferable)")
    return exc


def run_in_process(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a fresh child process; its progress reports reach this process's
    listeners; its exception is raised here; the child is ended if this call is interrupted."""
    context = mp.get_context("spawn")
    channel = context.Queue()
    child = context.Process(target=_child, args=(channel, function, args), daemon=True)
    child.start()
    finished = False
    try:
        while True:
            try:
                kind, payload = channel.get(timeout=0.5)
            except queue.Empty:
                if not child.is_alive():
                    raise ChildProcessDied(
                        f"{getattr(function, '__name__', 'step')} ended without a result "
                        f"(exit code {child.exitcode}; killed, or out of memory?)"
                    ) from None
                continue
            if kind == "progress":
                progress.report(*payload)
                continue
            finished = True
            if kind == "error":
                raise payload
            return payload  # type: ignore[no-any-return]
    finally:
        if finished:
            child.join(timeout=10)
        if child.is_alive():
            child.terminate()
            child.join(timeout=5)
        channel.close()


def processes_allowed() -> bool:
    """False inside a daemonic process (a Dask worker, a pool worker), which may not have children."""
    return not mp.current_process().daemon
