"""catalog.duckdb is built beside itself and renamed within its filesystem: a warehouse on another
filesystem than $TMPDIR works, a failed build (a full disk, a bad file) keeps the previous catalog
whole, `status` and `query` say the catalog is behind the manifest, and the next build repairs it.
Files of the warehouse follow the umask."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import s3fs

from flows import cli, storage
from flows.failures import RunFailed
from flows.publish import CATALOG, MANIFEST, build_catalog, read_manifest_versioned
from tests.conftest import WEEK
from tests.flows.test_analyst_sandbox import publish_tiny_week

TRAFFICREPORT = Path(sys.executable).with_name("trafficreport")
NEXT_WEEK = WEEK + dt.timedelta(weeks=1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TRAFFICREPORT), *args], capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def _tmpfs(folder: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MB mounted on `folder` (another filesystem than $TMPDIR's), unmounted after."""
    folder.mkdir(parents=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(folder)], capture_output=True, text=True
        )
    except OSError as exc:
        pytest.skip(f"no mount command here ({exc.strerror}): the tmpfs warehouse tests need it")
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path) -> Path:
    """Fills the filesystem of `folder` with one file, to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _catalog_version(warehouse: Path) -> str:
    con = duckdb.connect(str(warehouse / CATALOG), read_only=True)
    try:
        row = con.execute("select manifest_version from _catalog").fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0])


def _catalog_weeks(warehouse: Path) -> list[dt.date]:
    con = duckdb.connect(str(warehouse / CATALOG), read_only=True)
    try:
        return [r[0] for r in con.execute("select distinct week from usage_summary order by 1").fetchall()]
    finally:
        con.close()


def _leftovers(warehouse: Path) -> list[str]:
    """Temporary files of a catalog build or a manifest write left in the warehouse folder."""
    return sorted(p.name for p in warehouse.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


@pytest.fixture()
def tmpdir_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_a_warehouse_on_another_filesystem_publishes_and_builds_its_catalog(
    tmp_path: Path, tmpdir_on_disk: Path
) -> None:
    with _tmpfs(tmp_path / "warehouse", 64) as warehouse:
        assert os.stat(warehouse).st_dev != os.stat(tmpdir_on_disk).st_dev
        publish_tiny_week(warehouse, WEEK, "run-a")
        build_catalog(warehouse)
        assert _catalog_version(warehouse) == read_manifest_versioned(warehouse)[1]
        assert _catalog_weeks(warehouse) == [WEEK]
        assert _leftovers(warehouse) == []
        status = _cli("status", "--warehouse", str(warehouse))
        assert status.returncode == 0 and "behind" not in status.stdout
        assert any(line.split()[:1] == [str(WEEK)] for line in status.stdout.splitlines())
        query = _cli("query", "select count(*) as n from table1_broadband_usage", "--warehouse", str(warehouse))
        assert query.returncode == 0 and query.stderr == "", query.stderr


@pytest.mark.slow
def test_a_full_warehouse_keeps_the_previous_catalog_until_a_build_succeeds(
    tmp_path: Path, tmpdir_on_disk: Path
) -> None:
    with _tmpfs(tmp_path / "warehouse", 24) as warehouse:
        publish_tiny_week(warehouse, WEEK, "run-a")
        build_catalog(warehouse)
        good = (warehouse / CATALOG).read_bytes()
        good_version = _catalog_version(warehouse)
        publish_tiny_week(warehouse, NEXT_WEEK, "run-b")
        filler = _fill(warehouse)

        with pytest.raises(RunFailed) as failure:
            build_catalog(warehouse)

        message = str(failure.value)
        assert "\n" not in message and message.startswith("catalog not rebuilt: ")
        assert f"manifest version {good_version[:12]}" in message and "kept" in message
        assert (warehouse / CATALOG).read_bytes() == good
        assert _catalog_weeks(warehouse) == [WEEK]  # still whole and queryable
        assert _leftovers(warehouse) == []
        status = _cli("status", "--warehouse", str(warehouse))
        assert status.returncode == 0, status.stderr
        [behind] = [line for line in status.stdout.splitlines() if "catalog is behind the manifest" in line]
        assert good_version[:12] in behind and "rebuild-catalog" in behind
        query = _cli("query", "select count(*) as n from usage_summary", "--warehouse", str(warehouse))
        assert query.returncode == 0
        [note] = query.stderr.strip().splitlines()
        assert "catalog is behind the manifest" in note

        filler.unlink()
        # The next run (a publication, then the catalog from the manifest) repairs it.
        publish_tiny_week(warehouse, NEXT_WEEK, "run-c", base_run="run-b")
        build_catalog(warehouse)
        assert _catalog_version(warehouse) == read_manifest_versioned(warehouse)[1]
        assert _catalog_weeks(warehouse) == [WEEK, NEXT_WEEK]
        status = _cli("status", "--warehouse", str(warehouse))
        assert "behind" not in status.stdout and status.returncode == 0

        # So does `trafficreport rebuild-catalog`, once there is room again.
        publish_tiny_week(warehouse, NEXT_WEEK, "run-d", base_run="run-c")
        filler = _fill(warehouse)
        with pytest.raises(RunFailed):
            build_catalog(warehouse)
        filler.unlink()
        rebuilt = _cli("rebuild-catalog", "--warehouse", str(warehouse))
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert _catalog_version(warehouse) == read_manifest_versioned(warehouse)[1]
        assert _leftovers(warehouse) == []


def test_a_failed_build_keeps_the_previous_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same without a tmpfs: a listed file that is not parquet fails the build."""
    warehouse = tmp_path / "warehouse"
    publish_tiny_week(warehouse, WEEK, "run-a")
    build_catalog(warehouse)
    good = (warehouse / CATALOG).read_bytes()
    publish_tiny_week(warehouse, NEXT_WEEK, "run-b")
    (warehouse / "usage_summary" / f"week={NEXT_WEEK}" / "run=run-b" / "part-0.parquet").write_bytes(b"not parquet")

    with pytest.raises(RunFailed, match=r"^catalog not rebuilt: .*; the previous catalog \(manifest version \w+\)"):
        build_catalog(warehouse)

    assert (warehouse / CATALOG).read_bytes() == good
    assert _leftovers(warehouse) == []
    assert cli.main(["status", "--warehouse", str(warehouse)]) == 0
    assert "catalog is behind the manifest" in capsys.readouterr().out
    publish_tiny_week(warehouse, NEXT_WEEK, "run-c", base_run="run-b")
    build_catalog(warehouse)
    assert _catalog_weeks(warehouse) == [WEEK, NEXT_WEEK]
    assert cli.main(["status", "--warehouse", str(warehouse)]) == 0
    assert "behind" not in capsys.readouterr().out


