"""The week's tables from partial aggregates and ingest summaries (tiny inline frames)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

from tests.records import accounting_summary, exporter_summary
from transforms.run_records import SamplingSource
from transforms.tables import registry
from transforms.tables.week import combine_week_tables, exporter_day_records_table, ingest_quality_table

WEEK = dt.date(2024, 6, 3)
DAYS = [str(WEEK + dt.timedelta(days=d)) for d in range(7)]
EXPORTER = exporter_summary(
    files=7,
    formats={"ipfix": 7},
    records=30,
    messages=3,
    input_bytes=1000,
    quarantined_records=2,
    quarantined_bytes=10,
    sampling=(SamplingSource("options template", 1024, 20), SamplingSource("default_sampling", 512, 10)),
    raw_bytes=900,
    records_per_day={day: (10 if i < 3 else 0) for i, day in enumerate(DAYS)},
    unrated_records=1,
)
RADIUS = accounting_summary(accounting_records=1000, sessions=10, assignments=10, users=5, quarantined_records=4)


def test_exporter_day_records_has_every_day_of_every_exporter_silent_days_as_zero() -> None:
    mobile = dataclasses.replace(EXPORTER, exporter="gw-1", service="mobile", records_per_day=dict.fromkeys(DAYS, 1))
    table = exporter_day_records_table(WEEK, [EXPORTER, mobile])
    assert registry.conform_to_table("exporter_day_records", table).height == 14
    bb = table.filter(pl.col("exporter") == "bb-1")
    assert bb["records"].to_list() == [10, 10, 10, 0, 0, 0, 0]
    assert bb["day"].to_list() == [dt.date.fromisoformat(d) for d in DAYS]
    assert set(table["week"]) == {WEEK}


def test_ingest_quality_counts_unrated_flows_as_set_aside_and_names_rate_sources() -> None:
    table = ingest_quality_table(WEEK, [EXPORTER], RADIUS)
    flows = table.row(by_predicate=pl.col("feed") == "bb-1", named=True)
    assert flows["quarantined_records"] == 3 and flows["records"] == 30
    assert flows["quarantined_pct"] == 100 * 3 / 33
    assert flows["sampling"] == "1:1024 from options template (66.7%); 1:512 from default_sampling (33.3%)"
    accounting = table.row(by_predicate=pl.col("feed_type") == "radius", named=True)
    assert (accounting["records"], accounting["quarantined_records"]) == (1000, 4)


def test_partials_of_exporters_add_up_in_the_port_and_hour_tables() -> None:
    day = WEEK
    users = pl.DataFrame({"user_key": ["u1"], "service": ["broadband_pppoe"], "customer_type": ["personal"]})
    flow_days = pl.DataFrame(
        {
            "user_key": ["u1", "u1"],
            "service": ["broadband_pppoe"] * 2,
            "customer_type": ["personal"] * 2,
            "day": [day, day],
            "in_bytes": [100, 50],
            "out_bytes": [1000, 500],
            "source": ["flows", "flows"],
        }
    )
    billing = flow_days.clear()
    port = pl.DataFrame(
        {"protocol": [6], "port": [443], "bytes": [700]}, schema_overrides={"protocol": pl.UInt8, "bytes": pl.UInt64}
    ).with_columns(service=pl.lit("broadband"))
    hour = pl.DataFrame(
        {"day": [day], "hour": [20], "in_bytes": [10], "out_bytes": [20], "unattributed_bytes": [1]},
        schema_overrides={"in_bytes": pl.UInt64, "out_bytes": pl.UInt64, "unattributed_bytes": pl.UInt64},
    ).with_columns(service=pl.lit("broadband"))
    bucket = pl.DataFrame(
        {"service": ["broadband"], "day": [day], "hour": [20], "bucket": ["TCP 80/443"], "bytes": [7.0]}
    )
    tables = combine_week_tables(WEEK, users, flow_days, billing, [port, port], [hour, hour], [bucket, bucket])
    assert tables["user_day_usage"].select("in_bytes", "out_bytes").row(0) == (150.0, 1500.0)
    assert tables["port_usage"].select("protocol", "port", "bytes").row(0) == (6, 443, 1400)
    assert tables["traffic_hour"].select("in_bytes", "out_bytes", "unattributed_bytes").row(0) == (20, 40, 2)
    assert tables["port_bucket_hour"]["bytes"].to_list() == [14.0]
    for name in ("user_day_usage", "port_usage", "traffic_hour", "port_bucket_hour"):
        registry.conform_to_table(name, tables[name])
