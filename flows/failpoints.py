"""Named steps where fault tests kill the process, as a crash or an OOM kill would.

`TRAFFICREPORT_FAILPOINT=publish:before-manifest trafficreport weekly ...` ends the process with
SIGKILL when it reaches that step: no cleanup, no exception handlers, no flushed buffers.
Without the variable a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "TRAFFICREPORT_FAILPOINT"
STEPS = (
    "weekly:audited",
    "publish:data-written",
    "publish:before-manifest",
    "publish:manifest-swapped",
    "weekly:catalog-built",
)


def reach(step: str) -> None:
    """Kills this process with SIGKILL if $TRAFFICREPORT_FAILPOINT names `step`."""
    if step not in STEPS:
        raise ValueError(f"unknown failpoint {step!r}")
    if os.environ.get(VARIABLE) == step:
        os.kill(os.getpid(), signal.SIGKILL)