def test_status_says_when_there_is_no_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warehouse = tmp_path / "warehouse"
    publish_tiny_week(warehouse, WEEK, "run-a")
    assert cli.main(["status", "--warehouse", str(warehouse)]) == 0
    assert "catalog missing" in capsys.readouterr().out


def test_an_s3_catalog_is_kept_when_its_local_build_fails(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On S3 the catalog is built in $TMPDIR and uploaded: a full $TMPDIR uploads nothing."""
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    if not fs.exists("catalogs"):
        fs.mkdir("catalogs")
    url = "s3://catalogs/full-tmpdir"
    warehouse = storage.storage_path(url)
    publish_tiny_week(warehouse, WEEK, "run-a")  # type: ignore[arg-type]
    build_catalog(warehouse)
    assert cli.main(["status", "--warehouse", url]) == 0
    assert "catalog: up to date" in capsys.readouterr().out
    good = fs.cat_file("catalogs/full-tmpdir/catalog.duckdb")
    publish_tiny_week(warehouse, NEXT_WEEK, "run-b")  # type: ignore[arg-type]
    with _tmpfs(tmp_path / "tmpdir", 4) as full:
        monkeypatch.setattr(tempfile, "tempdir", str(full))
        filler = _fill(full)
        with pytest.raises(RunFailed, match="^catalog not rebuilt: .* is kept;"):
            build_catalog(warehouse)
        filler.unlink()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert fs.cat_file("catalogs/full-tmpdir/catalog.duckdb") == good
    assert cli.main(["status", "--warehouse", url]) == 0
    assert "catalog is behind the manifest" in capsys.readouterr().out
    build_catalog(warehouse)
    assert cli.main(["status", "--warehouse", url]) == 0
    assert "catalog: up to date" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_warehouse_files_follow_the_umask(umask: int, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    previous = os.umask(umask)
    try:
        publish_tiny_week(warehouse, WEEK, "run-a")
        build_catalog(warehouse)
        publish_tiny_week(warehouse, WEEK, "run-b", base_run="run-a")  # a replaced manifest too
        build_catalog(warehouse)
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    data_file = warehouse / "usage_summary" / f"week={WEEK}" / "run=run-b" / "part-0.parquet"
    for path in (warehouse / MANIFEST, warehouse / CATALOG, data_file):
        assert oct(path.stat().st_mode & 0o777) == oct(expected), path.name
    assert _leftovers(warehouse) == []


def test_storage_conditional_write_follows_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        storage.write_if_unchanged(tmp_path / "f.json", b"{}", None)
    finally:
        os.umask(previous)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o664
