"""`trafficreport shell` in a real terminal (pexpect drives a pty): Up recalls the previous
statement, also in the next session; Ctrl-C drops the line being typed (Enter then gives a prompt,
not a traceback) or stops a running query; .tables and .schema answer; Ctrl-D quits with exit 0."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

from flows.publish import build_catalog
from tests.conftest import WEEK
from tests.flows.test_analyst_sandbox import publish_tiny_week
from transforms.tables.registry import BY_NAME, WEEKLY_TABLES

pytestmark = pytest.mark.slow

TRAFFICREPORT = Path(sys.executable).with_name("trafficreport")
PROMPT = "trafficreport> "
UP = "\x1b[A"


@pytest.fixture()
def warehouse(tmp_path: Path) -> Path:
    folder = tmp_path / "warehouse"
    publish_tiny_week(folder, WEEK, "run-a")
    build_catalog(folder)
    return folder


def _shell(warehouse: Path, home: Path) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env.update(HOME=str(home), TERM="xterm")
    child = pexpect.spawn(
        str(TRAFFICREPORT),
        ["shell", "--warehouse", str(warehouse)],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 160),
    )
    child.expect_exact(PROMPT)
    return child


def _answer(child: pexpect.spawn, line: str) -> str:
    """What the shell printed for `line` (sent with Enter), up to its next prompt."""
    child.send(line + "\r")
    child.expect_exact(PROMPT)
    return str(child.before)


def _quit(child: pexpect.spawn) -> str:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and child.signalstatus is None
    return str(child.before)


def test_history_ctrl_c_dot_commands_and_ctrl_d(warehouse: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shell = _shell(warehouse, home)
    seen = []

    seen.append(_answer(shell, "select 41 + 1 as answer;"))
    assert "42" in seen[-1]
    # Up recalls the statement: without history it would be an empty line (no rows) or "^[[A".
    seen.append(_answer(shell, UP))
    assert "select 41 + 1 as answer;" in seen[-1] and "42" in seen[-1]

    # A statement typed over two lines is recalled as one.
    shell.send("select 6 * 7\r")
    shell.expect_exact("...> ")
    assert "42" in _answer(shell, "  as product;")
    seen.append(_answer(shell, UP))
    assert "select 6 * 7 as product;" in seen[-1] and "product" in seen[-1].split("product;")[1]

    tables = _answer(shell, ".tables")
    for name in WEEKLY_TABLES:
        assert name in tables
    assert "table1_broadband_usage" in tables

    schema = _answer(shell, ".schema usage_summary")
    for column in BY_NAME["usage_summary"].columns:
        assert column.name in schema and column.description in schema
    assert "DOUBLE" in schema
    assert "no table or view named 'nosuch'" in _answer(shell, ".schema nosuch")
    assert ".schema TABLE" in _answer(shell, "help")

    # Ctrl-C drops a half-typed statement: Enter gives a prompt, and the next statement runs alone.
    shell.send("select * from usage_summary where")
    shell.expect_exact("where")  # echoed by readline: the line is being edited when Ctrl-C comes
    shell.sendintr()
    shell.expect_exact(PROMPT)
    seen.append(str(shell.before))
    seen.append(_answer(shell, ""))
    # Ctrl-C also stops a running query (this one would count for minutes) and the prompt returns.
    shell.send("select count(*) from range(100000000000) a;\r")
    shell.expect_exact("range(100000000000) a;\r\n")  # read: the query is starting
    time.sleep(0.5)
    shell.sendintr()
    shell.expect_exact(PROMPT)
    seen.append(str(shell.before))
    assert "query stopped (Ctrl-C)" in seen[-1]
    seen.append(_answer(shell, "select 7 as seven;"))
    assert "seven" in seen[-1] and "query refused" not in seen[-1]

    seen.append(_quit(shell))
    assert not any("Traceback" in text or "KeyboardInterrupt" in text for text in seen)

    # The history outlives the session: a new shell recalls the last statement with Up.
    history = home / ".local" / "state" / "trafficreport" / "shell_history"
    assert "select 7 as seven;" in history.read_text()
    assert history.stat().st_mode & 0o077 == 0
    again = _shell(warehouse, home)
    recalled = _answer(again, UP)
    assert "select 7 as seven;" in recalled and "seven" in recalled.split("select 7 as seven;")[1]
    _quit(again)
