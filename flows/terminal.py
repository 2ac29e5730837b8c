"""What a command shows on the terminal while runs work: one rich console, shared by the log
handlers and a live progress display, so that log lines print above the bars and never into them;
and the summary a weekly run ends with."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.theme import Theme

from flows import prefect_api
from flows import progress as hooks
from transforms.run_records import WeekRun

# Prefect logs each task run's end at INFO ("Finished in state Completed()"): a line per exporter
# and stage that says nothing the stage lines and the bars do not. Other states still show.
_TASK_COMPLETED = "Finished in state Completed("


def _handlers() -> list[logging.Handler]:
    """Every handler of every logger of this process, once each."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    found: list[logging.Handler] = []
    for logger in loggers:
        found += [h for h in getattr(logger, "handlers", []) if h not in found]
    return found


def _prefect_console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers (one instance, on the root logger and a few others), if Prefect set
    up its logging in this process."""
    if "prefect.logging.handlers" not in sys.modules:
        return []
    from prefect.logging.handlers import PrefectConsoleHandler

    return [h for h in _handlers() if isinstance(h, PrefectConsoleHandler)]


def _other_terminal_handlers() -> list[logging.StreamHandler[Any]]:
    """Stream handlers (not Prefect's) that write straight to this terminal, e.g. distributed's."""
    from prefect.logging.handlers import PrefectConsoleHandler

    return [
        h
        for h in _handlers()
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, PrefectConsoleHandler)
        and h.stream in (sys.__stderr__, sys.__stdout__)
    ]


def _worth_showing(record: logging.LogRecord) -> bool:
    """False for the console lines that say nothing to whoever watches: a task run completed, and the
    UI address of a flow run on the temporary server, which is gone when the command ends."""
    message = record.getMessage()
    if record.name == "prefect.task_runs" and message.startswith(_TASK_COMPLETED):
        return False
    temporary = prefect_api.temporary_server_url()
    return not (temporary and message.startswith("View at " + temporary.removesuffix("/api")))


@contextlib.contextmanager
def _logs_through(console: Console, level: int | None) -> Iterator[None]:
    """Every console log handler prints through `console` for the block (so above its live display),
    at `level` or above when given; handlers as they were after."""
    prefect_handlers = _prefect_console_handlers()
    others = _other_terminal_handlers() if prefect_handlers else []
    saved: list[tuple[logging.Handler, Any, int]] = []
    for handler in prefect_handlers:
        saved.append((handler, handler.console, handler.level))  # type: ignore[attr-defined]
        handler.console = console  # type: ignore[attr-defined]
        handler.addFilter(_worth_showing)
        if level is not None:
            handler.setLevel(max(level, handler.level))
    # While the display is live, sys.stderr is rich's proxy that prints through the console.
    streams = [(handler, handler.setStream(sys.stderr)) for handler in others]
    try:
        yield
    finally:
        for handler, previous, previous_level in saved:
            handler.console = previous  # type: ignore[attr-defined]
            handler.removeFilter(_worth_showing)
            handler.setLevel(previous_level)
        for stream_handler, stream in streams:
            if stream is not None:
                stream_handler.setStream(stream)


@contextlib.contextmanager
def _shared_console() -> Iterator[Console]:
    """Prefect's console when Prefect logs here (its colours kept; rich's default styles, which the
    bars need and Prefect's theme leaves out, added for the block), else one on stderr."""
    handlers = _prefect_console_handlers()
    if not handlers:
        yield Console(stderr=True)
        return
    console: Console = handlers[0].console  # type: ignore[attr-defined]
    console.push_theme(Theme())
    try:
        yield console
    finally:
        console.pop_theme()


def _bars(console: Console) -> Progress:
    """The live display on `console`; none when that is not a terminal (a log file gets the log
    lines and the summary, not bars redrawn)."""
    return Progress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description:46}"),
        BarColumn(bar_width=40),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]:6}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class StageBars:
    """One bar per stage that reports progress (ingest: files, attribute: flows), summed over the
    week's exporters, so the display keeps its height however many exporters there are. Exporters
    report from their own threads: the lock keeps two of them from each adding the stage's bar."""

    UNITS = {"ingest": "files", "attribute": "flows"}

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, Any] = {}
        self.counts: dict[str, dict[str, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def update(self, stage: str, key: str, done: int, total: int) -> None:
        """A listener of flows.progress: `done` of `total` for exporter `key` in `stage`."""
        with self._lock:
            self._update(stage, key, done, total)

    def _update(self, stage: str, key: str, done: int, total: int) -> None:
        per_key = self.counts.setdefault(stage, {})
        per_key[key] = (done, total)
        finished = sum(1 for d, t in per_key.values() if d >= t)
        description = f"{stage} ({len(per_key)} exporters, {finished} done)"
        all_done = sum(d for d, _ in per_key.values())
        all_total = sum(t for _, t in per_key.values())
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(description, total=all_total, unit=self.UNITS.get(stage, ""))
        self.bars.update(self.tasks[stage], completed=all_done, total=all_total, description=description)


@contextlib.contextmanager
def week_display() -> Iterator[Progress]:
    """A weekly run's live display: its stages' bars, with Prefect's log lines printed above them."""
    with contextlib.ExitStack() as stack:
        console = stack.enter_context(_shared_console())
        bars = stack.enter_context(_bars(console))
        stack.enter_context(_logs_through(console, level=None))
        stack.enter_context(hooks.listening(StageBars(bars).update))
        yield bars


@contextlib.contextmanager
def periods_display(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A backfill's live display: one bar of weeks and months done; the runs' INFO lines (hundreds
    in a look-back) stay in Prefect's database, warnings and errors still print above the bar.
    Yields a function that advances the bar with a status ("published", "skipped", "failed")."""
    counts = {"published": 0, "skipped": 0, "failed": 0}
    with _shared_console() as console, _bars(console) as bars, _logs_through(console, level=logging.WARNING):
        bar = bars.add_task(label, total=total, unit="runs")

        def advance(status: str) -> None:
            counts[status] += 1
            text = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
            bars.update(bar, advance=1, description=f"{label}: {text}")

        yield advance


@contextlib.contextmanager
def steps_display(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A live bar of `total` steps (e.g. weeks to generate); yields a function that marks one done
    and prints its line above the bar."""
    with _shared_console() as console, _bars(console) as bars:
        bar = bars.add_task(label, total=total, unit="")

        def step(line: str) -> None:
            print(line, flush=True)  # stdout: above the bars in a terminal (rich redirects it there)
            bars.update(bar, advance=1)

        yield step


def published_tables(manifest: Mapping[str, Any], run: WeekRun) -> list[tuple[str, int]]:
    """(table, rows) of each table the run published for its week, as the manifest lists them."""
    return [
        (name, int(parts[run.week].get("rows", 0)))
        for name, parts in sorted(manifest["tables"].items())
        if run.week in parts and parts[run.week]["run_id"] == run.run_id
    ]


def run_summary(run: WeekRun, tables: list[tuple[str, int]], report: str, catalog: str) -> str:
    """The lines a weekly run ends with: week and run, audit, tables published, where the report
    and the catalog are, and how long each stage took."""
    if run.skipped:
        return f"week {run.week}: already published, nothing done (--skip-published)"
    if run.audit_passed:
        checks = len(run.audit.checks) if run.audit else 0
        audit = f"passed ({checks} checks)"
    else:
        failed = run.audit.failed if run.audit else []
        audit = f"FAILED ({len(failed)} checks), published anyway (--accept-failed-audit): " + "; ".join(failed[:3])
    names = [f"{name} ({rows:,} rows)" for name, rows in tables]
    stages = [f"{stage.stage} {stage.seconds:.1f} s" for stage in run.stages]
    lines = [
        f"week {run.week} published by run {run.run_id} in {run.seconds:.1f} s",
        f"  audit     {audit}",
        *_wrapped("  tables    ", [f"{len(tables)}: {names[0]}" if names else "0", *names[1:]]),
        f"  report    {report}",
        f"  catalog   {catalog}",
        *_wrapped("  stages    ", stages),
    ]
    return "\n".join(lines)


def _wrapped(label: str, items: list[str], width: int = 110) -> list[str]:
    """`items` joined by commas after `label`, in lines of at most `width` (an item is never cut)."""
    lines = [label]
    for i, item in enumerate(items):
        text = item + ("," if i < len(items) - 1 else "")
        if len(lines[-1]) + len(text) + 1 > width and lines[-1].strip():
            lines.append(" " * len(label))
        lines[-1] += ("" if lines[-1].endswith(" ") else " ") + text
    return lines
