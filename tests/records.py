"""Ingest summaries for tests, built in one place: a new field of a record is added here only."""

from __future__ import annotations

import dataclasses
from typing import Any

from transforms.run_records import AccountingSummary, ExporterSummary, SamplingSource

_EXPORTER = ExporterSummary(
    exporter="bb-1",
    service="broadband",
    parts=(),
    files=1,
    formats={"ipfix": 1},
    records=1,
    messages=1,
    lost_records=0,
    lost_datagrams=0,
    outside_window=0,
    duplicate_files=0,
    input_bytes=1,
    unreadable_input_bytes=0,
    quarantined_records=0,
    quarantined_bytes=0,
    problems=(),
    sampling=(SamplingSource("options", 1, 1),),
    raw_bytes=1,
    records_per_day={},
    unrated_records=0,
)
_ACCOUNTING = AccountingSummary(
    accounting_records=10_000,
    sessions=100,
    assignments=100,
    address_conflicts=0,
    unknown_identities=0,
    users=50,
    sessions_closed_by_nas_reset=0,
    sessions_without_stop=0,
    quarantined_records=0,
    unreadable_files=0,
    problems=(),
)


def exporter_summary(**changes: Any) -> ExporterSummary:
    """One exporter's summary: a clean one-record week, with `changes` applied."""
    return dataclasses.replace(_EXPORTER, **changes)


def accounting_summary(**changes: Any) -> AccountingSummary:
    """The accounting summary of a clean week, with `changes` applied."""
    return dataclasses.replace(_ACCOUNTING, **changes)
