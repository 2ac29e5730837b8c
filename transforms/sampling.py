"""Sampling rates for decoded flows: announced by the exporter, else configured, else quarantine."""

from __future__ import annotations

import polars as pl

NO_SELECTOR = (1 << 64) - 1
ANNOUNCEMENT_SCHEMA: dict[str, pl.DataType] = {
    "domain_id": pl.UInt32(),
    "selector_id": pl.UInt64(),
    "rate": pl.UInt32(),
    "source": pl.String(),
}


def latest_announcements(announcements: pl.DataFrame) -> pl.DataFrame:
    """The last announced rate per (domain_id, selector_id); selector NO_SELECTOR = domain-wide."""
    return announcements.group_by("domain_id", "selector_id", maintain_order=True).last()


def resolve_sampling(
    flows: pl.DataFrame, announcements: pl.DataFrame, default_rate: int | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(flows with sampling_rate, sampling_source; flows with no known rate plus `reason`).

    A flow carrying a selector/sampler id takes that selector's rate; one without takes its
    domain's rate when the domain announced exactly one; else the configured default.
    """
    latest = latest_announcements(announcements)
    by_selector = latest.select(
        "domain_id", "selector_id", pl.col("rate").alias("_sel_rate"), pl.col("source").alias("_sel_src")
    )
    single = (
        latest.group_by("domain_id")
        .agg(
            pl.col("rate").n_unique().alias("_n"),
            pl.col("rate").first().alias("_dom_rate"),
            pl.col("source").first().alias("_dom_src"),
        )
        .filter(pl.col("_n") == 1)
        .drop("_n")
    )
    joined = flows.join(by_selector, on=["domain_id", "selector_id"], how="left").join(
        single, on="domain_id", how="left"
    )
    default = pl.lit(default_rate, dtype=pl.UInt32) if default_rate else pl.lit(None, dtype=pl.UInt32)
    resolved = joined.with_columns(
        sampling_rate=pl.coalesce(
            "_sel_rate", pl.when(pl.col("selector_id") == NO_SELECTOR).then(pl.col("_dom_rate")), default
        ).cast(pl.UInt32),
        sampling_source=pl.coalesce(
            "_sel_src",
            pl.when(pl.col("selector_id") == NO_SELECTOR).then(pl.col("_dom_src")),
            pl.when(default.is_not_null()).then(pl.lit("config")),
        ),
    ).drop("_sel_rate", "_sel_src", "_dom_rate", "_dom_src")
    known = resolved.filter(pl.col("sampling_rate").is_not_null())
    unknown = resolved.filter(pl.col("sampling_rate").is_null()).with_columns(
        reason=pl.lit("no sampling rate known for this exporter/domain/selector")
    )
    return known, unknown
