"""What a user's mistake or a failed run ends in: one line on stderr and a documented exit code.

`trafficreport` maps exceptions to exit codes in one place (`flows.cli.main`):

| exit | meaning |
| ---: | --- |
| 0 | done |
| 1 | the run failed (bad input, failed audit, late feed, busy week, storage error, ...) |
| 2 | the command was given wrongly (arguments, settings, paths, keys): nothing was started |
| 130 | interrupted (Ctrl-C / SIGINT / SIGTERM) |

Messages of these exceptions are shown to the user and stored by Prefect (state messages, logs):
they name files, lines, offsets and reasons, never the content of an input that holds identities.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """The command, its settings, paths or keys are wrong: nothing was started (exit 2)."""


class RunFailed(RuntimeError):
    """A run failed for a reason its message states in one line (exit 1)."""


class Interrupted(RuntimeError):
    """The run was interrupted before publication: nothing was published (exit 130)."""
