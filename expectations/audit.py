"""The audit gate: each published table against its Great Expectations suite, plus run-level checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from transforms.run_records import (
    AuditCheck,
    AuditLimits,
    AuditResult,
    ExporterSummary,
    ReconciliationSummary,
    WeekIngest,
)
from transforms.tables import registry

SUITE_DIR = Path(__file__).resolve().parent


def load_suite_definitions() -> dict[str, dict[str, Any]]:
    """Suite by table name, {"name", "expectations": [{"type", "kwargs"}]}: the table's shape from
    its declaration (transforms/tables/registry.py), then the value checks of `<table>.json`."""
    suites = {}
    for path in sorted(SUITE_DIR.glob("*.json")):
        definition = json.loads(path.read_text())
        table = registry.BY_NAME.get(path.stem)
        if table is None:
            raise ValueError(f"{path}: a suite for {path.stem!r}, which is not a declared published table")
        repeated = [e["type"] for e in definition["expectations"] if e["type"] in registry.STRUCTURAL_TYPES]
        if repeated:
            raise ValueError(f"{path}: {repeated[0]} belongs in the table's declaration, not in its suite")
        expectations = registry.structural_expectations(table) + definition["expectations"]
        suites[path.stem] = {"name": path.stem, "expectations": expectations}
    return suites


def _as_pandas(frame: pl.DataFrame) -> Any:
    """The frame for GX's pandas engine, text as `object` columns: GX 1.24's type check does not
    recognise pandas 3's default `str` dtype."""
    table = frame.to_pandas()
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            table[name] = table[name].astype(object)
    return table


