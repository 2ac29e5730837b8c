"""The stage bars are fed from every exporter's thread at once: each stage still gets one bar,
whose counts are the sum over exporters."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import Progress

from flows.terminal import StageBars


class SlowProgress(Progress):
    """A real Progress whose add_task takes a moment, as it does on a loaded machine."""

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return super().add_task(*args, **kwargs)


def test_exporters_reporting_at_once_share_one_bar_per_stage() -> None:
    bars = SlowProgress(console=Console(file=io.StringIO(), force_terminal=False))
    stages = StageBars(bars)
    start = threading.Barrier(6)

    def exporter(key: str) -> None:
        start.wait()
        for done in range(8):
            stages.update("ingest", key, done, 7)

    threads = [threading.Thread(target=exporter, args=(f"exporter-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(bars.tasks) == 1
    (task,) = bars.tasks
    assert (task.completed, task.total) == (42, 42)
    assert task.description == "ingest (6 exporters, 6 done)"
