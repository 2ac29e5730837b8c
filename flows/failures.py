"""What a user's mistake or a failed run ends in: one line on stderr and a documented exit code.

`trafficreport` maps exceptions to exit codes in one place (`flows.cli.main`):

| exit | meaning |
| ---: | --- |
| 0 | done |
| 1 | the run failed (bad input, failed audit, late feed, busy week, storage error, ...) |
| 2 | the command was given wrongly (arguments, settings, paths, keys): nothing was started |
| 130 | interrupted (Ctrl-C / SIGINT / SIGTERM) |

Every error the pipeline raises on purpose is defined here (transforms/ has its one,
`transforms.errors.InputFormatError`, for unreadable input): UsageError (exit 2), and, exit 1,
RunFailed, AuditFailed, MissingFeed, WeekBusy, ConcurrentPublication, ConcurrentUpdate,
ChildProcessDied; Interrupted (exit 130). `flows.publish.QueryRefused` (exit 2) is also a
duckdb.Error, so it lives beside the DuckDB code.

Messages of these exceptions are shown to the user and stored by Prefect (state messages, logs):
they name files, lines, offsets and reasons, never the content of an input that holds identities.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB's carry the SQL and a caret below it; an
    OSError's reason without the path)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class UsageError(Exception):
    """The command, its settings, paths or keys are wrong: nothing was started (exit 2)."""


class RunFailed(RuntimeError):
    """A run failed for a reason its message states in one line (exit 1)."""


class Interrupted(RuntimeError):
    """The run was interrupted before publication: nothing was published (exit 130)."""


class AuditFailed(RuntimeError):
    """A week whose checkpoints failed: nothing of it was published."""


class MissingFeed(FileNotFoundError):
    """A source delivered no files for some day of the week: the week cannot be complete yet."""


class WeekBusy(RuntimeError):
    """Another run holds the week: this one does not start on it."""


class ConcurrentPublication(RuntimeError):
    """Another run published this week after this run started: this run does not overwrite it."""


class ConcurrentUpdate(RuntimeError):
    """Someone else changed a file between our read and our conditional write."""


class ChildProcessDied(RuntimeError):
    """A worker process ended without a result (killed, or out of memory)."""
