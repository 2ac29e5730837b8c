"""A careless or hostile operator: broken identity inputs never leak identities (terminal, logs,
Prefect's database), mistakes are refused before any work in one line, a killed run frees its week
and its staging folder, Ctrl-C stops a run before publication, and input delivered twice fails
the audit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows.failures import RunFailed
from flows.landing import directory_file
from flows.publish import read_manifest
from flows.settings import Settings
from flows.storage import local_path
from flows.weekly import weekly_report
from tests.conftest import TEST_KEY, WEEK
from transforms.errors import InputFormatError

CLI = [sys.executable, "-m", "flows.cli"]
TOKEN = re.compile(r"[0-9A-Za-z@._+-]+")


def _identities(landing: Path) -> set[str]:
    directory = pl.read_csv(Path(str(directory_file(landing, dt.date.max))), infer_schema=False)
    found = set(directory["subscription_id"].drop_nulls()) | set(directory["login"].drop_nulls())
    found |= {p for cell in directory["phone_numbers"].drop_nulls() for p in cell.split(";") if p}
    return found


def _copy_landing(landing: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "landing"
    shutil.copytree(landing, copy)
    return copy


def _unclose_a_quote(landing: Path) -> Path:
    """The directory with one quote never closed on its line 3 (a login cell)."""
    path = Path(str(directory_file(landing, dt.date.max)))
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[3] = '"' + cells[3]
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=timeout)


def _env(api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(TRAFFICREPORT_HMAC_KEY=TEST_KEY, **extra)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _place_args(settings: Any, landing: Path | None = None) -> list[str]:
    return [
        "--landing",
        str(landing or settings.landing),
        "--warehouse",
        str(settings.warehouse),
        "--staging",
        str(settings.staging),
    ]


def _prefect_database_tokens() -> set[str]:
    """Every token of every text cell of the Prefect test server's database (logs, states, events...)."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())
    path = url.split(":///", 1)[1]
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        tokens: set[str] = set()
        for table in tables:
            for row in con.execute(f'select * from "{table}"'):
                for cell in row:
                    if isinstance(cell, str | bytes):
                        text = cell.decode("latin-1") if isinstance(cell, bytes) else cell
                        tokens |= set(TOKEN.findall(text))
        return tokens
    finally:
        con.close()


# 1, 12: the directory


@pytest.mark.parametrize(
    ("content", "position", "reason"),
    [
        (b"", "line 1", "empty file"),
        (b"subscription_id,service,customer_type,login,phone_numbers\n", "line 2", "header only"),
        (
            b"subscription_id,service,customer_type,login,phone_numbers\nBB1,broadband,personal,u1@x,\nBB2,broadband,personal,u2@x,,x\n",
            "line 3",
            "6 fields, the header has 5",
        ),
        (
            b'subscription_id,service,customer_type,login,phone_numbers\nBB1,broadband,personal,"u1@x,\nBB2,broadband,personal,u2@x,\n',
            "line 2",
            "quoted field is never closed",
        ),
        (
            b"subscription_id,service,customer_type,login,phone_numbers\nBB1,broadband,personal,u1@x,\nBB1,broadband,personal,u2@x,\n",
            "line 3",
            "repeats the one on line 2",
        ),
        (
            b"subscription_id,service,customer_type,login,phone_numbers\nBB1,broadband,vip,u1@x,\n",
            "line 2",
            "customer_type is not one of",
        ),
        (
            b"subscription_id,service,customer_type,phone_numbers\nBB1,broadband,personal,\n",
            "line 1",
            "missing columns login",
        ),
        (
            b"subscription_id,service,customer_type,login,phone_numbers\nMB1,mobile,personal,,0901;0902\nMB2,mobile,personal,,0902\n",
            "line 3",
            "phone number is also listed on line 2",
        ),
        (
            b"subscription_id,service,customer_type,login,phone_numbers\nBB1,broadband,personal,u\xe91@x,\n",
            "line 2",
            "not UTF-8",
        ),
    ],
    ids=[
        "empty",
        "header-only",
        "extra-field",
        "unclosed-quote",
        "duplicate-id",
        "unknown-type",
        "no-login-column",
        "shared-phone",
        "latin-1",
    ],
)
def test_a_directory_that_cannot_be_used_is_refused_naming_file_line_and_reason(
    content: bytes, position: str, reason: str
) -> None:
    from flows.landing import parse_directory

    with pytest.raises(InputFormatError) as caught:
        parse_directory(content, "directory/2024-06-01/subscribers.csv")
    message = str(caught.value)
    assert message.startswith(f"directory/2024-06-01/subscribers.csv: {position}: ")
    assert reason in message
    # No cell of the file is quoted: logins, ids and phone numbers are identities.
    for cell in ("u1@x", "u2@x", "BB1", "BB2", "0901", "0902", "MB2"):
        assert cell not in message


