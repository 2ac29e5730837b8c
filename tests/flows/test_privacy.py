"""Privacy: no clear subscription id, login or phone number of the generated week reaches any file
the run writes (warehouse, staging, quarantine, exporter state) or any log line of the run."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest
from pydantic import SecretStr

from flows.landing import directory_file
from flows.settings import Settings, load_settings
from flows.storage import local_path
from flows.weekly import weekly_report
from tests.conftest import TEST_KEY, WEEK
from transforms.accounting.privacy import pseudonym


def _clear_identities(landing: Path) -> set[str]:
    directory = pl.read_csv(
        local_path(directory_file(landing, dt.date.max)), schema_overrides={"phone_numbers": pl.String}
    )
    ids = set(directory["subscription_id"].drop_nulls()) | set(directory["login"].drop_nulls())
    phones = {p for cell in directory["phone_numbers"].drop_nulls() for p in cell.split(";") if p}
    calling = set()
    for path in (landing / "radius").rglob("*"):
        if path.is_file():
            calling |= set(re.findall(r'Calling-Station-Id = "([^"]+)"', path.read_text(errors="replace")))
    return ids | phones | calling


TOKEN = r"[0-9A-Za-z@._+-]+"


def _frame_tokens(frame: pl.DataFrame) -> set[str]:
    """Every token of every cell (numbers included: a phone number may be stored as one)."""
    tokens = set(frame.columns)
    for name in frame.columns:
        column = frame[name]
        if column.dtype == pl.String or column.dtype.is_numeric():
            values = column.drop_nulls().unique().cast(pl.String)
            tokens |= set(values.str.extract_all(TOKEN).explode().drop_nulls().unique())
        elif column.dtype.is_nested() or column.dtype == pl.Object:
            tokens |= set(re.findall(TOKEN, str(column.to_list())))
    return tokens


def _tokens_of(path: Path) -> set[str]:
    """Every token a file holds, decoded: parquet and DuckDB cells (they may be compressed on disk)."""
    if path.suffix == ".parquet":
        return _frame_tokens(pl.read_parquet(path))
    if path.suffix == ".duckdb":
        con = duckdb.connect(str(path), read_only=True)
        try:
            tables = [r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()]
            found: set[str] = set()
            for table in tables:
                frame = pl.from_arrow(con.sql(f'select * from "{table}"').to_arrow_table())
                assert isinstance(frame, pl.DataFrame)
                found |= _frame_tokens(frame)
            return found
        finally:
            con.close()
    return set(re.findall(TOKEN, path.read_bytes().decode("latin-1")))


def _leaks(tokens: dict[str, set[str]], identities: set[str]) -> dict[str, list[str]]:
    return {name: sorted(found & identities)[:5] for name, found in tokens.items() if found & identities}


def test_no_clear_identity_in_any_file_or_log_line_of_a_run(
    small_settings: Settings,
    small_landing: Path,
    prefect_server: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    identities = _clear_identities(small_landing)
    assert len(identities) > 500  # subscriptions, logins and phone numbers of 600 users
    # The scanner finds them where they are: the landing zone's directory.
    assert _leaks({"directory": _tokens_of(local_path(directory_file(small_landing, dt.date.max)))}, identities)
    logging.getLogger("prefect").setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    # Keep the run's staging folder (decoded flows, partials) so its files are scanned too.
    state = weekly_report(WEEK, small_settings.model_copy(update={"keep_staging": True}), return_state=True)
    run = state.result()
    assert run.published
    root = local_path(small_settings.staging).parent
    written = [p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(small_landing)]
    assert any(p.suffix == ".parquet" for p in written) and any(p.suffix == ".duckdb" for p in written)
    tokens = {str(p.relative_to(root)): _tokens_of(p) for p in written}
    # Log lines: what the run logged (all levels), printed, and sent to the Prefect API.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        flow_run_id = state.state_details.flow_run_id
        assert flow_run_id is not None
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert logs  # the run did log
    out, err = capfd.readouterr()
    lines = {"log records": caplog.text, "stdout": out, "stderr": err, "api logs": "\n".join(r.message for r in logs)}
    tokens |= {name: set(re.findall(TOKEN, text)) for name, text in lines.items()}
    assert _leaks(tokens, identities) == {}
    # The pseudonyms are there instead: every broadband user_key is the keyed HMAC of a directory
    # subscription and its access type.
    published = pl.read_parquet(next(p for p in written if "user_week_usage" in str(p) and "warehouse" in str(p)))
    directory = pl.read_csv(local_path(directory_file(small_landing, dt.date.max)))
    expected = {
        pseudonym(TEST_KEY.encode(), f"broadband|{sid}|{access}")
        for sid in directory.filter(pl.col("service") == "broadband")["subscription_id"]
        for access in ("pppoe", "ipoe")
    }
    broadband_keys = set(published.filter(pl.col("service") != "mobile")["user_key"])
    assert broadband_keys and broadband_keys <= expected


def test_the_demo_key_file_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFICREPORT_HMAC_KEY")
    settings = load_settings(hmac_key_file=tmp_path / "secret" / "hmac.key")
    key = settings.hmac_key(create=True)
    assert len(key) == 64
    assert stat.S_IMODE(os.stat(tmp_path / "secret" / "hmac.key").st_mode) == 0o600
    assert settings.hmac_key() == key  # read back, not made anew


def test_the_key_can_come_from_a_prefect_secret_block(
    small_settings: Settings, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=SecretStr("key-from-a-secret-block")).save("trafficreport-test-key", overwrite=True)
    monkeypatch.delenv("TRAFFICREPORT_HMAC_KEY")
    settings = small_settings.model_copy(update={"hmac_key_secret": "trafficreport-test-key"})
    assert settings.hmac_key() == b"key-from-a-secret-block"
