"""Sampling rates for decoded flows: carried by the record or header, announced by the exporter,
configured, or else quarantined (never scaled by 1)."""

from __future__ import annotations

import numpy as np
import polars as pl

from transforms.decode._records import NO_SELECTOR, SamplingAnnouncement

ANNOUNCEMENT_SCHEMA: dict[str, pl.DataType] = {
    "origin": pl.String(),
    "domain_id": pl.UInt32(),
    "selector_id": pl.UInt64(),
    "rate": pl.UInt32(),
    "source": pl.String(),
}


def announcements_frame(announcements: list[SamplingAnnouncement]) -> pl.DataFrame:
    """ANNOUNCEMENT_SCHEMA rows, in order; a missing selector becomes NO_SELECTOR (domain-wide)."""
    return pl.DataFrame(
        [
            {
                "origin": a.origin,
                "domain_id": a.domain_id,
                "selector_id": NO_SELECTOR if a.selector_id is None else a.selector_id,
                "rate": a.rate,
                "source": a.source,
            }
            for a in announcements
        ],
        schema=ANNOUNCEMENT_SCHEMA,
    )


SAMPLING_KEY = ("origin", "domain_id", "selector_id")


def keys_needing_announcements(flows: pl.DataFrame) -> pl.DataFrame:
    """Distinct (origin, domain_id, selector_id) of the flows whose rate is not in the record itself."""
    return flows.filter(pl.col("record_rate").is_null()).select(SAMPLING_KEY).unique()


def rates_of_keys(
    keys: pl.DataFrame, announcements: pl.DataFrame, default_rate: int | None, override_rate: int | None = None
) -> pl.DataFrame:
    """(origin, domain_id, selector_id, sampling_rate, sampling_source) per key: what a flow without
    a rate of its own gets (nulls when none is known), sorted by key.

    Order: the announced rate of the key's selector; the domain's rate when it announced exactly
    one (for flows without a selector); the configured default. A configured override replaces
    all of them (for exporters known to announce a wrong rate).
    """
    latest = (
        announcements.filter(pl.col("rate") > 0)
        .group_by("origin", "domain_id", "selector_id", maintain_order=True)
        .last()
    )
    by_selector = latest.select(
        "origin", "domain_id", "selector_id", pl.col("rate").alias("_sel_rate"), pl.col("source").alias("_sel_src")
    )
    single = (
        latest.group_by("origin", "domain_id")
        .agg(
            pl.col("rate").n_unique().alias("_n"),
            pl.col("rate").first().alias("_dom_rate"),
            pl.col("source").first().alias("_dom_src"),
        )
        .filter(pl.col("_n") == 1)
        .drop("_n")
    )
    joined = keys.join(by_selector, on=list(SAMPLING_KEY), how="left").join(
        single, on=["origin", "domain_id"], how="left"
    )
    default = pl.lit(default_rate, dtype=pl.UInt32) if default_rate else pl.lit(None, dtype=pl.UInt32)
    domain_wide = pl.col("selector_id") == NO_SELECTOR
    rates = joined.select(
        *SAMPLING_KEY,
        sampling_rate=pl.coalesce("_sel_rate", pl.when(domain_wide).then(pl.col("_dom_rate")), default).cast(pl.UInt32),
        sampling_source=pl.coalesce(
            "_sel_src",
            pl.when(domain_wide).then(pl.col("_dom_src")),
            pl.when(default.is_not_null()).then(pl.lit("config")),
        ),
    )
    if override_rate:
        rates = rates.with_columns(
            sampling_rate=pl.lit(override_rate, dtype=pl.UInt32), sampling_source=pl.lit("config:override")
        )
    return rates.sort(SAMPLING_KEY)


