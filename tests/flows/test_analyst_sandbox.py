"""Analysts' SQL (`trafficreport query` / `shell`) reads the catalog and nothing else: no file written
or read outside it, no other database attached, no extension installed, no setting changed; a
refused query ends in one line on stderr. The report's own queries and the examples still work."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows import cli
from flows.publish import CATALOG, build_catalog, publish_week
from tests.conftest import WEEK
from transforms.run_records import PublicationRecord

# Each case builds a warehouse and a catalog (about two seconds each).
pytestmark = pytest.mark.slow

TRAFFICREPORT = Path(sys.executable).with_name("trafficreport")
EXAMPLES = Path(__file__).resolve().parents[2] / "sql" / "examples"


def tiny_week_tables(week: dt.date, scale: float = 1.0) -> dict[str, pl.DataFrame]:
    """Two or four rows per table the sql/ views and examples read, for one week."""
    services = ["broadband", "broadband", "mobile", "mobile"]
    return {
        "usage_summary": pl.DataFrame(
            {
                "week": [week] * 4,
                "service": services,
                "direction": ["in", "out", "in", "out"],
                "users": [3, 3, 2, 2],
                "mean_mb": [100.0 * scale, 800.0 * scale, 40.0, 300.0],
                "median_mb": [50.0 * scale, 400.0 * scale, 20.0, 150.0],
                "mode_mb": [30.0, 250.0, 10.0, 90.0],
                "top1_share": [0.1, 0.2, 0.1, 0.2],
                "top10_share": [0.4, 0.5, 0.4, 0.5],
            }
        ),
        "port_usage": pl.DataFrame(
            {
                "week": [week] * 4,
                "service": services,
                "protocol": [6, 17, 6, 17],
                "port": [443, 443, 443, 53],
                "bytes": [9e9, 1e9, 4e9, 1e8],
            }
        ),
        "port_share": pl.DataFrame(
            {
                "week": [week] * 4,
                "service": services,
                "position": [1, 2, 1, 2],
                "category": ["TCP", "Other", "TCP", "Other"],
                "is_protocol_total": [True, False, True, False],
                "bytes": [9e9, 1e9, 4e9, 1e8],
                "share_pct": [90.0, 10.0, 97.6, 2.4],
            }
        ),
        "user_week_usage": pl.DataFrame(
            {
                "week": [week] * 4,
                "user_key": ["k1", "k2", "k3", "k4"],
                "service": ["broadband_pppoe", "broadband_ipoe", "mobile", "mobile"],
                "service_group": services,
                "customer_type": ["personal"] * 4,
                "active_days": [7, 5, 7, 2],
                "in_bytes_per_day": [1e8, 2e8, 1e7, 2e7],
                "out_bytes_per_day": [2e10, 1e9, 1e8, 3e8],
            }
        ),
        "traffic_hour": pl.DataFrame(
            {
                "week": [week] * 2,
                "service": ["broadband", "mobile"],
                "day": [week, week],
                "hour": [21, 21],
                "in_bytes": [1e9, 1e8],
                "out_bytes": [9e9, 9e8],
                "unattributed_bytes": [0.0, 0.0],
            }
        ),
    }


def publish_tiny_week(warehouse: Path, week: dt.date, run_id: str, base_run: str | None = None) -> None:
    """Publishes tiny tables for `week` by run `run_id` (the manifest only, not the catalog)."""
    publish_week(
        warehouse,
        week,
        run_id,
        tiny_week_tables(week),
        PublicationRecord(audit_passed=True, replaced_run=None),
        base_run=base_run,
    )


@pytest.fixture()
def warehouse(tmp_path: Path) -> Path:
    folder = tmp_path / "warehouse"
    publish_tiny_week(folder, WEEK, "run-a")
    build_catalog(folder)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        [str(TRAFFICREPORT), *args], capture_output=True, text=True, timeout=120, input=stdin, env=env
    )


# Each attack of issue 16, with {warehouse}, {other} (another warehouse) and {tmp} filled in.
ATTACKS = {
    "copy onto the manifest": "copy (select 1 as x) to '{warehouse}/_manifest.json' (format json)",
    "copy to another path": "copy usage_summary to '{tmp}/stolen.csv'",
    "copy a query to another path": "copy (select * from user_week_usage) to '{tmp}/stolen.parquet' (format parquet)",
    "export the database": "export database '{tmp}/exported'",
    "attach another catalog read-write and drop": (
        "attach '{other}/catalog.duckdb' as other (read_only false); drop table other.usage_summary"
    ),
    "attach another catalog": "attach '{other}/catalog.duckdb' as other",
    "read_csv of /etc/passwd": "select * from read_csv('/etc/passwd')",
    "read_text of a file": "select * from read_text('{warehouse}/_manifest.json')",
    "glob the filesystem": "select * from glob('/etc/*')",
    "install an extension": "install httpfs",
    "load an extension": "load httpfs",
    "set enable_external_access": "set enable_external_access = true",
    "reset enable_external_access": "reset enable_external_access",
    "set allowed_directories": "set allowed_directories = ['/']",
    "set lock_configuration": "set lock_configuration = false",
    "pragma that changes a setting": "pragma enable_profiling",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_analyst_query_cannot_reach_outside_the_catalog(name: str, warehouse: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    publish_tiny_week(other, WEEK, "run-other")
    build_catalog(other)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before, other_before = _files(warehouse), _files(other)
    sql = ATTACKS[name].format(warehouse=warehouse, other=other, tmp=scratch)

    done = _cli("query", sql, "--warehouse", str(warehouse))

    assert done.returncode == 2, f"{name}: exit {done.returncode}: {done.stdout[-500:]}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trafficreport: query refused: "), f"{name}: {done.stderr[-2000:]}"
    assert _files(warehouse) == before and _files(other) == other_before
    assert list(scratch.iterdir()) == []
    status = _cli("status", "--warehouse", str(warehouse))
    assert status.returncode == 0 and any(line.split()[:1] == [str(WEEK)] for line in status.stdout.splitlines())


def test_the_refusal_says_why_in_one_line(warehouse: Path, tmp_path: Path) -> None:
    done = _cli("query", f"copy usage_summary to '{tmp_path}/x.csv'", "--warehouse", str(warehouse))
    [line] = done.stderr.strip().splitlines()
    assert "query refused" in line and "disabled by configuration" in line
    done = _cli("query", "set threads = 1", "--warehouse", str(warehouse))
    [line] = done.stderr.strip().splitlines()
    assert "query refused" in line and "locked" in line


def test_the_shell_refuses_the_attack_and_keeps_answering(warehouse: Path, tmp_path: Path) -> None:
    stolen = tmp_path / "stolen.csv"
    script = f"copy usage_summary to '{stolen}';\nselect count(*) as n from usage_summary;\n"
    done = _cli("shell", "--warehouse", str(warehouse), stdin=script)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not stolen.exists()
    assert "query refused" in done.stdout + done.stderr
    assert "shape: (1, 1)" in done.stdout  # the next statement still ran


def test_readme_and_example_queries_still_run(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["query", "select * from table1_broadband_usage", "--warehouse", str(warehouse)]) == 0
    assert "OUT" in capsys.readouterr().out
    runs = {
        "top_ports.sql": [f"week={WEEK}", "service=broadband", "limit=5"],
        "heavy_users.sql": [f"week={WEEK}", "threshold_gb=10"],
        "download_trend.sql": [],
    }
    for name, params in runs.items():
        args = ["query", "--file", str(EXAMPLES / name), "--warehouse", str(warehouse)]
        assert cli.main([*args, *(f"--param={p}" for p in params)]) == 0, name
        printed = capsys.readouterr().out
        assert "shape: (" in printed and "shape: (0," not in printed, (name, printed)
    done = _cli(
        "query",
        "--file",
        str(EXAMPLES / "top_ports.sql"),
        "--warehouse",
        str(warehouse),
        "--param",
        f"week={WEEK}",
        "--param",
        "service=mobile",
        "--param",
        "limit=1",
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert "443" in done.stdout


def test_every_table_and_view_can_be_selected(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    con = duckdb.connect(str(warehouse / CATALOG), read_only=True)
    try:
        names = [r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()]
    finally:
        con.close()
    assert {"usage_summary", "table1_broadband_usage", "hourly_weekday_traffic", "_catalog"} <= set(names)
    for name in names:
        assert cli.main(["query", f"select count(*) as n from {name}", "--warehouse", str(warehouse)]) == 0
        assert "shape: (1, 1)" in capsys.readouterr().out
    # What `weekly` and `demo` print after publishing goes through the same connection.
    cli._print_tables(warehouse, WEEK)
    assert "table4_mobile_ports" in capsys.readouterr().out
