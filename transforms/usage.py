"""Volumes per user and day, per port, per hour; the week's per-user daily averages."""

from __future__ import annotations

import datetime as dt

import polars as pl

from transforms.ports import classify_port

DAYS_PER_WEEK = 7


def estimate_volume(flows: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `est_bytes` / `est_packets`: exported counts times the 1-in-N sampling rate (64-bit)."""
    rate = pl.col("sampling_rate").cast(pl.UInt64)
    return flows.with_columns(est_bytes=pl.col("bytes") * rate, est_packets=pl.col("packets") * rate)


def add_local_time(flows: pl.LazyFrame, timezone: str) -> pl.LazyFrame:
    """Adds `day` (local date) and `hour` (local hour 0-23) of first_ts."""
    local = pl.col("first_ts").dt.convert_time_zone(timezone)
    return flows.with_columns(day=local.dt.date(), hour=local.dt.hour().cast(pl.Int8))


def user_day_from_flows(attributed: pl.LazyFrame) -> pl.LazyFrame:
    """Rows (user_key, service, customer_type, day, in_bytes, out_bytes) from attributed flows.

    IN is what the user sent (the user is the source); OUT is what the user received.
    """
    keys = ["user_key", "service", "customer_type", "day"]
    sent = (
        attributed.filter(pl.col("src_user_key").is_not_null())
        .group_by(
            pl.col("src_user_key").alias("user_key"),
            pl.col("src_service").alias("service"),
            pl.col("src_customer_type").alias("customer_type"),
            "day",
        )
        .agg(pl.col("est_bytes").sum().alias("in_bytes"))
    )
    received = (
        attributed.filter(pl.col("dst_user_key").is_not_null())
        .group_by(
            pl.col("dst_user_key").alias("user_key"),
            pl.col("dst_service").alias("service"),
            pl.col("dst_customer_type").alias("customer_type"),
            "day",
        )
        .agg(pl.col("est_bytes").sum().alias("out_bytes"))
    )
    return sent.join(received, on=keys, how="full", coalesce=True).with_columns(
        pl.col("in_bytes").fill_null(0), pl.col("out_bytes").fill_null(0), source=pl.lit("flows")
    )


def usage_by_port(attributed: pl.LazyFrame) -> pl.LazyFrame:
    """Rows (service, protocol, port, in_bytes, out_bytes, bytes): port is the lower of the two."""
    directed = classify_port(attributed)
    return (
        directed.group_by("service_group", "protocol", "port")
        .agg(
            pl.col("est_bytes").filter(pl.col("src_user_key").is_not_null()).sum().alias("in_bytes"),
            pl.col("est_bytes").filter(pl.col("dst_user_key").is_not_null()).sum().alias("out_bytes"),
            pl.col("est_bytes").sum().alias("bytes"),
        )
        .rename({"service_group": "service"})
    )


def traffic_by_hour(attributed: pl.LazyFrame) -> pl.LazyFrame:
    """Rows (service, day, hour, in_bytes, out_bytes, unattributed_bytes) in local time."""
    return (
        attributed.group_by("service_group", "day", "hour")
        .agg(
            pl.col("est_bytes").filter(pl.col("src_user_key").is_not_null()).sum().alias("in_bytes"),
            pl.col("est_bytes").filter(pl.col("dst_user_key").is_not_null()).sum().alias("out_bytes"),
            pl.col("est_bytes")
            .filter(pl.col("src_user_key").is_null() & pl.col("dst_user_key").is_null())
            .sum()
            .alias("unattributed_bytes"),
        )
        .rename({"service_group": "service"})
    )


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