def apply_rates(
    flows: pl.DataFrame, key_rates: pl.DataFrame, override_rate: int | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(flows with sampling_rate and sampling_source; flows with no known rate plus `reason`): a rate
    in the record or export header first, else the rate of the flow's key (from rates_of_keys)."""
    joined = flows.join(key_rates, on=list(SAMPLING_KEY), how="left")
    if override_rate:
        resolved = joined
    else:
        resolved = joined.with_columns(
            sampling_rate=pl.coalesce("record_rate", "sampling_rate").cast(pl.UInt32),
            sampling_source=pl.when(pl.col("record_rate").is_not_null())
            .then(pl.col("record_rate_source"))
            .otherwise(pl.col("sampling_source")),
        )
    resolved = resolved.drop("record_rate", "record_rate_source")
    known = resolved.filter(pl.col("sampling_rate").is_not_null())
    unknown = resolved.filter(pl.col("sampling_rate").is_null()).with_columns(
        reason=pl.lit(
            "no sampling rate announced for this exporter/domain/selector and no default_sampling configured:"
            ' set the 1-in-N rate for exporters that announce none in TOML [default_sampling] "<exporter glob>" = N'
            ' or env TRAFFICREPORT_DEFAULT_SAMPLING="bb-*=1024"; N = 1 for an exporter that does not sample'
        )
    )
    return known, unknown


def resolve_sampling(
    flows: pl.DataFrame, announcements: pl.DataFrame, default_rate: int | None, override_rate: int | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(flows with sampling_rate and sampling_source; flows with no known rate plus `reason`): a rate
    in the record or export header, else as rates_of_keys says for the flow's key."""
    keys = keys_needing_announcements(flows) if not override_rate else flows.select(SAMPLING_KEY).unique()
    return apply_rates(flows, rates_of_keys(keys, announcements, default_rate, override_rate), override_rate)


def divide_counts(
    packets: np.ndarray, octets: np.ndarray, rates: np.ndarray, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sampled packets, sampled bytes, rate, whether the given rate was used) of counts a
    collector multiplied by its rate: each row's given rate (0: none) where it divides both
    counts, else the greatest common divisor of the counts of the row's group (its exporter, in
    `groups`; the whole input without). The true rate divides every scaled count of an exporter
    sampling at one rate, so that divisor is never below it."""
    safe = np.where(rates > 0, rates, 1).astype(np.uint64)
    stated = (rates > 0) & (packets % safe == 0) & (octets % safe == 0)
    if stated.all():
        return packets // safe, octets // safe, safe, stated
    rate = safe.copy()
    keys = np.zeros(packets.size, dtype=np.int64) if groups is None else groups
    for key in np.unique(keys[~stated]).tolist():
        member = (keys == key) & ~stated
        divisor = int(np.gcd.reduce(np.concatenate([packets[member], octets[member]]).astype(np.uint64)))
        rate[member] = max(divisor, 1)
    return packets // rate, octets // rate, rate, stated


def divide_scaled_counts(flows: pl.DataFrame, rates: pl.Series | None, source: str) -> pl.DataFrame:
    """`flows` (FLOW_SCHEMA) whose packets/bytes a collector already multiplied by its 1-in-N rate,
    back as sampled counts: packets and bytes divided by the row's rate, with record_rate set, so
    volumes are unchanged and `packets` counts the samples the volume rests on.

    `rates` (one per row, null where the source did not say) is the rate the collector used; a row
    whose counts it does not divide, or without one, gets the greatest common divisor of the
    counts of its exporter (origin, domain) in the file instead (source `<source>:inferred`). The
    true rate divides every scaled count of an exporter that samples at one rate, so that divisor
    is at least the true rate: the sample count it gives is never above the true one, and a
    tolerance built on it is never narrower. (An exporter sampling at several rates the file does
    not tell apart gets their common divisor: volumes stay exact, sample counts may be overstated;
    `collector_sampling` states the rate.)
    """
    if flows.is_empty():
        return flows
    given = (
        np.zeros(flows.height, dtype=np.uint64)
        if rates is None
        else rates.fill_null(0).cast(pl.UInt64).to_numpy().astype(np.uint64, copy=False)
    )
    keys = [c for c in ("origin", "domain_id") if c in flows.columns]
    groups = flows.select(pl.struct(keys).rank("dense")).to_series().to_numpy() if keys else None
    packets, octets, rate, stated = divide_counts(
        flows["packets"].to_numpy().astype(np.uint64, copy=False),
        flows["bytes"].to_numpy().astype(np.uint64, copy=False),
        given,
        groups,
    )
    return flows.with_columns(
        pl.Series("packets", packets, dtype=pl.UInt64),
        pl.Series("bytes", octets, dtype=pl.UInt64),
        pl.Series("record_rate", rate, dtype=pl.UInt64).cast(pl.UInt32),
        pl.when(pl.Series(stated))
        .then(pl.lit(source))
        .otherwise(pl.lit(f"{source}:inferred"))
        .alias("record_rate_source"),
    )