def test_a_broken_directory_ends_the_command_in_one_line_before_prefect_starts(
    small_settings: Settings, tmp_path: Path
) -> None:
    landing = _copy_landing(local_path(small_settings.landing), tmp_path)
    path = _unclose_a_quote(landing)
    identities = _identities(small_landing_of(small_settings))
    started = time.monotonic()
    result = _cli(["weekly", "--week", str(WEEK), *_place_args(small_settings, landing)], _env(None), timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"trafficreport: {path}: line 3: a quoted field is never closed (or a stray quote inside a field)"
    ]
    assert time.monotonic() - started < 30  # refused before any ingest, and before a Prefect server started
    assert not set(TOKEN.findall(result.stderr)) & identities


def small_landing_of(settings: Any) -> Path:
    return Path(str(settings.landing))


def test_broken_identity_inputs_in_a_run_leak_no_identity_to_logs_or_prefects_database(
    small_settings: Settings,
    prefect_server: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identities = _identities(small_landing_of(small_settings))
    assert len(identities) > 500
    # A directory broken in three ways the flow meets (the preflight of the command is bypassed),
    # an unforeseen error quoting an identity, then RADIUS files with CRLF lines and Latin-1 bytes.
    landing = _copy_landing(local_path(small_settings.landing), tmp_path)
    _unclose_a_quote(landing)
    settings = small_settings.model_copy(update={"landing": landing})
    with pytest.raises(InputFormatError, match=r"subscribers\.csv: line 3: a quoted field is never closed"):
        weekly_report(WEEK, settings)
    directory = Path(str(directory_file(landing, dt.date.max)))
    text = directory.read_text().replace('"', "")
    directory.write_text(text + text.splitlines()[1] + ",extra,fields\n")
    with pytest.raises(InputFormatError, match=r"fields, the header has 5"):
        weekly_report(WEEK, settings)
    directory.write_text(text + text.splitlines()[1] + "\n")
    with pytest.raises(InputFormatError, match=r"subscription_id repeats the one on line 2"):
        weekly_report(WEEK, settings)
    directory.write_text(text)
    # An error no one foresaw, whose text quotes an identity (as polars' messages quote data).
    login = next(i for i in identities if "@" in i)
    with monkeypatch.context() as patch:

        def fails_quoting(*_args: Any, **_kwargs: Any) -> None:
            raise pl.exceptions.ComputeError(f"could not convert value {login!r}")

        patch.setattr("flows.weekly.radius.build_sessions", fails_quoting)
        with pytest.raises(RunFailed, match=r"failed \(ComputeError\); the message is withheld") as caught:
            weekly_report(WEEK, settings)
        assert caught.value.__cause__ is None and login not in str(caught.value)
    # RADIUS: a CRLF copy of a day file, and a record whose User-Name carries a Latin-1 byte.
    detail = sorted((landing / "radius").rglob("detail-*"))[3]
    raw = detail.read_bytes()
    (detail.parent / "detail-crlf").write_bytes(raw.replace(b"\n", b"\r\n"))
    name = re.search(rb'User-Name = "([^"]+)"', raw)
    assert name is not None
    detail.write_bytes(raw.replace(name.group(0), b'User-Name = "' + name.group(1) + b'\xe9"', 1))
    run = weekly_report(WEEK, settings)
    assert run.published and run.ingest is not None and run.ingest.radius.quarantined_records == 1
    [problem] = run.ingest.radius.problems
    assert problem.endswith(": bytes that are not UTF-8") and name.group(1).decode() not in problem
    out, err = capfd.readouterr()
    leaked = (set(TOKEN.findall(out)) | set(TOKEN.findall(err))) & identities
    assert not leaked, sorted(leaked)[:5]
    time.sleep(2)  # events and logs reach the database asynchronously
    stored = _prefect_database_tokens()
    # The scan reads what the runs stored: their flow and the failures' messages (file and reason).
    assert {"weekly_report", "subscribers.csv", "InputFormatError", "ComputeError", "withheld"} <= stored
    leaked = stored & identities
    assert not leaked, sorted(leaked)[:5]


# 13: checked before any work


@pytest.mark.parametrize(
    ("args", "env_change", "line"),
    [
        (
            ["--week", "2024-06-04"],
            {},
            "trafficreport: --week 2024-06-04: a week starts on a Monday; 2024-06-04 is a Tuesday",
        ),
        (["--week", "2030-01-07"], {}, "trafficreport: --week 2030-01-07: the week has not ended yet"),
        (["--week", str(WEEK)], {"TRAFFICREPORT_HMAC_KEY": ""}, "trafficreport: no pseudonym key"),
        (
            ["--week", str(WEEK), "--landing", "/nonexistent/landing"],
            {},
            "trafficreport: landing zone /nonexistent/landing: no such folder",
        ),
    ],
    ids=["tuesday", "future", "no-key", "no-landing"],
)
def test_a_mistake_is_refused_in_one_line_with_exit_2_before_any_work(
    small_settings: Settings, tmp_path: Path, args: list[str], env_change: dict[str, str], line: str
) -> None:
    env = _env(None, TRAFFICREPORT_HMAC_KEY_FILE=str(tmp_path / "absent.key"))
    env.update(env_change)
    started = time.monotonic()
    result = _cli(["weekly", *_place_args(small_settings), *args], env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(line)
    assert time.monotonic() - started < 20  # no ingest, no Prefect server
    assert not Path(str(small_settings.warehouse)).exists()


def test_a_setting_of_the_wrong_type_is_refused_when_loaded(tmp_path: Path) -> None:
    from flows.failures import UsageError
    from flows.settings import load_settings

    config = tmp_path / "settings.toml"
    config.write_text('max_unattributed_share = "five percent"\n')
    with pytest.raises(UsageError, match=r"max_unattributed_share = 'five percent': expected float"):
        load_settings(config)
    config.write_text("max_unatributed_share = 0.05\n")
    with pytest.raises(UsageError, match=r"unknown settings max_unatributed_share"):
        load_settings(config)


# 5, 7: a killed run


def _processes_with_env(name: str, value: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{name}={value}".encode() in environ:
            found.append(int(proc.name))
    return found


def test_a_killed_run_without_a_server_leaves_no_server_no_held_week_and_no_staging(
    small_settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "prefect-home"
    env = _env(None, PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="INFO")
    # At stage=feeds the week is held and its staging folder made: ingest starts.
    run, _ = _weekly_until(small_settings, env, "stage=feeds")
    run.kill()  # SIGKILL: no handler, no cleanup
    run.wait()
    for pipe in (run.stdout, run.stderr):  # not read to their end: a server left behind would hold them open
        assert pipe is not None
        pipe.close()
    assert run.returncode == -signal.SIGKILL
    # The temporary Prefect server went with it (the kernel sends it SIGTERM).
    deadline = time.monotonic() + 20
    while _processes_with_env("PREFECT_HOME", str(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with_env("PREFECT_HOME", str(home)) == []
    leftover = [p.name for p in local_path(small_settings.staging).iterdir()]
    assert len(leftover) == 1  # the killed run's staging folder
    # The week is free at once (no lease to wait for) and the next run removes the leftover staging.
    started = time.monotonic()
    rerun = _cli(["weekly", "--week", str(WEEK), *_place_args(small_settings)], env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "removed the staging folders of 1 runs that are no longer running" in rerun.stderr
    assert time.monotonic() - started < 240
    assert str(WEEK) in read_manifest(small_settings.warehouse)["tables"]["usage_summary"]
    assert list(local_path(small_settings.staging).iterdir()) == []


def test_status_shows_a_week_a_run_holds_and_forgets_it_when_the_run_is_killed(
    small_settings: Settings, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from flows.locks import _file_lock\n"
            "with _file_lock(Path(sys.argv[1]) / '2024-06-03.lock', '2024-06-03', 1):\n"
            "    print('held', flush=True); time.sleep(120)",
            str(small_settings.lock_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        status = _cli(["status", *_place_args(small_settings)], _env(None), timeout=60)
        assert f"running: 2024-06-03 (file lock, pid {holder.pid} on" in status.stdout
    finally:
        holder.kill()
        holder.communicate()
    status = _cli(["status", *_place_args(small_settings)], _env(None), timeout=60)
    assert status.returncode == 0 and "running:" not in status.stdout


def test_staging_folders_of_runs_that_are_gone_are_removed_and_others_kept(tmp_path: Path) -> None:
    from flows import staging

    root = tmp_path / "staging"
    live, kept, killed_run = "20240610T000000Z-aaaaaa", "20240610T000000Z-bbbbbb", "20240610T000000Z-cccccc"
    # Not a run's folder (the staging setting may point at a folder holding other things): never removed.
    (root / "landing").mkdir(parents=True)
    old = time.time() - 3600
    os.utime(root / "landing", (old, old))
    with staging.run_folder(root, live) as folder:
        (folder / "flows.parquet").write_bytes(b"x")
        with staging.run_folder(root, kept, keep=True):
            pass
        killed = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from pathlib import Path; from flows.staging import run_folder\n"
                "with run_folder(Path(sys.argv[1]), sys.argv[2]):\n"
                "    print('in', flush=True); time.sleep(120)",
                str(root),
                killed_run,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert killed.stdout is not None and killed.stdout.readline().strip() == "in"
        assert staging.remove_stale_runs(root) == []  # the other run is still running
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
        assert staging.remove_stale_runs(root) == [killed_run]
        assert sorted(p.name for p in root.iterdir()) == [live, kept, "landing"]
    assert sorted(p.name for p in root.iterdir()) == [kept, "landing"]


# 6: Ctrl-C


def _weekly_until(settings: Any, env: dict[str, str], marker: str) -> tuple[subprocess.Popen[str], list[str]]:
    """The weekly command started with `env`, once its log shows `marker`; with the lines read so far."""
    process = subprocess.Popen(
        CLI + ["weekly", "--week", str(WEEK), *_place_args(settings)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            return process, seen
    raise AssertionError("never saw " + marker + ": " + "".join(seen[-20:]))


def _interrupt_when(settings: Any, api_url: str, marker: str) -> subprocess.CompletedProcess[str]:
    """Runs the weekly command and sends SIGINT when its log shows `marker`."""
    process, seen = _weekly_until(settings, _env(api_url, PREFECT_LOGGING_LEVEL="INFO"), marker)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, "".join(seen) + err)


def test_ctrl_c_during_the_audit_stops_the_run_before_publication_with_exit_130(
    small_settings: Settings, prefect_server: str
) -> None:
    result = _interrupt_when(small_settings, prefect_server, "stage=reconcile")
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.rstrip().splitlines()[-1].startswith("trafficreport: interrupted")
    assert "Traceback" not in result.stderr
    assert read_manifest(small_settings.warehouse)["tables"] == {}


def test_ctrl_c_after_the_manifest_swap_finishes_the_publication_and_says_so(
    small_settings: Settings, prefect_server: str
) -> None:
    result = _interrupt_when(small_settings, prefect_server, "stage=publish")
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.rstrip().splitlines()[-1] == (
        "trafficreport: interrupted after publication began: the run finished publishing"
    )
    assert str(WEEK) in read_manifest(small_settings.warehouse)["tables"]["usage_summary"]
    assert (local_path(small_settings.warehouse) / "reports" / str(WEEK) / "report.html").exists()


# 8: input delivered twice


def test_a_copied_exporter_folder_fails_the_audit_and_an_inventory_refuses_it_by_name(
    small_settings: Settings, prefect_server: str, tmp_path: Path
) -> None:
    from flows.failures import UsageError

    landing = _copy_landing(local_path(small_settings.landing), tmp_path)
    shutil.copytree(landing / "flows" / "mobile-gw-1", landing / "flows" / "mobile-gw-1.bak")
    settings = small_settings.model_copy(update={"landing": landing})
    # Through the command: a run failing inside the flow ends in one line, no traceback, exit 1.
    result = _cli(["weekly", "--week", str(WEEK), *_place_args(settings, landing)], _env(prefect_server))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith(
        f"trafficreport: week {WEEK}: audit failed, nothing published; 1 failed checks: run: no input"
    )
    assert "mobile-gw-1.bak" in last and "same content as" in last
    assert read_manifest(settings.warehouse)["tables"] == {}
    inventory = settings.model_copy(update={"exporters": ("bb-osaka-1", "bb-tokyo-1", "mobile-gw-1")})
    with pytest.raises(UsageError, match=r"exporter folders not in the inventory .*: mobile-gw-1\.bak$"):
        weekly_report(WEEK, inventory)


def test_the_same_records_from_two_exporters_are_found_whatever_their_order_or_file() -> None:
    from flows.flow_ingest import duplicate_inputs, record_set_fingerprint

    flows = pl.DataFrame(
        {
            "first_ts": [1, 2, 3],
            "last_ts": [1, 2, 4],
            "src_hi": [0, 0, 0],
            "src_lo": [10, 11, 12],
            "dst_hi": [0, 0, 0],
            "dst_lo": [20, 21, 22],
            "src_port": [443, 53, 80],
            "dst_port": [50000, 50001, 50002],
            "protocol": [6, 17, 6],
            "packets": [2, 1, 3],
            "bytes": [3000, 80, 4500],
            "exporter": ["a", "a", "a"],
        }
    )
    shuffled = flows.reverse().with_columns(exporter=pl.lit("b"))
    one_more_byte = flows.with_columns(pl.col("bytes") + pl.Series([0, 0, 1]))
    assert record_set_fingerprint(flows) == record_set_fingerprint(shuffled)
    assert record_set_fingerprint(flows) != record_set_fingerprint(one_more_byte)
    found = duplicate_inputs(
        [
            ("bb-1", [("bb-1/day/a.ipfix", "d1")], [("bb-1/day/a.ipfix", 3, record_set_fingerprint(flows))]),
            ("bb-2", [("bb-2/day/b.pcap", "d2")], [("bb-2/day/b.pcap", 3, record_set_fingerprint(shuffled))]),
            ("bb-3", [("bb-3/day/c.ipfix", "d3")], [("bb-3/day/c.ipfix", 3, record_set_fingerprint(one_more_byte))]),
            ("bb-4", [("bb-4/day/a.ipfix", "d1")], []),
        ]
    )
    assert found == [
        "bb-2/day/b.pcap: the same 3 flow records as bb-1/day/a.ipfix (exporter bb-1)",
        "bb-4/day/a.ipfix: same content as bb-1/day/a.ipfix (exporter bb-1)",
    ]


def test_an_accounting_file_cut_short_is_one_problem_and_fails_the_audit(small_landing: Path, tmp_path: Path) -> None:
    import gzip

    from expectations.audit import run_checks
    from flows.landing import ingest_radius
    from tests.records import accounting_summary, exporter_summary
    from transforms.run_records import WeekIngest

    landing = tmp_path / "landing"
    detail = next(p for p in sorted((small_landing / "radius").rglob("detail-*")) if p.is_file())
    target = landing / detail.relative_to(small_landing)
    target.parent.mkdir(parents=True)
    packed = gzip.compress(detail.read_bytes())
    target.with_suffix(".gz").write_bytes(packed[: len(packed) // 2])
    records, problems = ingest_radius(landing, [dt.date.fromisoformat(target.parent.name)], "Asia/Tokyo")
    assert records.height == 0
    assert problems.select("position", "records").rows() == [("line 0", 1)]
    assert not set(TOKEN.findall(" ".join(problems["reason"]))) & _identities(small_landing)
    hours = pl.DataFrame({"in_bytes": [1.0], "out_bytes": [1.0], "unattributed_bytes": [0.0]})
    exporter = exporter_summary()
    radius = accounting_summary(quarantined_records=1, unreadable_files=1)
    checks = run_checks(WeekIngest((exporter,), radius), {"traffic_hour": hours}, 0.001, 0.05)
    [gate] = [c for c in checks if c.check == "every accounting file could be read"]
    assert gate.success is False and gate.detail == "1 files unreadable or cut short"
    readable = dataclasses.replace(radius, unreadable_files=0)
    checks = run_checks(WeekIngest((exporter,), readable), {"traffic_hour": hours}, 0.001, 0.05)
    assert all(c.success for c in checks)


def test_a_prefect_slot_left_by_a_killed_run_is_shown_and_released(
    small_settings: Settings, prefect_server: str, tmp_path: Path
) -> None:
    from flows.locks import WeekBusy, one_run_at_a_time

    period = "2024-06-10"
    env = _env(prefect_server)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from flows.locks import one_run_at_a_time\n"
            "with one_run_at_a_time(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(120)",
            period,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: the slot stays taken until its lease expires
    holder.communicate()
    status = _cli(["status", *_place_args(small_settings)], env, timeout=120)
    assert f"running: {period} (Prefect slot, 1 active)" in status.stdout
    with pytest.raises(WeekBusy, match="trafficreport release --week"), one_run_at_a_time(period, timeout_seconds=1):
        pass
    released = _cli(["release", "--week", period, *_place_args(small_settings)], env, timeout=120)
    assert released.returncode == 0 and released.stdout.strip() == f"{period}: released 1 Prefect slot(s)"
    with one_run_at_a_time(period, timeout_seconds=1):
        pass  # free at once
    without_server = _cli(["release", "--week", period, *_place_args(small_settings)], _env(None), timeout=60)
    assert without_server.returncode == 2 and "set PREFECT_API_URL" in without_server.stderr


def test_blank_lines_in_the_directory_are_no_rows_and_problems_keep_their_line() -> None:
    from flows.landing import parse_directory

    header = b"subscription_id,service,customer_type,login,phone_numbers\r\n"
    good = header + b"\r\nBB1,broadband,personal,u1@x,\r\nMB2,mobile,enterprise,,0901\r\n\r\n"
    assert parse_directory(good, "subscribers.csv")["subscription_id"].to_list() == ["BB1", "MB2"]
    with pytest.raises(
        InputFormatError, match=r"^subscribers\.csv: line 5: subscription_id repeats the one on line 3$"
    ):
        parse_directory(header + b"\nBB1,broadband,personal,u1@x,\n\nBB1,broadband,personal,u2@x,\n", "subscribers.csv")


def test_empty_files_of_two_idle_exporters_are_not_one_file_delivered_twice(tmp_path: Path) -> None:
    from flows.flow_ingest import ExporterInputs, duplicate_inputs, ingest_exporter

    start = dt.datetime(2024, 6, 2, 15, tzinfo=dt.UTC)
    found = []
    for exporter in ("bb-1", "bb-2"):
        day = tmp_path / "landing" / "flows" / exporter / "2024-06-03"
        day.mkdir(parents=True)
        (day / "idle.ipfix").write_bytes(b"")
        result = ingest_exporter(
            tmp_path / "landing",
            exporter,
            [dt.date(2024, 6, 3)],
            start,
            start + dt.timedelta(days=7),
            ExporterInputs(collector_timezone="Asia/Tokyo", timezone="Asia/Tokyo"),
            tmp_path / "state",
            tmp_path / "stage" / exporter,
        )
        assert result.records == 0
        found.append((exporter, result.digests, result.record_sets))
    assert duplicate_inputs(found) == []
