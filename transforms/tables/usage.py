"""Volumes per user and day, per port, per hour; the week's per-user daily averages."""

from __future__ import annotations

import datetime as dt

import polars as pl

DAYS_PER_WEEK = 7


def estimate_volume(flows: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `est_bytes` / `est_packets`: exported counts times the 1-in-N sampling rate (64-bit)."""
    rate = pl.col("sampling_rate").cast(pl.UInt64)
    return flows.with_columns(est_bytes=pl.col("bytes") * rate, est_packets=pl.col("packets") * rate)


def user_week_usage(user_day: pl.DataFrame, users: pl.DataFrame, week: dt.date) -> pl.DataFrame:
    """One row per user of the week: in/out bytes per day averaged over 7 days (users with no traffic: 0).

    `users` lists everyone who held an address or a billing session in the week
    (user_key, service, customer_type).
    """
    totals = user_day.group_by("user_key", "service", "customer_type").agg(
        pl.col("in_bytes").sum(),
        pl.col("out_bytes").sum(),
        pl.col("day").n_unique().alias("active_days"),
    )
    everyone = pl.concat(
        [users.select("user_key", "service", "customer_type"), totals.select("user_key", "service", "customer_type")]
    ).unique()
    return (
        everyone.join(totals, on=["user_key", "service", "customer_type"], how="left")
        .select(
            pl.lit(week).alias("week"),
            "user_key",
            "service",
            pl.col("service").str.split("_").list.first().alias("service_group"),
            "customer_type",
            pl.col("active_days").fill_null(0).cast(pl.Int64),
            (pl.col("in_bytes").fill_null(0) / DAYS_PER_WEEK).alias("in_bytes_per_day"),
            (pl.col("out_bytes").fill_null(0) / DAYS_PER_WEEK).alias("out_bytes_per_day"),
        )
        .sort("service", "user_key")
    )