def validate_tables(tables: dict[str, pl.DataFrame], docs_dir: Path | None = None) -> list[AuditCheck]:
    """One check row per expectation: table, check, success, detail. A table without a suite fails.
    With `docs_dir`, each table is validated by a GX Checkpoint that renders Data Docs there."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # This module sets its own logger to INFO when imported, so its "Created temporary directory ...
    # for ephemeral docs site" reached the console past the level above.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            "run",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
            },
        )
    source = context.data_sources.add_pandas("warehouse_staging")
    suites = load_suite_definitions()
    checks: list[AuditCheck] = []
    for name, frame in tables.items():
        if name not in suites:
            checks.append(AuditCheck(name, "suite exists", False, "no suite in expectations/"))
            continue
        suite = gx.ExpectationSuite(name=name)
        for definition in suites[name]["expectations"]:
            suite.add_expectation_configuration(ExpectationConfiguration(**definition))
        suite = context.suites.add(suite)
        batch_definition = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
        if docs_dir is None:
            result = batch_definition.get_batch(batch_parameters={"dataframe": _as_pandas(frame)}).validate(suite)
        else:
            validation = context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
            )
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[validation],
                    actions=[UpdateDataDocsAction(name="data_docs", site_names=["run"])],
                )
            )
            outcome = checkpoint.run(batch_parameters={"dataframe": _as_pandas(frame)})
            result = next(iter(outcome.run_results.values()))
        for r in result.results:
            config = r.expectation_config
            if config is None:
                continue
            kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
            detail = {k: r.result.get(k) for k in ("observed_value", "unexpected_count") if r.result.get(k) is not None}
            if r.exception_info and r.exception_info.get("raised_exception"):
                detail["exception"] = str(r.exception_info.get("exception_message"))[:200]
            checks.append(
                AuditCheck(
                    name,
                    f"{config.type} {json.dumps(kwargs, default=str)}",
                    bool(r.success),
                    json.dumps(detail, default=str),
                )
            )
    return checks


def run_checks(
    ingest: WeekIngest, tables: dict[str, pl.DataFrame], max_quarantined_share: float, max_unattributed_share: float
) -> list[AuditCheck]:
    """Run-level gates: set-aside flow volume, unreadable input, set-aside accounting records,
    unattributed volume, and every exporter having decoded something."""
    exporters = ingest.exporters
    raw = sum(e.raw_bytes for e in exporters)
    quarantined = sum(e.quarantined_bytes for e in exporters)
    share_flows = quarantined / (raw + quarantined) if raw + quarantined else 0.0
    input_bytes = sum(e.input_bytes for e in exporters)
    unreadable = sum(e.unreadable_input_bytes for e in exporters)
    share_input = unreadable / input_bytes if input_bytes else 0.0
    radius = ingest.radius
    accounting = radius.accounting_records + radius.quarantined_records
    share_radius = radius.quarantined_records / accounting if accounting else 0.0
    hours = tables["traffic_hour"]
    total = float(
        hours.select(pl.col("in_bytes") + pl.col("out_bytes") + pl.col("unattributed_bytes")).sum().item() or 0
    )
    unattributed = float(hours["unattributed_bytes"].sum() or 0)
    share_u = unattributed / total if total else 1.0
    empty = [e.exporter for e in exporters if e.records == 0]
    silent_days = [
        f"{e.exporter} {day}" for e in exporters for day, records in e.records_per_day.items() if not records
    ]
    unrated = sum(e.unrated_records for e in exporters)

    def gate(check: str, value: float, limit: float) -> AuditCheck:
        return AuditCheck("run", f"{check} <= {limit}", value <= limit, f"{value:.6f}")

    return [
        gate("share of flow bytes set aside (no sampling rate, unreadable fields)", share_flows, max_quarantined_share),
        gate("share of flow input bytes that could not be decoded", share_input, max_quarantined_share),
        gate("share of accounting records set aside", share_radius, max_quarantined_share),
        gate("unattributed share of bytes", share_u, max_unattributed_share),
        AuditCheck("run", "every exporter delivered flows", not empty, json.dumps(empty)),
        AuditCheck(
            "run",
            "every accounting file could be read",
            not radius.unreadable_files,
            f"{radius.unreadable_files} files unreadable or cut short",
        ),
        AuditCheck(
            "run",
            "no input delivered by two exporters (same file content or the same flow records)",
            not ingest.duplicate_inputs,
            json.dumps(list(ingest.duplicate_inputs[:10])),
        ),
        AuditCheck(
            "run", "every exporter has flows on every day of the week", not silent_days, json.dumps(silent_days)
        ),
        # Flows without a rate are set aside (counted above); none of them reaches a table.
        AuditCheck(
            "run",
            "sampling rate known for every published flow",
            all(e.sampling for e in exporters if e.records),
            f"{unrated} flows without a rate set aside",
        ),
    ]


def inferred_rate_note(exporters: tuple[ExporterSummary, ...]) -> str:
    """What the reconciliation must say when some sample counts rest on a rate inferred from a
    collector's scaled counts (the greatest rate they allow: the tolerance is then conservative)."""
    inferred = [
        f"{e.exporter} ({s.records:,} records, 1 in {s.rate})"
        for e in exporters
        for s in e.sampling
        if s.source.endswith(":inferred")
    ]
    if not inferred:
        return ""
    return (
        "; the collector did not state the sampling rate of "
        + ", ".join(inferred)
        + ": inferred from the counts as the largest rate they allow, so those users' tolerance is at least "
        "as wide as the true one (set collector_sampling to state it)"
    )


def reconciliation_checks(
    reconciliation: ReconciliationSummary | None, max_unreconciled_share: float, note: str = ""
) -> list[AuditCheck]:
    """Flows vs RADIUS octet counters: the share of compared broadband users whose flow estimate
    falls outside its tolerance, with `note` (how the tolerance was built, where it matters). No
    user to compare: reported, not failed."""
    if reconciliation is None:
        return []
    compared = reconciliation.users_compared
    outside = reconciliation.users_outside_tolerance
    share = outside / compared if compared else 0.0
    return [
        AuditCheck(
            "reconciliation",
            f"share of broadband users whose flow volume is outside tolerance of RADIUS counters "
            f"<= {max_unreconciled_share}",
            share <= max_unreconciled_share,
            f"{outside} of {compared} users compared"
            + (
                f" (median relative error in {reconciliation.median_error_in or 0.0:.4f}, "
                f"out {reconciliation.median_error_out or 0.0:.4f})"
                if compared
                else " (no broadband user with accounting counters)"
            )
            + note,
        )
    ]


