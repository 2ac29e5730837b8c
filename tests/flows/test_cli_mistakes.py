"""Each mistake a user makes on the command line ends in one line, `trafficreport: <what>`, with the
exit code README.md documents (2: given wrongly, nothing started), no traceback, and no Prefect
server started for it (the arguments are checked first)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.publish import build_catalog
from tests.conftest import WEEK
from tests.flows.test_analyst_sandbox import publish_tiny_week

pytestmark = pytest.mark.slow  # a warehouse and a catalog are built, commands run as subprocesses

TRAFFICREPORT = Path(sys.executable).with_name("trafficreport")
TOP_PORTS = Path(__file__).resolve().parents[2] / "sql" / "examples" / "top_ports.sql"

# (arguments, the start of the one line on stderr); every one exits 2. {warehouse} and {landing} are filled in.
MISTAKES = {
    "a week that is not a Monday": (
        ["weekly", "--week", "2024-06-04"],
        "trafficreport: --week 2024-06-04: a week starts on a Monday; 2024-06-04 is a Tuesday",
    ),
    "a week that has not ended": (
        ["weekly", "--week", "2030-01-07"],
        "trafficreport: --week 2030-01-07: the week has not ended yet (it ends 2030-01-14 00:00 JST)",
    ),
    "a date that is not a date": (
        ["weekly", "--week", "2024-6-4"],
        "trafficreport: weekly: argument --week: '2024-6-4' is not a date (YYYY-MM-DD)",
    ),
    "a demo week too small to run": (
        ["demo", "--users", "5"],
        "trafficreport: demo: argument --users: 5: at least 20 (the smallest demo week tested end to end)",
    ),
    "a generated week without users": (
        ["generate", "--week", "2024-06-03", "--out", "landing", "--phones", "0"],
        "trafficreport: generate: argument --phones: 0: at least 1",
    ),
    "a backfill range that is not one": (
        ["backfill", "--from", "20x9", "--to", "2024"],
        "trafficreport: --from 20x9 --to 2024: expected YYYY, YYYY-MM or YYYY-MM-DD, got '20x9'",
    ),
    "a query missing a --param": (
        ["query", "--file", str(TOP_PORTS), "--param", "week=2024-06-03", "--warehouse", "{warehouse}"],
        "trafficreport: query: no value for $limit, $service: give each with --param name=value",
    ),
    "a --param that is not name=value": (
        ["query", "select 1", "--param", "week", "--warehouse", "{warehouse}"],
        "trafficreport: --param 'week': expected name=value",
    ),
    "a calibration check of a week never generated": (
        ["check-calibration", "--week", "2023-06-05", "--landing", "{landing}", "--warehouse", "{warehouse}"],
        "trafficreport: check-calibration --week 2023-06-05: not generated in {landing}; generated: 2024-06-03",
    ),
    "a calibration check of a landing zone with no generated week": (
        ["check-calibration", "--landing", "{warehouse}", "--warehouse", "{warehouse}"],
        "trafficreport: check-calibration: {warehouse} holds no generated week",
    ),
    "a query of an unknown table": (
        ["query", "select * from usage_summaries", "--warehouse", "{warehouse}"],
        "trafficreport: query refused: Catalog Error: Table with name usage_summaries does not exist!",
    ),
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mistakes") / "warehouse"
    publish_tiny_week(folder, WEEK, "run-a")
    build_catalog(folder)
    # A landing zone that holds one generated week's ground truth, as `generate` leaves it.
    (folder.parent / "landing" / "_truth" / str(WEEK)).mkdir(parents=True)
    (folder.parent / "landing" / "_truth" / str(WEEK) / "spec.json").write_text("{}")
    return folder


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    prefect_home: Path


@pytest.fixture(scope="module")
def outcomes(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every mistake run as its own `trafficreport` process, all at once (a second or two each)."""
    running = {}
    for name, (arguments, _) in MISTAKES.items():
        folder = tmp_path_factory.mktemp("mistake")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "TRAFFICREPORT_"))}
        # No PREFECT_API_URL: a command that got as far as Prefect would start its temporary server,
        # whose database would appear in this PREFECT_HOME.
        environment.update(PREFECT_HOME=str(folder / "prefect-home"), TRAFFICREPORT_HMAC_KEY="test-only-pseudonym-key")
        places = {"warehouse": warehouse, "landing": warehouse.parent / "landing"}
        command = [str(TRAFFICREPORT), *(a.format(**places) for a in arguments)]
        running[name] = (
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder, env=environment
            ),
            folder / "prefect-home",
        )
    results = {}
    for name, (process, prefect_home) in running.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = Outcome(process.returncode, stdout, stderr, prefect_home)
    return results


@pytest.mark.parametrize("name", MISTAKES)
def test_a_mistake_ends_in_one_line_and_exit_2(name: str, outcomes: dict[str, Outcome], warehouse: Path) -> None:
    done = outcomes[name]
    expected = MISTAKES[name][1].format(warehouse=warehouse, landing=warehouse.parent / "landing")
    assert done.code == 2, done.stderr[-2000:]
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(expected), line
    # Nothing started: no Prefect server database.
    assert not done.prefect_home.exists() or not list(done.prefect_home.rglob("*.db"))
