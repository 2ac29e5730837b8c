"""Steps run in a worker process: result, progress, exceptions and a dying worker come back."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from flows import progress
from flows.processes import ChildProcessDied, run_in_process
from transforms.errors import InputFormatError


def _counts_up(n: int) -> tuple[int, int]:
    for done in range(1, n + 1):
        progress.report("ingest", "r1", done, n)
    return os.getpid(), n * 2


def _raises_input_error() -> None:
    raise InputFormatError("flows/r1/a.ipfix", "byte 16", "set length 2 invalid", 8)


class _Unpicklable(Exception):
    def __init__(self, secret: str, handle: object) -> None:
        super().__init__(secret)
        self.handle = handle


def _raises_unpicklable() -> None:
    raise _Unpicklable("user u1@bb.example.jp", lambda: None)


def _dies() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_result_comes_from_another_process_and_its_progress_reaches_the_listeners() -> None:
    seen: list[tuple[str, str, int, int]] = []
    with progress.listening(lambda *event: seen.append(event)):
        pid, doubled = run_in_process(_counts_up, 3)
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:  # reports are relayed by a thread
            time.sleep(0.05)
    assert pid != os.getpid() and doubled == 6
    assert seen == [("ingest", "r1", 1, 3), ("ingest", "r1", 2, 3), ("ingest", "r1", 3, 3)]


def test_workers_are_reused_from_one_step_to_the_next() -> None:
    pids = {run_in_process(_counts_up, 1)[0] for _ in range(6)}
    assert os.getpid() not in pids and len(pids) <= (os.cpu_count() or 1)


def test_an_input_error_is_raised_here_as_it_was_there() -> None:
    with pytest.raises(InputFormatError) as caught:
        run_in_process(_raises_input_error)
    assert (caught.value.source, caught.value.position) == ("flows/r1/a.ipfix", "byte 16")


def test_an_exception_that_cannot_travel_becomes_its_type_name_without_its_message() -> None:
    with pytest.raises(RuntimeError) as caught:
        run_in_process(_raises_unpicklable)
    assert "_Unpicklable" in str(caught.value) and "u1@" not in str(caught.value)


def test_a_worker_killed_mid_step_is_a_clear_failure_and_the_next_step_runs() -> None:
    with pytest.raises(ChildProcessDied, match="_dies ended without a result"):
        run_in_process(_dies)
    assert run_in_process(_counts_up, 2)[1] == 4


def test_a_worker_outlives_the_thread_that_first_needed_it() -> None:
    # The kernel's parent-death signal follows the thread that forked: a worker forked by a task
    # thread that has ended must still serve the next step.
    first: list[int] = []
    starter = threading.Thread(target=lambda: first.append(run_in_process(_counts_up, 1)[0]))
    starter.start()
    starter.join()
    time.sleep(1.0)
    os.kill(first[0], 0)  # raises if the worker was killed when its thread ended
    pids = {run_in_process(_counts_up, 1)[0] for _ in range(4)}
    assert first[0] in pids


def _variable(name: str) -> str | None:
    return os.environ.get(name)


def test_a_reused_worker_sees_the_environment_of_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 endpoints and credentials come from the environment, which may change after a worker started.
    run_in_process(_counts_up, 1)
    monkeypatch.setenv("TRAFFICREPORT_TEST_VARIABLE", "second")
    assert run_in_process(_variable, "TRAFFICREPORT_TEST_VARIABLE") == "second"
    monkeypatch.delenv("TRAFFICREPORT_TEST_VARIABLE")
    assert run_in_process(_variable, "TRAFFICREPORT_TEST_VARIABLE") is None
