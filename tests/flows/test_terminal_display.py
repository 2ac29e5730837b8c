"""`trafficreport demo` watched in a real 160x50 terminal (tmux): log lines print above the live
progress display, never into it; each bar is left once in the scrollback; no telemetry notice, no
GX chatter, no traceback; the output ends with the run's summary and the report's path."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, WEEK

TRAFFICREPORT = Path(sys.executable).with_name("trafficreport")
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (INFO|WARNING|ERROR) +\| ")
STAGES = ("feeds", "ingest", "attribute", "combine", "reconcile", "audit", "publish", "report")


def _tmux_available() -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux not installed: .ci/run installs it with tests/tools/install-debian-tools.sh")
        pytest.skip("tmux not installed (tests/tools/install-debian-tools.sh installs it)")


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> tuple[list[str], Path]:
    """The whole scrollback of a tiny demo run in a 160x50 tmux terminal, and its warehouse."""
    _tmux_available()
    root = tmp_path_factory.mktemp("terminal")
    warehouse = root / "warehouse"
    # The smallest week the demo takes (20 users, 20 phones): the display, not the numbers, is tested.
    command = [
        str(TRAFFICREPORT),
        "demo",
        "--users",
        "20",
        "--phones",
        "20",
        *("--landing", str(root / "landing"), "--warehouse", str(warehouse), "--staging", str(root / "staging")),
    ]
    # A fresh PREFECT_HOME would show Prefect's first-run telemetry notice, and CI variables hide it.
    environment = {
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(root / "prefect-home"),
        "TRAFFICREPORT_HMAC_KEY": TEST_KEY,
        "HOME": str(root),
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
    }
    script = root / "run.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in environment.items())
    script.write_text(f"cd {shlex.quote(str(root))}\n{exports}{shlex.join(command)}\necho EXIT=$?\nsleep 600\n")
    # Its own tmux server (socket), started with nothing of this environment but the script's.
    tmux = ["tmux", "-L", f"trafficreport-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "160", "-y", "50", "env", "-i", "bash", str(script)],
        check=True,
        env={"PATH": os.environ["PATH"], "TERM": "xterm-256color"},
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            captured = subprocess.run(
                [*tmux, "capture-pane", "-p", "-J", "-S", "-"], capture_output=True, text=True, check=True
            ).stdout
            if "EXIT=" in captured or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    lines = captured.rstrip("\n").splitlines()
    return [line.rstrip() for line in lines], warehouse


def test_the_demo_ends_well(screen: tuple[list[str], Path]) -> None:
    lines, _ = screen
    assert "EXIT=0" in lines, "\n".join(lines[-60:])
    text = "\n".join(lines)
    for noise in ("Traceback", "Prefect collects anonymous usage data", "Created temporary directory"):
        assert noise not in text


def test_each_progress_bar_is_left_once_and_no_log_line_is_glued_to_a_bar(screen: tuple[list[str], Path]) -> None:
    lines, _ = screen
    for stage, unit in (("ingest", "files"), ("attribute", "flows")):
        bars = [line for line in lines if f" {stage} (" in line and unit in line]
        assert len(bars) == 1, bars
        assert bars[0].startswith(f"✓ {stage} (3 exporters, 3 done)")
    for line in lines:
        if "| INFO" in line or "| WARNING" in line:
            assert LOG_LINE.match(line), line  # a log line starts its own line
            assert "━" not in line  # and holds no bar
    for stage in STAGES:
        assert sum(f" stage={stage} " in line for line in lines) == 1, stage
    # Task runs' "Completed" lines and the temporary server's addresses are not shown.
    assert not any("Finished in state Completed()" in line and "Task run" in line for line in lines)


def test_the_output_ends_with_the_summary_and_the_report_path(screen: tuple[list[str], Path]) -> None:
    lines, warehouse = screen
    end = lines.index("EXIT=0")
    starts = [i for i, line in enumerate(lines) if line.startswith(f"week {WEEK} published by run ")]
    assert len(starts) == 1
    summary = lines[starts[0] : end]
    assert [line.split()[0] for line in summary if line.startswith("  ") and not line.startswith("   ")] == [
        "audit",
        "tables",
        "report",
        "catalog",
        "stages",
    ]
    assert summary[1].startswith("  audit     passed (")
    report = warehouse / "reports" / str(WEEK) / "report.html"
    assert f"  report    {report}" in summary
    assert report.exists()
    assert f"  catalog   {warehouse / 'catalog.duckdb'}  (`trafficreport shell`)" in summary
    stages = " ".join(" ".join(summary[summary.index(next(s for s in summary if s.startswith("  stages"))) :]).split())
    for stage in STAGES:
        assert re.search(rf"\b{stage} \d+\.\d s", stages), stage