def drift_checks(
    tables: dict[str, pl.DataFrame],
    previous: dict[str, pl.DataFrame] | None,
    max_user_change: float,
    max_mean_change: float,
    max_port_share_change: float,
) -> list[AuditCheck]:
    """This week against the previously published one: users and mean usage per (service,
    direction) within a relative change, port shares within a change in points. A sudden halving
    of users is a broken feed, not a trend. No previous week: nothing to compare, no checks."""
    if previous is None:
        return []
    checks: list[AuditCheck] = []
    week_before = str(previous["usage_summary"]["week"][0])
    keys = ["service", "direction"]
    joined = tables["usage_summary"].join(previous["usage_summary"], on=keys, how="full", suffix="_prev")
    for row in joined.iter_rows(named=True):
        where = f"{row['service'] or row['service_prev']} {row['direction'] or row['direction_prev']}"
        for column, limit in (("users", max_user_change), ("mean_mb", max_mean_change)):
            now, before = row[column], row[f"{column}_prev"]
            change = abs(now / before - 1) if now is not None and before else float("inf")
            checks.append(
                AuditCheck(
                    "drift",
                    f"{where} {column}: relative change vs week {week_before} <= {limit}",
                    change <= limit,
                    f"{before} -> {now}",
                )
            )
    shares = tables["port_share"].join(
        previous["port_share"], on=["service", "category"], how="full", suffix="_prev", coalesce=True
    )
    for row in shares.iter_rows(named=True):
        now, before = row["share_pct"] or 0.0, row["share_pct_prev"] or 0.0
        checks.append(
            AuditCheck(
                "drift",
                f"{row['service']} port share {row['category']}: change vs week {week_before} "
                f"<= {max_port_share_change} points",
                abs(now - before) <= max_port_share_change,
                f"{before:.2f} -> {now:.2f}",
            )
        )
    return checks


def audit_week(
    tables: dict[str, pl.DataFrame],
    ingest: WeekIngest,
    limits: AuditLimits,
    previous: dict[str, pl.DataFrame] | None = None,
    docs_dir: Path | None = None,
) -> AuditResult:
    """Every check of the week (table suites, run gates, reconciliation, drift); it succeeds only
    when each passed. With `docs_dir`, GX Data Docs of the table suites are rendered there."""
    checks = (
        validate_tables(tables, docs_dir)
        + run_checks(ingest, tables, limits.max_quarantined_share, limits.max_unattributed_share)
        + reconciliation_checks(
            ingest.reconciliation, limits.max_unreconciled_share, inferred_rate_note(ingest.exporters)
        )
        + drift_checks(tables, previous, limits.max_user_change, limits.max_mean_change, limits.max_port_share_change)
    )
    return AuditResult(tuple(checks))


def counter_checks(
    traffic: pl.DataFrame,
    services: list[str],
    month_ended: bool,
    polls: int,
    quarantined: int,
    unknown_interface_polls: int,
    min_coverage: float,
    max_quarantined_share: float,
) -> list[AuditCheck]:
    """Run-level gates of a month of interface counters: the month is over, every service in the
    inventory is there and covered on every interface, and little was set aside."""
    present = set(traffic["service"].to_list())
    coverage = float(traffic.select(pl.col("coverage").min()).item()) if traffic.height else 0.0
    seen = polls + quarantined + unknown_interface_polls
    share = (quarantined + unknown_interface_polls) / seen if seen else 1.0
    return [
        AuditCheck("run", "the month has ended", month_ended, str(month_ended)),
        AuditCheck(
            "run",
            "every inventory service has traffic",
            set(services) <= present,
            json.dumps(sorted(set(services) - present)),
        ),
        AuditCheck(
            "run",
            f"least-covered interface covers >= {min_coverage} of the month",
            coverage >= min_coverage,
            f"{coverage:.6f}",
        ),
        AuditCheck(
            "run",
            f"share of polls set aside (unreadable, unknown interface) <= {max_quarantined_share}",
            share <= max_quarantined_share,
            f"{share:.6f}",
        ),
    ]
