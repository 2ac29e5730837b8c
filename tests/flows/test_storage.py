"""The storage backends: one per location kind, file:// URLs, conditional-write refusals by status."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import botocore.exceptions
import duckdb
import polars as pl
import pytest

from flows import preflight, storage
from flows.failures import UsageError
from flows.publish import CATALOG, build_catalog, publish_week, read_manifest
from flows.settings import Settings
from transforms.run_records import PublicationRecord


def _client_error(status: int, code: str, message: str = "") -> botocore.exceptions.ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "PutObject")  # type: ignore[arg-type]


def test_file_url_is_the_local_folder_it_names(tmp_path: Path) -> None:
    path = storage.storage_path(f"file://{tmp_path}/warehouse")
    assert storage.is_local(path)
    assert storage.local_path(path) == tmp_path / "warehouse"
    assert storage.local_path(storage.storage_path(f"file://{tmp_path}")) == tmp_path
    storage.write_bytes(path / "a" / "b.txt", b"x")
    assert (tmp_path / "warehouse" / "a" / "b.txt").read_bytes() == b"x"
    assert not (Path.cwd() / "file:").exists()


def test_a_file_url_warehouse_publishes_and_builds_its_catalog(tmp_path: Path) -> None:
    warehouse = storage.storage_path(f"file://{tmp_path}/warehouse")
    table = pl.DataFrame({"week": [dt.date(2024, 6, 3)], "users": [3]})
    publish_week(
        warehouse,
        dt.date(2024, 6, 3),
        "run-1",
        {"example_counts": table},
        PublicationRecord(audit_passed=True, replaced_run=None),
        None,
    )
    build_catalog(warehouse)
    assert read_manifest(warehouse)["tables"]["example_counts"]["2024-06-03"]["run_id"] == "run-1"
    with duckdb.connect(str(tmp_path / "warehouse" / CATALOG), read_only=True) as con:
        assert con.execute("select users from example_counts").fetchall() == [(3,)]
    assert not list((tmp_path / "warehouse").glob(f".{CATALOG}.*.tmp*"))


def test_a_run_id_with_412_in_it_is_not_a_lost_race() -> None:
    error = RuntimeError("upload of run 20240412T000000Z-abc123 failed: connection reset")
    assert not storage.is_precondition_failure(error)
    assert not storage.is_precondition_failure(_client_error(500, "InternalError", "412 objects pending"))


@pytest.mark.parametrize(
    "error",
    [
        _client_error(412, "PreconditionFailed"),
        _client_error(409, "ConditionalRequestConflict"),
        FileExistsError("s3://bucket/_manifest.json"),
    ],
)
def test_refused_conditional_writes_are_recognised_by_status(error: BaseException) -> None:
    try:
        try:
            raise error
        except BaseException as inner:
            raise OSError(22, "Invalid argument") from inner  # s3fs's translation keeps the cause
    except OSError as outer:
        assert storage.is_precondition_failure(outer)


def test_other_fsspec_locations_read_and_write_but_hold_no_warehouse(tmp_path: Path) -> None:
    landing = storage.storage_path("memory://trafficreport-test/landing")
    assert isinstance(storage.backend_of(landing), storage.FsspecBackend)
    storage.write_bytes(landing / "radius" / "x.txt", b"hello")
    assert (landing / "radius" / "x.txt").read_bytes() == b"hello"
    assert storage.read_versioned(landing / "radius" / "x.txt")[0] == b"hello"
    with pytest.raises(UsageError, match="no conditional write"):
        storage.write_if_unchanged(landing / "_manifest.json", b"{}", None)
    storage.remove_tree(landing)
    assert not (landing / "radius" / "x.txt").exists()
    (tmp_path / "landing" / "flows").mkdir(parents=True)
    settings = Settings(
        landing=storage.storage_path(tmp_path / "landing"),
        warehouse=storage.storage_path("memory://trafficreport-test/warehouse"),
        staging=storage.storage_path(tmp_path / "staging"),
    )
    with pytest.raises(UsageError, match="warehouse memory://.*no conditional write"):
        preflight.check_paths(settings)
