"""Target (reference) vs ground truth (generator) vs published (warehouse), side by side."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from flows.generate import TRUTH_DIR, generated_weeks
from flows.generate import truth_dir as truth_dir_of
from flows.publish import local_catalog, query_frame
from flows.storage import AnyPath
from transforms.accounting.privacy import pseudonymize
from transforms.synth.calibration import mode_bin_of
from transforms.synth.reference import port_share_targets, usage_targets
from transforms.tables import ports, stats

STAT_NAMES = ("mean_mb", "median_mb", "mode_mb", "top1_share", "top10_share")

# The tolerances, the checks below and the lines that explain them in the output: `gen` compares the
# generator's ground truth with the reference row (target), `pub` the published figure with the truth.
GEN_RELATIVE = 0.05  # mean and median, truth vs target
PUB_RELATIVE = {"mean_mb": 0.02, "median_mb": 0.05}  # published vs truth
GEN_SHARE_POINTS, PUB_SHARE_POINTS = 3.0, 2.0  # top 1% / 10% shares, percentage points
MODE_BINS = 1  # modes: within this many 0.05-decade bins
GEN_PORT_POINTS, PUB_PORT_POINTS = 0.5, 0.3  # port shares, percentage points
HEAVY_OUT_BYTES, HEAVY_ERROR, HEAVY_SHARE = 1e9, 0.10, 0.95  # heavy users: this share within this error


def usage_within(statistic: str, reference: float, value: float, published: bool) -> bool:
    """Whether `value` is within the tolerance of `statistic` around `reference`: the published
    figure around the truth (`published`), else the truth around the target."""
    if statistic == "mode_mb":
        return abs(mode_bin_of(value) - mode_bin_of(reference)) <= MODE_BINS
    if statistic.endswith("share"):
        return abs(value - reference) * 100 <= (PUB_SHARE_POINTS if published else GEN_SHARE_POINTS)
    return abs(value / reference - 1) <= (PUB_RELATIVE[statistic] if published else GEN_RELATIVE)


def within_tolerance(usage_rows: pl.DataFrame, port_rows: pl.DataFrame, accuracy: dict[str, float]) -> bool:
    """True when every row's gen and pub are within tolerance and enough heavy users are estimated well."""
    checks = ("truth_vs_target_ok", "published_vs_truth_ok")
    return bool(
        all(usage_rows[c].all() and port_rows[c].all() for c in checks)
        and accuracy["heavy_within_10pct"] >= HEAVY_SHARE
    )


def truth_user_week(truth_dir: AnyPath) -> pl.DataFrame:
    """Ground truth per user: service, service_group, user_id, customer_type, in/out bytes per day."""
    days = pl.read_parquet(io.BytesIO((truth_dir / "user_day.parquet").read_bytes()))
    return (
        days.group_by("service", "user_id", "customer_type")
        .agg(
            (pl.col("in_bytes").sum() / 7).alias("in_bytes_per_day"),
            (pl.col("out_bytes").sum() / 7).alias("out_bytes_per_day"),
        )
        .with_columns(service_group=pl.col("service").str.split("_").list.first())
    )


def truth_port_usage(truth_dir: AnyPath) -> pl.DataFrame:
    """True bytes per (service, protocol, lower port), each class's bytes spread over its ports."""
    classes = pl.read_parquet(io.BytesIO((truth_dir / "port_bytes.parquet").read_bytes()))
    return (
        classes.with_columns(n=pl.col("ports").list.len())
        .explode("ports")
        .select(
            "service",
            pl.col("protocol").cast(pl.UInt8),
            pl.when(pl.col("protocol").is_in([6, 17])).then(pl.col("ports")).otherwise(None).alias("port"),
            (pl.col("true_bytes") / pl.col("n")).alias("bytes"),
        )
    )


def _published(catalog: Path, week: dt.date) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    con = duckdb.connect(str(catalog), read_only=True)
    try:
        summary = query_frame(con, "select * from usage_summary where week = $week", {"week": week})
        shares = query_frame(con, "select * from port_share where week = $week", {"week": week})
        users = query_frame(con, "select * from user_week_usage where week = $week", {"week": week})
    finally:
        con.close()
    return summary, shares, users


