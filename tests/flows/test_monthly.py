"""Monthly traffic from interface counters (Figure 1): published through write-audit-publish at the
level the counters carry; an outage or an unknown month publishes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from flows.monthly import monthly_traffic_report, write_counters
from flows.publish import read_manifest, read_published
from flows.storage import local_path
from flows.weekly import AuditFailed
from tests.conftest import _settings
from transforms.synth.monthly import BASE_BPS, generate_counter_polls, monthly_level

ZONE = "Asia/Tokyo"


@pytest.fixture(scope="module")
def counter_polls() -> pl.DataFrame:
    return generate_counter_polls("2024-05", "2024-07", ZONE, seed=3)


def test_a_month_is_published_at_the_level_its_counters_carry(
    counter_polls: pl.DataFrame, prefect_server: str, tmp_path: Path
) -> None:
    write_counters(counter_polls, tmp_path / "landing", ZONE)
    settings = _settings(tmp_path, tmp_path / "landing")
    run = monthly_traffic_report("2024-06", settings)
    june = counter_polls.filter(pl.col("time_s").is_between(1717167600, 1719759600, closed="left"))
    assert run.published and run.polls == june.height > 5 * 30 * 24 - 5  # five interfaces, hourly
    warehouse = settings.warehouse  # type: ignore[attr-defined]
    manifest = read_manifest(warehouse)
    rows = read_published(warehouse, manifest, "monthly_traffic", "2024-06")
    assert manifest["runs"][run.run_id]["month"] == "2024-06"
    for row in rows.iter_rows(named=True):
        for direction in ("in", "out"):
            expected = BASE_BPS[row["service"]] * monthly_level(row["service"], direction, "2024-06")
            # Log-normal noise of 5% per hour averages out over a month: within 1%.
            assert row[f"{direction}_bps"] == pytest.approx(expected, rel=0.01), (row["service"], direction)
        assert row["coverage"] > 0.99
    # The counter reboots the generator put in are reported, not counted as traffic.
    assert rows["counter_resets"].sum() == run.counter_resets


def test_a_poller_outage_with_a_reboot_fails_the_coverage_gate_and_publishes_nothing(
    counter_polls: pl.DataFrame, prefect_server: str, tmp_path: Path
) -> None:
    # bras-osaka-1 was not polled for the first ten days of June and rebooted meanwhile: its
    # counters start again near zero, so those ten days' traffic is unknown. (An outage without a
    # reboot loses nothing: the counters kept counting across it.)
    june, back = 1717167600, 1717167600 + 10 * 86400  # 2024-06-01 and 2024-06-11 00:00 +09:00
    device = pl.col("device") == "bras-osaka-1"
    after = counter_polls.filter(device & (pl.col("time_s") >= back)).sort("time_s").row(0, named=True)
    polls = counter_polls.filter(~(device & pl.col("time_s").is_between(june, back, closed="left"))).with_columns(
        pl.when(device & (pl.col("time_s") >= back)).then(pl.col(c) - after[c] + 1000).otherwise(pl.col(c)).alias(c)
        for c in ("in_octets", "out_octets")
    )
    write_counters(polls, tmp_path / "landing", ZONE)
    settings = _settings(tmp_path, tmp_path / "landing")
    with pytest.raises(AuditFailed, match=r"least-covered interface covers >= 0.95 of the month \(observed 0.66"):
        monthly_traffic_report("2024-06", settings)
    assert "monthly_traffic" not in read_manifest(settings.warehouse)["tables"]  # type: ignore[attr-defined]


def test_unknown_interfaces_and_unreadable_lines_are_quarantined_and_gate_the_month(
    counter_polls: pl.DataFrame, prefect_server: str, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    write_counters(counter_polls, landing, ZONE)
    june = landing / "counters" / "pgw-osaka-1" / "2024-06.csv"
    bad_line = len(june.read_text().splitlines()) + 1
    with june.open("a") as out:
        out.write("2024-06-30T12:00:00,pgw-osaka-1,ae10,1,1\n")  # no offset
        out.write("2024-06-30T12:00:00+09:00,pgw-osaka-1,ae99,1,1\n")  # not in the inventory
    settings = _settings(tmp_path, landing)
    strict = settings.model_copy(update={"max_quarantined_share": 0.0001})
    with pytest.raises(AuditFailed, match=r"share of polls set aside .* \(observed 0.00055"):
        monthly_traffic_report("2024-06", strict)
    quarantine = local_path(settings.quarantine_path)
    [problems] = list(quarantine.glob("month=2024-06/run=*/counters.problems.parquet"))
    assert pl.read_parquet(problems).rows() == [
        (str(june), f"line {bad_line}", "time is neither ISO 8601 with an offset nor epoch seconds")
    ]
    [unknown] = list(quarantine.glob("month=2024-06/run=*/counters.unknown_interfaces.parquet"))
    assert pl.read_parquet(unknown).rows() == [("pgw-osaka-1", "ae99", 1)]
    # Under the default gate (0.1%), the same month publishes.
    assert monthly_traffic_report("2024-06", settings).published


def test_a_month_without_its_own_counter_file_is_a_missing_feed(
    counter_polls: pl.DataFrame, prefect_server: str, tmp_path: Path
) -> None:
    write_counters(counter_polls.filter(pl.col("time_s") < 1717167600), tmp_path / "landing", ZONE)
    settings = _settings(tmp_path, tmp_path / "landing")
    with pytest.raises(FileNotFoundError, match="no counter files for 2024-06"):
        monthly_traffic_report("2024-06", settings)


def test_the_scheduled_monthly_run_publishes_the_month_before_its_day(
    counter_polls: pl.DataFrame, prefect_server: str, tmp_path: Path
) -> None:
    from flows.monthly import scheduled_monthly_traffic

    write_counters(counter_polls, tmp_path / "landing", ZONE)
    run = scheduled_monthly_traffic(
        today=dt.date(2024, 7, 2),
        landing_zone=str(tmp_path / "landing"),
        warehouse=str(tmp_path / "warehouse"),
        staging=str(tmp_path / "staging"),
    )
    assert run.month == "2024-06" and run.published
    assert set(read_manifest(tmp_path / "warehouse")["tables"]["monthly_traffic"]) == {"2024-06"}
