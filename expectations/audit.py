"""The audit gate: each published table against its Great Expectations suite, plus run-level checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

SUITE_DIR = Path(__file__).resolve().parent


def load_suite_definitions() -> dict[str, dict[str, Any]]:
    """Suite JSON by table name: {"name": ..., "expectations": [{"type", "kwargs"}]}."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(SUITE_DIR.glob("*.json"))}


def _as_pandas(frame: pl.DataFrame) -> Any:
    """The frame for GX's pandas engine, text as `object` columns: GX 1.24's type check does not
    recognise pandas 3's default `str` dtype."""
    table = frame.to_pandas()
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            table[name] = table[name].astype(object)
    return table


def validate_tables(tables: dict[str, pl.DataFrame], docs_dir: Path | None = None) -> list[dict[str, Any]]:
    """One check row per expectation: table, check, success, detail. A table without a suite fails.
    With `docs_dir`, each table is validated by a GX Checkpoint that renders Data Docs there."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
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
    checks: list[dict[str, Any]] = []
    for name, frame in tables.items():
        if name not in suites:
            checks.append(
                {"table": name, "check": "suite exists", "success": False, "detail": "no suite in expectations/"}
            )
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
                {
                    "table": name,
                    "check": f"{config.type} {json.dumps(kwargs, default=str)}",
                    "success": bool(r.success),
                    "detail": json.dumps(detail, default=str),
                }
            )
    return checks


def run_checks(
    ingest: dict[str, Any], tables: dict[str, pl.DataFrame], max_quarantined_share: float, max_unattributed_share: float
) -> list[dict[str, Any]]:
    """Run-level gates: set-aside flow volume, unreadable input, set-aside accounting records,
    unattributed volume, and every exporter having decoded something."""
    exporters = ingest["exporters"]
    raw = sum(int(e["raw_bytes"]) for e in exporters)
    quarantined = sum(int(e["quarantined_bytes"]) for e in exporters)
    share_flows = quarantined / (raw + quarantined) if raw + quarantined else 0.0
    input_bytes = sum(int(e["input_bytes"]) for e in exporters)
    unreadable = sum(int(e["unreadable_input_bytes"]) for e in exporters)
    share_input = unreadable / input_bytes if input_bytes else 0.0
    radius = ingest["radius"]
    accounting = int(radius["accounting_records"]) + int(radius["quarantined_records"])
    share_radius = int(radius["quarantined_records"]) / accounting if accounting else 0.0
    hours = tables["traffic_hour"]
    total = float(
        hours.select(pl.col("in_bytes") + pl.col("out_bytes") + pl.col("unattributed_bytes")).sum().item() or 0
    )
    unattributed = float(hours["unattributed_bytes"].sum() or 0)
    share_u = unattributed / total if total else 1.0
    empty = [e["exporter"] for e in exporters if int(e["records"]) == 0]
    silent_days = [
        f"{e['exporter']} {day}"
        for e in exporters
        for day, records in e.get("records_per_day", {}).items()
        if not records
    ]
    unrated = sum(int(e.get("unrated_records", 0)) for e in exporters)

    def gate(check: str, value: float, limit: float) -> dict[str, Any]:
        return {"table": "run", "check": f"{check} <= {limit}", "success": value <= limit, "detail": f"{value:.6f}"}

    return [
        gate("share of flow bytes set aside (no sampling rate, unreadable fields)", share_flows, max_quarantined_share),
        gate("share of flow input bytes that could not be decoded", share_input, max_quarantined_share),
        gate("share of accounting records set aside", share_radius, max_quarantined_share),
        gate("unattributed share of bytes", share_u, max_unattributed_share),
        {"table": "run", "check": "every exporter delivered flows", "success": not empty, "detail": json.dumps(empty)},
        {
            "table": "run",
            "check": "every accounting file could be read",
            "success": not int(radius.get("unreadable_files", 0)),
            "detail": f"{int(radius.get('unreadable_files', 0))} files unreadable or cut short",
        },
        {
            "table": "run",
            "check": "no input delivered by two exporters (same file content or the same flow records)",
            "success": not ingest.get("duplicate_inputs"),
            "detail": json.dumps(ingest.get("duplicate_inputs", [])[:10]),
        },
        {
            "table": "run",
            "check": "every exporter has flows on every day of the week",
            "success": not silent_days,
            "detail": json.dumps(silent_days),
        },
        {
            # Flows without a rate are set aside (counted above); none of them reaches a table.
            "table": "run",
            "check": "sampling rate known for every published flow",
            "success": all(e.get("sampling") for e in exporters if int(e["records"])),
            "detail": f"{unrated} flows without a rate set aside",
        },
    ]


def reconciliation_checks(reconciliation: dict[str, Any] | None, max_unreconciled_share: float) -> list[dict[str, Any]]:
    """Flows vs RADIUS octet counters: the share of compared broadband users whose flow estimate
    falls outside its tolerance. No user to compare: reported, not failed."""
    if reconciliation is None:
        return []
    compared = int(reconciliation["users_compared"])
    outside = int(reconciliation["users_outside_tolerance"])
    share = outside / compared if compared else 0.0
    return [
        {
            "table": "reconciliation",
            "check": f"share of broadband users whose flow volume is outside tolerance of RADIUS counters "
            f"<= {max_unreconciled_share}",
            "success": share <= max_unreconciled_share,
            "detail": f"{outside} of {compared} users compared"
            + (
                f" (median relative error in {reconciliation['median_error_in']:.4f}, "
                f"out {reconciliation['median_error_out']:.4f})"
                if compared
                else " (no broadband user with accounting counters)"
            ),
        }
    ]


def drift_checks(
    tables: dict[str, pl.DataFrame],
    previous: dict[str, pl.DataFrame] | None,
    max_user_change: float,
    max_mean_change: float,
    max_port_share_change: float,
) -> list[dict[str, Any]]:
    """This week against the previously published one: users and mean usage per (service,
    direction) within a relative change, port shares within a change in points. A sudden halving
    of users is a broken feed, not a trend. No previous week: nothing to compare, no checks."""
    if previous is None:
        return []
    checks: list[dict[str, Any]] = []
    week_before = str(previous["usage_summary"]["week"][0])
    keys = ["service", "direction"]
    joined = tables["usage_summary"].join(previous["usage_summary"], on=keys, how="full", suffix="_prev")
    for row in joined.iter_rows(named=True):
        where = f"{row['service'] or row['service_prev']} {row['direction'] or row['direction_prev']}"
        for column, limit in (("users", max_user_change), ("mean_mb", max_mean_change)):
            now, before = row[column], row[f"{column}_prev"]
            change = abs(now / before - 1) if now is not None and before else float("inf")
            checks.append(
                {
                    "table": "drift",
                    "check": f"{where} {column}: relative change vs week {week_before} <= {limit}",
                    "success": change <= limit,
                    "detail": f"{before} -> {now}",
                }
            )
    shares = tables["port_share"].join(
        previous["port_share"], on=["service", "category"], how="full", suffix="_prev", coalesce=True
    )
    for row in shares.iter_rows(named=True):
        now, before = row["share_pct"] or 0.0, row["share_pct_prev"] or 0.0
        checks.append(
            {
                "table": "drift",
                "check": f"{row['service']} port share {row['category']}: change vs week {week_before} "
                f"<= {max_port_share_change} points",
                "success": abs(now - before) <= max_port_share_change,
                "detail": f"{before:.2f} -> {now:.2f}",
            }
        )
    return checks


def audit_week(
    tables: dict[str, pl.DataFrame],
    ingest: dict[str, Any],
    limits: dict[str, float],
    previous: dict[str, pl.DataFrame] | None = None,
    docs_dir: Path | None = None,
) -> dict[str, Any]:
    """{"success": bool, "checks": [...]}: success only when every check passed. `limits` holds
    max_quarantined_share, max_unattributed_share, max_user_change, max_mean_change,
    max_port_share_change and max_unreconciled_share. With `docs_dir`, GX Data Docs of the table
    suites are rendered there."""
    checks = (
        validate_tables(tables, docs_dir)
        + run_checks(ingest, tables, limits["max_quarantined_share"], limits["max_unattributed_share"])
        + reconciliation_checks(ingest.get("reconciliation"), limits["max_unreconciled_share"])
        + drift_checks(
            tables, previous, limits["max_user_change"], limits["max_mean_change"], limits["max_port_share_change"]
        )
    )
    return {"success": all(c["success"] for c in checks), "checks": checks}


def counter_checks(
    traffic: pl.DataFrame,
    services: list[str],
    month_ended: bool,
    polls: int,
    quarantined: int,
    unknown_interface_polls: int,
    min_coverage: float,
    max_quarantined_share: float,
) -> list[dict[str, Any]]:
    """Run-level gates of a month of interface counters: the month is over, every service in the
    inventory is there and covered on every interface, and little was set aside."""
    present = set(traffic["service"].to_list())
    coverage = float(traffic.select(pl.col("coverage").min()).item()) if traffic.height else 0.0
    seen = polls + quarantined + unknown_interface_polls
    share = (quarantined + unknown_interface_polls) / seen if seen else 1.0
    return [
        {"table": "run", "check": "the month has ended", "success": month_ended, "detail": str(month_ended)},
        {
            "table": "run",
            "check": "every inventory service has traffic",
            "success": set(services) <= present,
            "detail": json.dumps(sorted(set(services) - present)),
        },
        {
            "table": "run",
            "check": f"least-covered interface covers >= {min_coverage} of the month",
            "success": coverage >= min_coverage,
            "detail": f"{coverage:.6f}",
        },
        {
            "table": "run",
            "check": f"share of polls set aside (unreadable, unknown interface) <= {max_quarantined_share}",
            "success": share <= max_quarantined_share,
            "detail": f"{share:.6f}",
        },
    ]
