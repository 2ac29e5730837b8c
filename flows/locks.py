"""One run per week at a time, through a Prefect global concurrency limit of one slot per week, so
runs started anywhere against the same Prefect API (backfills, schedules, operators) never work on
one week at once. The manifest's conditional swap still guards the warehouse itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

LEASE_SECONDS = 300.0


class WeekBusy(RuntimeError):
    """Another run holds the week: this one does not start on it."""


def week_limit_name(period: dt.date | str) -> str:
    return f"trafficreport-{period}"


@contextmanager
def one_run_at_a_time(period: dt.date | str, enabled: bool = True, timeout_seconds: float = 10.0) -> Iterator[None]:
    """Holds the period's (a week's, or a month's) single slot for the block; WeekBusy if another
    run keeps it longer than `timeout_seconds`. A run killed outright (SIGKILL, a lost machine)
    keeps the slot until its lease expires (LEASE_SECONDS); `enabled=False` skips the slot."""
    if not enabled:
        yield
        return
    name = week_limit_name(period)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=timeout_seconds, lease_duration=LEASE_SECONDS, strict=True)
            )
        except TimeoutError as exc:
            raise WeekBusy(
                f"{period} is being run by another run (Prefect concurrency limit {name!r}; a run that was "
                f"killed holds it until its lease expires, {LEASE_SECONDS:.0f} s after it last renewed it)"
            ) from exc
        yield
