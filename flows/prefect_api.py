"""The Prefect API a command talks to: the configured server ($PREFECT_API_URL), or a temporary one
this process starts and that dies with it.

Prefect's own ephemeral server is a child process that outlives a parent killed by SIGKILL (it kept
running for minutes). The one started here asks the kernel to send it SIGTERM when its parent dies
(Linux `PR_SET_PDEATHSIG`), and it must be started before Prefect is imported, so that every
Prefect client of this process reads its address from the environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

_started_url: str | None = None
STARTUP_SECONDS = 90.0


def configured_api_url() -> str | None:
    """The Prefect server named by the environment (or by Prefect's settings, once it is imported),
    unless it is the temporary one started here."""
    url = os.environ.get("PREFECT_API_URL")
    if not url and "prefect" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    elif not url:
        url = _profile_api_url()
    return url if url and url != _started_url else None


def temporary_server_url() -> str | None:
    """The API URL of the temporary server this process started, while it runs."""
    return _started_url


def _profile_api_url() -> str | None:
    """PREFECT_API_URL of the active Prefect profile (`prefect config set PREFECT_API_URL=...`),
    read from the profiles file without importing Prefect."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    value = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(value) if value else None


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies, whatever killed it."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # Ctrl-C in the terminal goes to the whole foreground group: the parent decides when to stop it.
    os.setpgrp()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The API URL to use for this block: $PREFECT_API_URL if set, else a temporary local server
    (its database in $PREFECT_HOME, as Prefect's own ephemeral mode) stopped when the block ends
    and killed by the kernel if this process dies first."""
    global _started_url
    configured = configured_api_url()
    if configured:
        yield configured
        return
    if "prefect" in sys.modules:
        raise RuntimeError("the temporary Prefect server must be started before Prefect is imported")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    server = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )
    try:
        _wait_until_healthy(server, url)
        os.environ["PREFECT_API_URL"] = url
        _started_url = url
        yield url
    finally:
        drain_prefect_clients()
        if _started_url == url:
            os.environ.pop("PREFECT_API_URL", None)
            _started_url = None
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def drain_prefect_clients() -> None:
    """Sends the logs and events still queued in this process to the server while it still runs
    (otherwise their workers retry against a stopped server at exit, for a minute)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


def _wait_until_healthy(server: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {server.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the temporary Prefect server did not answer within {STARTUP_SECONDS:.0f} s")
