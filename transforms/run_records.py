"""Typed records that cross module boundaries: task results, audit checks and run summaries.

Each is a frozen dataclass, so a renamed field fails in mypy and at the call, not silently in a
dictionary lookup. `as_json_dict` gives the JSON form that summaries, artifacts and the manifest
store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def as_json_dict(record: Any) -> dict[str, Any]:
    """A record (and the records inside it) as plain JSON-ready dicts, lists and values."""
    return _plain(dataclasses.asdict(record))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class SamplingSource:
    """Flow records of one exporter whose 1-in-N rate came from one source (announced, default...)."""

    source: str
    rate: int
    records: int


@dataclass(frozen=True)
class ExporterSummary:
    """What one exporter delivered for the week: staged parts, counts, and what was set aside."""

    exporter: str
    service: str
    parts: tuple[str, ...]
    files: int
    formats: dict[str, int]
    records: int
    messages: int
    lost_records: int
    lost_datagrams: int
    outside_window: int
    duplicate_files: int
    input_bytes: int
    unreadable_input_bytes: int
    quarantined_records: int
    quarantined_bytes: int
    # The first problems as "source: position: reason" (the full list is in the quarantine).
    problems: tuple[str, ...]
    sampling: tuple[SamplingSource, ...]
    raw_bytes: int
    records_per_day: dict[str, int]
    unrated_records: int
    # Records in each of `parts` (attribution tasks are cut by them).
    part_records: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExporterIngestResult:
    """The ingest task's result: the exporter's summary and the identities of the files it read."""

    summary: ExporterSummary
    digests: tuple[tuple[str, str], ...] = ()
    record_sets: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class AccountingSummary:
    """What RADIUS accounting and the directory gave for the week."""

    accounting_records: int
    sessions: int
    assignments: int
    address_conflicts: int
    unknown_identities: int
    users: int
    sessions_closed_by_nas_reset: int
    sessions_without_stop: int
    quarantined_records: int
    # A file read not at all (or cut short) holds an unknown number of records: the audit fails.
    unreadable_files: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ReconciliationSummary:
    """Flow-estimated vs RADIUS-counted volume of the week's broadband users."""

    users_compared: int
    users_outside_tolerance: int
    median_error_in: float | None
    median_error_out: float | None


@dataclass(frozen=True)
class WeekIngest:
    """Everything the audit's run-level gates read about a week's inputs."""

    exporters: tuple[ExporterSummary, ...]
    radius: AccountingSummary
    reconciliation: ReconciliationSummary | None = None
    # One line per file delivered by two exporters (its traffic would count twice).
    duplicate_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditCheck:
    """One checkpoint result: which table (or "run", "drift", "reconciliation"), what, pass or fail."""

    table: str
    check: str
    success: bool
    detail: str = ""

    def describe(self) -> str:
        """ "table: check (observed detail)", as failures are listed."""
        return f"{self.table}: {self.check} (observed {self.detail})"


@dataclass(frozen=True)
class AuditResult:
    """Every check of a run; success only when each passed."""

    checks: tuple[AuditCheck, ...]

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.describe() for c in self.checks if not c.success]


@dataclass(frozen=True)
class StageTiming:
    """One stage of a run: rows and bytes through it, seconds in it."""

    stage: str
    rows: int | None
    bytes: int | None
    seconds: float


@dataclass(frozen=True)
class TaskTransfer:
    """Bytes of a task's pickled arguments and result (what crosses to a Dask worker and back)."""

    task: str
    key: str
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class AttributionPartials:
    """Where one exporter's partial aggregates were staged (one parquet file each)."""

    user_day: str
    port: str
    hour: str
    port_bucket: str


@dataclass
class WeekRun:
    """The summary of one weekly run, as the flow returns it and the run's summary page shows it."""

    run_id: str
    week: str
    published: bool = False
    skipped: bool = False
    audit_passed: bool = False
    accepted_failed_audit: bool = False
    audit: AuditResult | None = None
    ingest: WeekIngest | None = None
    seconds: float = 0.0
    stages: list[StageTiming] = field(default_factory=list)
    transfers: list[TaskTransfer] = field(default_factory=list)
    removed_runs: list[str] = field(default_factory=list)
    report: str | None = None
    # Why the report could not be rendered after the week was published (the run still succeeded).
    report_error: str | None = None
    data_docs: str | None = None


@dataclass
class MonthRun:
    """The summary of one monthly counters run."""

    run_id: str
    month: str
    published: bool = False
    skipped: bool = False
    files: int = 0
    polls: int = 0
    quarantined_polls: int = 0
    unknown_interfaces: int = 0
    counter_resets: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class PublicationRecord:
    """What the manifest records about the run that published a partition."""

    audit_passed: bool
    replaced_run: str | None
    accepted_failed_audit: bool = False
    failed_checks: tuple[str, ...] = ()
    polls: int | None = None


@dataclass(frozen=True)
class AuditLimits:
    """The audit's thresholds (from the settings of the run)."""

    max_quarantined_share: float
    max_unattributed_share: float
    max_user_change: float
    max_mean_change: float
    max_port_share_change: float
    max_unreconciled_share: float


@dataclass(frozen=True)
class PeriodOutcome:
    """What a backfill did with one week or month: published, skipped (why) or failed (why)."""

    kind: str
    period: str
    status: str
    run_id: str = ""
    why: str = ""
    seconds: float = 0.0