def calibration_report(
    landing: AnyPath, warehouse: AnyPath, key: bytes, week: dt.date | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """(usage rows, port rows, accuracy) of one generated week (default: the latest generated):
    each row target / truth / published and whether within tolerance."""
    weeks = generated_weeks(landing)
    if not weeks:
        raise FileNotFoundError(f"{landing / TRUTH_DIR}: no generated week with ground truth")
    truth_dir = truth_dir_of(landing, week or weeks[-1])
    spec = json.loads((truth_dir / "spec.json").read_text())
    week, year = dt.date.fromisoformat(spec["week"]), int(spec["year"])
    truth = truth_user_week(truth_dir)
    summary, shares, published_users = _published(local_catalog(warehouse), week)
    rows = []
    for service in ("broadband", "mobile"):
        group = truth.filter((pl.col("service_group") == service) & (pl.col("customer_type") == "personal"))
        for direction in ("in", "out"):
            target = usage_targets(service, year, direction)
            true_stats = stats.describe_distribution(
                group[f"{direction}_bytes_per_day"].to_numpy() / stats.BYTES_PER_MB
            )
            pub = summary.filter((pl.col("service") == service) & (pl.col("direction") == direction)).row(0, named=True)
            for name in STAT_NAMES:
                t, g, p = target[name], true_stats[name], float(pub[name])
                gen_ok, pub_ok = usage_within(name, t, g, published=False), usage_within(name, g, p, published=True)
                rows.append(
                    {
                        "service": service,
                        "direction": direction,
                        "statistic": name,
                        "target": t,
                        "truth": g,
                        "published": p,
                        "truth_vs_target_ok": gen_ok,
                        "published_vs_truth_ok": pub_ok,
                    }
                )
    usage_rows = pl.DataFrame(rows)

    true_shares = ports.share_by_category(truth_port_usage(truth_dir))
    port_rows = []
    for service in ("broadband", "mobile"):
        targets = port_share_targets(service, year)
        for category in ports.CATEGORIES[service]:
            t = targets[category]
            g = float(
                true_shares.filter((pl.col("service") == service) & (pl.col("category") == category))[
                    "share_pct"
                ].item()
            )
            p = float(
                shares.filter((pl.col("service") == service) & (pl.col("category") == category))["share_pct"].item()
            )
            port_rows.append(
                {
                    "service": service,
                    "category": category,
                    "target": t,
                    "truth": g,
                    "published": p,
                    "truth_vs_target_ok": abs(g - t) <= GEN_PORT_POINTS,
                    "published_vs_truth_ok": abs(p - g) <= PUB_PORT_POINTS,
                }
            )
    port_table = pl.DataFrame(port_rows)

    heavy = truth.filter(
        (pl.col("service_group") == "broadband")
        & (pl.col("customer_type") == "personal")
        & (pl.col("out_bytes_per_day") >= HEAVY_OUT_BYTES)
    )
    identities = heavy.select(
        pl.concat_str(
            [pl.lit("broadband|"), pl.col("user_id"), pl.lit("|"), pl.col("service").str.split("_").list.last()]
        )
    ).to_series()
    heavy = heavy.with_columns(user_key=pseudonymize(identities, key)).join(
        published_users.select("user_key", pl.col("out_bytes_per_day").alias("published_out")),
        on="user_key",
        how="left",
    )
    error = (heavy["published_out"].fill_null(0).to_numpy() / heavy["out_bytes_per_day"].to_numpy()) - 1
    accuracy = {
        "heavy_users": float(heavy.height),
        "heavy_within_10pct": float(np.mean(np.abs(error) <= HEAVY_ERROR)) if heavy.height else float("nan"),
        "heavy_median_abs_error": float(np.median(np.abs(error))) if heavy.height else float("nan"),
    }
    return usage_rows, port_table, accuracy


def format_report(usage_rows: pl.DataFrame, port_rows: pl.DataFrame, accuracy: dict[str, float]) -> str:
    """Plain-text tables of calibration_report, with what their columns mean and the tolerances."""
    lines = [
        "target: the reference report's row for the week's year; truth: the generator's ground truth",
        "(_truth/ in the landing zone); published: the warehouse's figure for the week.",
        "gen: truth vs target (does the generator reproduce the reference?); pub: published vs truth",
        "(does the pipeline measure what was generated?): ok within the tolerances below, BAD outside.",
        "",
        "Daily usage (MB/day; shares in %), personal users",
        f"{'service':10} {'dir':3} {'statistic':12} {'target':>10} {'truth':>10} {'published':>10}  gen pub",
    ]
    for r in usage_rows.iter_rows(named=True):
        scale = 100 if r["statistic"].endswith("share") else 1
        gen = "ok " if r["truth_vs_target_ok"] else "BAD"
        pub = "ok" if r["published_vs_truth_ok"] else "BAD"
        lines.append(
            f"{r['service']:10} {r['direction']:3} {r['statistic']:12} {r['target'] * scale:10.1f} "
            f"{r['truth'] * scale:10.1f} {r['published'] * scale:10.1f}  {gen} {pub}"
        )
    lines += [
        "",
        "Usage by port (% of bytes)",
        f"{'service':10} {'category':22} {'target':>7} {'truth':>7} {'published':>9}  gen pub",
    ]
    for r in port_rows.iter_rows(named=True):
        lines.append(
            f"{r['service']:10} {r['category']:22} {r['target']:7.1f} {r['truth']:7.2f} {r['published']:9.2f}  "
            f"{'ok ' if r['truth_vs_target_ok'] else 'BAD'} {'ok' if r['published_vs_truth_ok'] else 'BAD'}"
        )
    lines += [
        "",
        f"Broadband personal users with true OUT >= 1 GB/day: {accuracy['heavy_users']:.0f}; "
        f"estimated within 10%: {100 * accuracy['heavy_within_10pct']:.1f}% "
        f"(median abs error {100 * accuracy['heavy_median_abs_error']:.2f}%)",
        "",
        *tolerance_lines(),
    ]
    return "\n".join(lines)


def tolerance_lines() -> list[str]:
    """The tolerances behind each gen / pub verdict, as the output's footer states them."""
    pub_mean, pub_median = (100 * PUB_RELATIVE[s] for s in ("mean_mb", "median_mb"))
    return [
        "Tolerances (gen: truth vs target; pub: published vs truth):",
        f"  mean, median        gen within {100 * GEN_RELATIVE:.0f}%; "
        f"pub within {pub_mean:.0f}% (mean), {pub_median:.0f}% (median)",
        f"  mode                within {MODE_BINS} bin of 0.05 decade (x{10**0.05:.3f}) for gen and pub",
        f"  top 1% / 10% share  gen within {GEN_SHARE_POINTS:.0f} points; pub within {PUB_SHARE_POINTS:.0f} points",
        f"  port shares         gen within {GEN_PORT_POINTS} points; pub within {PUB_PORT_POINTS} points",
        f"  heavy users         at least {100 * HEAVY_SHARE:.0f}% estimated within {100 * HEAVY_ERROR:.0f}%",
    ]
