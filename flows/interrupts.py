"""Ctrl-C (SIGINT) and SIGTERM stop a run before publication, or let it finish once published.

Libraries on the way (Prefect's engine, Great Expectations, thread pools) may catch the
KeyboardInterrupt a signal raises, so a signal is also remembered here, and the weekly flow
checks it between stages: an interrupt seen before the manifest swap ends the run with
`Interrupted` and nothing published. After the swap the run is published whatever happens, so
signals are deferred while it builds the catalog and the report, and it then ends saying so.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from flows.failures import Interrupted

_requested = threading.Event()
_deferred = threading.Event()
_signal_name: list[str] = []


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    first = not _requested.is_set()
    _requested.set()
    _signal_name.append(signal.Signals(signum).name)
    if first and not _deferred.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM handled here (in the main thread) for the block; the previous handlers after."""
    _requested.clear()
    _signal_name.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requested() -> bool:
    return _requested.is_set()


def check(before: str) -> None:
    """Raises Interrupted if a signal came in (named in the message): nothing after `before` runs."""
    if _requested.is_set():
        name = _signal_name[0] if _signal_name else "an interrupt"
        raise Interrupted(f"interrupted ({name}) before {before}: nothing was published")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Signals only mark the run as interrupted inside this block; it runs to its end."""
    _deferred.set()
    try:
        yield
    finally:
        _deferred.clear()
