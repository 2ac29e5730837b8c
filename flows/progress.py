"""Progress of the long stages (ingest per file, attribution per chunk) for whoever watches, such as
the CLI's progress bars; nothing happens when nobody listens (scheduled runs, Dask workers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, str, int, int], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def report(stage: str, key: str, done: int, total: int) -> None:
    """`done` of `total` units of `stage` for `key` (an exporter): files, or flow rows."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(stage, key, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
