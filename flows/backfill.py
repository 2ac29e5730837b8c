"""Backfill: every week (and every month of interface counters) in a range, with bounded
concurrency, skipping what is published (so a second call after Ctrl-C or a crash finishes only
what is missing) and what has nothing landed; one result per week or month, with why."""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext

from flows import landing, monthly, publish, report
from flows.flow_files import flow_files_of_days
from flows.settings import Settings, load_settings
from transforms.run_records import MonthRun, PeriodOutcome, WeekRun


def weeks_in(start: dt.date, end: dt.date) -> list[dt.date]:
    """Mondays of the Monday-Sunday weeks lying wholly in [start, end]."""
    monday = start + dt.timedelta(days=(7 - start.weekday()) % 7)
    weeks = []
    while monday + dt.timedelta(days=6) <= end:
        weeks.append(monday)
        monday += dt.timedelta(days=7)
    return weeks


def months_in(start: dt.date, end: dt.date) -> list[str]:
    """ "YYYY-MM" of the months lying wholly in [start, end]."""
    first = start if start.day == 1 else (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    after = end + dt.timedelta(days=1)
    last = (after.replace(day=1) - dt.timedelta(days=1)) if after.day != 1 else end
    if first > last:
        return []
    return monthly.months_between(f"{first:%Y-%m}", f"{last:%Y-%m}")


@contextmanager
def _noticing_interrupts() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) while inside, the usual KeyboardInterrupt still raised. Libraries
    turn an interrupt that lands in them into their own errors (DuckDB: "Query interrupted"); the
    event tells the backfill it was the operator, so it stops instead of going on to the next week."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signals only reach the main thread; a deployment run is cancelled instead
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, a background job): keep it so
        yield interrupted
        return

    def notice(signum: int, frame: Any) -> None:
        interrupted.set()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, notice)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _week_landed(settings: Settings, week: dt.date) -> bool:
    days = [week + dt.timedelta(days=i) for i in range(7)]
    return any(
        flow_files_of_days(settings.landing / "flows" / e, days, settings.timezone, settings.nfdump_timezone)
        for e in landing.list_exporters(settings.landing)
    )


def _month_landed(settings: Settings, month: str) -> bool:
    return monthly.counter_files(settings.landing, month)[1]


def run_backfill(
    start: dt.date,
    end: dt.date,
    settings: Settings,
    force: bool = False,
    concurrency: int = 2,
    on_result: Callable[[PeriodOutcome], None] | None = None,
    weeks: list[dt.date] | None = None,
) -> list[PeriodOutcome]:
    """One outcome for every week (or only `weeks`) and counter
    month in the range: published, skipped (already published / nothing landed) or failed (why)."""
    from flows.weekly import weekly_report_runner

    manifest = publish.read_manifest(settings.warehouse)
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    results: list[PeriodOutcome] = []

    def done(row: PeriodOutcome) -> None:
        results.append(row)
        if on_result is not None:
            on_result(row)

    runner = weekly_report_runner(settings)
    candidates: list[tuple[str, str, Callable[[], bool], Callable[[], Any]]] = []
    for w in weeks if weeks is not None else weeks_in(start, end):
        candidates.append(
            ("week", str(w), functools.partial(_week_landed, settings, w), functools.partial(runner, w, settings))
        )
    for m in months_in(start, end):
        month_job = functools.partial(monthly.monthly_traffic_report, m, settings)
        candidates.append(("month", m, functools.partial(_month_landed, settings, m), month_job))
    for kind, period, landed, job in candidates:
        if not force and publish.published_run(manifest, period) is not None:
            done(PeriodOutcome(kind, period, "skipped", why="already published"))
        elif not landed():
            done(PeriodOutcome(kind, period, "skipped", why="nothing landed"))
        else:
            jobs.append((kind, period, job))

    def run(kind: str, period: str, job: Callable[[], WeekRun | MonthRun]) -> PeriodOutcome:
        started = time.monotonic()
        if interrupted.is_set():
            raise KeyboardInterrupt
        try:
            run_id, status, why = job().run_id, "published", ""
        except Exception as exc:  # one bad week must not stop the others; the reason is reported
            if interrupted.is_set():
                raise KeyboardInterrupt from exc
            run_id, status, why = "", "failed", f"{type(exc).__name__}: {str(exc)[:300]}"
        return PeriodOutcome(kind, period, status, run_id, why, round(time.monotonic() - started, 1))

    with _noticing_interrupts() as interrupted:
        if jobs and FlowRunContext.get() is None:
            # Outside a flow run, the first flow run starts Prefect's ephemeral API; two starting it
            # at once collide on its port, so one runs alone first.
            done(run(*jobs.pop(0)))
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            # Each job runs in a copy of this context, so it is a subflow of the calling flow run (if any).
            futures = [
                pool.submit(contextvars.copy_context().run, run, kind, period, job) for kind, period, job in jobs
            ]
            for future in as_completed(futures):
                done(future.result())
    if any(r.status == "published" for r in results):
        # Concurrent runs each rebuilt the catalog; one last build shows every publication.
        publish.build_catalog(settings.warehouse)
        published_weeks = sorted(publish.read_manifest(settings.warehouse)["tables"].get("usage_summary", {}))
        in_range = [w for w in published_weeks if str(start) <= w <= str(end)]
        if in_range:
            latest = dt.date.fromisoformat(in_range[-1])
            report.write_report(settings.warehouse, report.build_report(settings.warehouse, latest))
    return sorted(results, key=lambda r: (r.kind, r.period))


@flow(name="backfill")
def backfill(
    start: dt.date, end: dt.date, settings: Settings | None = None, force: bool = False, concurrency: int = 2
) -> list[PeriodOutcome]:
    """run_backfill as a Prefect flow (for the `backfill` deployment): weeks and counter months in [start, end]."""
    return run_backfill(start, end, settings or load_settings(), force, concurrency)


# More published months than this are one line of the summary (a look-back publishes 66).
MONTHS_LISTED = 6


def format_summary(results: list[PeriodOutcome]) -> str:
    """A plain-text table: counts per status and reason, then every week run (published or failed,
    with why) and every failed month; skipped ones are only counted, and published months are
    listed one by one only when few (else one line: their range and seconds)."""
    counts: dict[str, int] = {}
    for r in results:
        label = r.status + (f" ({r.why})" if r.status == "skipped" else "")
        counts[label] = counts.get(label, 0) + 1
    lines = ["  ".join(f"{label}: {n}" for label, n in sorted(counts.items()))]
    ran = [r for r in results if r.status != "skipped"]
    months = [r for r in ran if r.kind == "month" and r.status == "published"]
    folded = len(months) > MONTHS_LISTED
    if ran:
        lines.append(f"{'kind':5}  {'period':10}  {'status':9}  {'seconds':>7}  run / why")
    for r in ran:
        if not (folded and r in months):
            lines.append(f"{r.kind:5}  {r.period:10}  {r.status:9}  {r.seconds:>7.1f}  {r.run_id or r.why}")
    if folded:
        seconds = sorted(r.seconds for r in months)
        lines.append(
            f"month  {months[0].period} .. {months[-1].period}: {len(months)} published, "
            f"{seconds[0]:.1f}-{seconds[-1]:.1f} s each (`trafficreport status` lists their runs)"
        )
    return "\n".join(lines)
