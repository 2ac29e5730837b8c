"""`trafficreport shell`: a read-only SQL prompt on catalog.duckdb, with line editing and history
(readline, kept in the user's state folder), dot commands, Ctrl-C to drop the line being typed or
stop a query, Ctrl-D to quit."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import duckdb
import polars as pl

from flows import interrupts
from flows.publish import query_frame, query_refused
from transforms.tables.registry import BY_NAME

PROMPT = "trafficreport> "
CONTINUATION = "          ...> "
HISTORY_LENGTH = 1000

HELP = """\
SQL statements end with ';' and may span lines; the catalog is read-only.
  .tables           the published tables, the report's views and the catalog's own tables
  .schema TABLE     a table's or view's columns, their types and (for published tables) meaning
  .help             this text (also: help)
  .quit             quit (also: Ctrl-D, exit, quit)
Up / Down recall earlier statements; history: {history}.
Ctrl-C drops the line being typed or stops a running query.
sql/README.md documents every table and column; sql/examples/ has queries to start from."""


def history_path() -> Path:
    """The prompt's history file: $XDG_STATE_HOME/trafficreport/shell_history (~/.local/state/...),
    per user, never beside a shared catalog."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "trafficreport" / "shell_history"


@contextlib.contextmanager
def _line_editing(interactive: bool) -> Iterator[Path | None]:
    """readline editing and history for an interactive prompt (history loaded before, saved after,
    readable by its owner only: statements may name what an analyst looked for)."""
    if not interactive:
        yield None
        return
    try:
        import readline
    except ImportError:  # a Python built without readline: input() still works, unedited
        yield None
        return
    path = history_path()
    readline.set_history_length(HISTORY_LENGTH)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            readline.write_history_file(path)


def _remember_statement(lines: list[str]) -> None:
    """A statement typed over several lines goes into the history as one entry, so Up recalls it whole."""
    if len(lines) < 2 or "readline" not in sys.modules:
        return
    import readline

    length = readline.get_current_history_length()
    typed = [readline.get_history_item(i) for i in range(max(1, length - len(lines) + 1), length + 1)]
    if typed != lines:  # blank lines are not in the history: leave it as it is
        return
    for _ in lines:
        readline.remove_history_item(readline.get_current_history_length() - 1)
    readline.add_history(" ".join(line.strip() for line in lines))


