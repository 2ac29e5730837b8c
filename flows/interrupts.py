"""Ctrl-C (SIGINT) and SIGTERM stop a run before publication, or let it finish once published.

Libraries on the way (Prefect's engine, Great Expectations, thread pools) may catch the
KeyboardInterrupt a signal raises, so a signal is also remembered here, and the weekly flow
checks it between stages: an interrupt seen before the manifest swap ends the run with
`Interrupted` and nothing published. Once a run in the main thread begins to publish, signals no
longer raise: it finishes (files, swap, catalog, report) and the command then says so. Runs in
other threads (a backfill's weeks) are not concerned: there the main thread stops the backfill.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from flows.failures import Interrupted

_requested = threading.Event()
_publication_began = threading.Event()
_signal_name: list[str] = []


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    _requested.set()
    _signal_name.append(signal.Signals(signum).name)
    if not _publication_began.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM handled here (in the main thread) for the block; the previous handlers after."""
    _requested.clear()
    _publication_began.clear()
    _signal_name.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requested() -> bool:
    return _requested.is_set()


def publication_began() -> bool:
    """True once a run in the main thread has started to publish (signals are then only noted)."""
    return _publication_began.is_set()


def check(before: str) -> None:
    """Raises Interrupted if a signal came in (named in the message): nothing after `before` runs."""
    if _requested.is_set():
        name = _signal_name[0] if _signal_name else "an interrupt"
        raise Interrupted(f"interrupted ({name}) before {before}: nothing was published")


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """From here on, signals only mark the (main-thread) run as interrupted: it runs to its end."""
    if threading.current_thread() is threading.main_thread():
        _publication_began.set()
    yield