class Shell:
    """Reads statements and dot commands from `stdin`, answers on `out`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, max_rows: int, out: TextIO | None = None) -> None:
        self.con, self.max_rows, self.out = con, max_rows, out or sys.stdout
        self.history: Path | None = None

    def say(self, text: str) -> None:
        """Prints a line of the shell's answer at once (a pipe reading it sees it before the next prompt)."""
        print(text, file=self.out, flush=True)

    def run(self, interactive: bool) -> None:
        """Reads until Ctrl-D (EOF) or .quit; each complete statement is run and its rows printed."""
        # Ctrl-C belongs to the prompt (drop the line, stop a query), not to the command's
        # interrupt handling; SIGTERM still ends the shell through it (flows.interrupts).
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with _line_editing(interactive) as self.history:
                self._loop(interactive)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _loop(self, interactive: bool) -> None:
        buffer: list[str] = []
        while True:
            try:
                line = input((CONTINUATION if buffer else PROMPT) if interactive else "")
            except EOFError:
                if interactive:
                    self.say("")
                return
            except KeyboardInterrupt:
                if interrupts.requested():  # SIGTERM, not the operator's Ctrl-C at the prompt
                    raise
                buffer = []
                self.say("^C" if interactive else "")
                continue
            if not buffer and not line.strip():
                continue
            if not buffer and _is_command(line):
                if not self.command(line.strip()):
                    return
                continue
            buffer.append(line)
            if line.rstrip().endswith(";"):
                _remember_statement(buffer)
                self.execute("\n".join(buffer).strip().rstrip(";"))
                buffer = []

    def execute(self, statement: str) -> None:
        """Runs one statement and prints its rows, a refusal in one line, or that it was stopped."""
        # DuckDB holds the thread that runs a query until it ends, so a Ctrl-C would wait for it:
        # the query runs in a worker and this thread, which gets the signal, interrupts it.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shell-query")
        running: Future[pl.DataFrame] | None = None
        try:
            running = pool.submit(query_frame, self.con, statement)
            frame = _wait(running)
        except KeyboardInterrupt:
            if running is not None:
                _stop(self.con, running)
            if interrupts.requested():
                raise
            self.say("query stopped (Ctrl-C)")
            return
        except duckdb.InterruptException:
            self.say("query stopped (Ctrl-C)")
            return
        except duckdb.Error as exc:
            self.say(str(query_refused(exc)))
            return
        finally:
            pool.shutdown(wait=False)
        with pl.Config(tbl_rows=self.max_rows, tbl_cols=20):
            self.say(str(frame))

    def command(self, line: str) -> bool:
        """A dot command (or help / quit); False when the shell should end."""
        word, _, rest = line.rstrip(";").partition(" ")
        word, rest = word.lower(), rest.strip()
        if word in (".quit", ".exit", "quit", "exit"):
            return False
        if word in (".help", "help", "?", ".?"):
            self.say(HELP.format(history=self.history or "none (not a terminal)"))
        elif word == ".tables":
            self.say(self.tables())
        elif word == ".schema":
            self.say(self.schema(rest) if rest else "which table? e.g. `.schema usage_summary` (.tables lists them)")
        else:
            self.say(f"unknown command {word}: .help lists the commands")
        return True

    def _catalog_tables(self) -> list[tuple[str, str]]:
        return [
            (str(name), str(kind))
            for name, kind in self.con.execute(
                "select table_name, table_type from information_schema.tables order by table_name"
            ).fetchall()
        ]

    def tables(self) -> str:
        """The published tables, the report's views and the catalog's bookkeeping, one group a line."""
        rows = self._catalog_tables()
        published = [n for n, kind in rows if kind == "BASE TABLE" and not n.startswith("_")]
        views = [n for n, kind in rows if kind == "VIEW"]
        own = [n for n, kind in rows if kind == "BASE TABLE" and n.startswith("_")]
        return "\n".join(
            [
                "published tables: " + ", ".join(published),
                "views (the report's tables and figures): " + ", ".join(views),
                "about the catalog: " + ", ".join(own),
            ]
        )

    def schema(self, name: str) -> str:
        """One line per column of table or view `name`: its name, type and meaning."""
        names = {n.lower(): n for n, _ in self._catalog_tables()}
        table = names.get(name.strip('"').lower())
        if table is None:
            return f"no table or view named {name!r}: .tables lists them"
        columns: list[Any] = self.con.execute(
            "select column_name, data_type from information_schema.columns where table_name = $name "
            "order by ordinal_position",
            {"name": table},
        ).fetchall()
        declared = BY_NAME.get(table)
        meaning = {c.name: c.description for c in declared.columns} if declared else {}
        if declared:  # the catalog adds `run` to every published row
            meaning.setdefault("run", "the run that published the row")
        width = max(len(str(c)) for c, _ in columns)
        type_width = max(len(str(t)) for _, t in columns)
        header = f"{table}: {declared.grain}" if declared else table
        lines = [header]
        for column, dtype in columns:
            lines.append(f"  {column:<{width}}  {dtype:<{type_width}}  {meaning.get(column, '')}".rstrip())
        return "\n".join(lines)


def _wait(running: Future[pl.DataFrame]) -> pl.DataFrame:
    """The query's rows; short waits, so that a Ctrl-C reaches this thread while it runs."""
    while True:
        try:
            return running.result(timeout=0.2)
        except TimeoutError:
            continue


def _stop(con: duckdb.DuckDBPyConnection, running: Future[pl.DataFrame]) -> None:
    """Interrupts the running query and waits for its worker to let go of the connection (a second
    Ctrl-C meanwhile changes nothing: the connection must not be used while the query unwinds)."""
    if running.cancel():  # not started yet
        return
    while not running.done():
        con.interrupt()  # again while it runs: a first one may land before the query begins
        with contextlib.suppress(KeyboardInterrupt, Exception):
            running.result(timeout=0.2)


def _is_command(line: str) -> bool:
    word = line.strip().rstrip(";").split(" ")[0].lower()
    return word.startswith(".") or word in ("help", "?", "quit", "exit")


def run_shell(con: duckdb.DuckDBPyConnection, max_rows: int) -> None:
    """The prompt on an open catalog, edited with readline when stdin and stdout are a terminal."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    Shell(con, max_rows).run(interactive)
