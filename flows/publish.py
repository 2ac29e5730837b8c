"""Write-audit-publish: immutable data files, one manifest swapped atomically, the DuckDB catalog.

Data files are written once under `<table>/week=<W>/run=<run_id>/` and never changed. The
manifest (`_manifest.json`) lists, for every table and week, the files of the run that published
it; readers and the catalog only see files it lists. A week becomes visible, or is replaced, by one
conditional write of the manifest (all its tables at once, so readers never see a mix of runs):
on S3 a PUT with If-Match / If-None-Match, locally a lock and `os.replace`. A run publishes only
if the week is still as it found it: of two concurrent runs of one week, one publishes, the other
fails with ConcurrentPublication.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from flows import failpoints, storage
from flows.storage import AnyPath

MANIFEST = "_manifest.json"
CATALOG = "catalog.duckdb"
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
# Conditional-write retries when other weeks' runs publish between our read and our write.
MANIFEST_ATTEMPTS = 20


class ConcurrentPublication(RuntimeError):
    """Another run published this week after this run started: this run does not overwrite it."""


def empty_manifest() -> dict[str, Any]:
    return {"tables": {}, "runs": {}, "retained": {}}


def read_manifest_versioned(warehouse: AnyPath) -> tuple[dict[str, Any], str | None]:
    """The published state and the manifest's version (None before the first publication)."""
    data, version = storage.read_versioned(warehouse / MANIFEST)
    if data is None:
        return empty_manifest(), None
    manifest = {**empty_manifest(), **json.loads(data)}
    return manifest, version


def read_manifest(warehouse: AnyPath) -> dict[str, Any]:
    """The published state: {"tables": {table: {week: entry}}, "runs": {run_id: record}, "retained": ...}."""
    return read_manifest_versioned(warehouse)[0]


def published_run(manifest: dict[str, Any], key: dt.date | str) -> str | None:
    """The run whose tables are published for a week (or a month, "YYYY-MM"), if any."""
    for parts in manifest["tables"].values():
        if str(key) in parts:
            return str(parts[str(key)]["run_id"])
    return None


def read_published(warehouse: AnyPath, manifest: dict[str, Any], table: str, week: str) -> pl.DataFrame:
    """The rows of one table for one published week, from the files the manifest lists."""
    entry = manifest["tables"][table][week]
    return pl.concat([pl.read_parquet(io.BytesIO((warehouse / f).read_bytes())) for f in entry["files"]])


def previous_published(
    warehouse: AnyPath, week: dt.date, tables: tuple[str, ...], within_weeks: int | None = None
) -> dict[str, pl.DataFrame] | None:
    """The given tables of the latest published week before `week`, if there is one (within
    `within_weeks` weeks before it, when given)."""
    manifest = read_manifest(warehouse)
    weeks = set.intersection(*(set(manifest["tables"].get(t, {})) for t in tables)) if tables else set()
    oldest = str(week - dt.timedelta(weeks=within_weeks)) if within_weeks is not None else ""
    earlier = sorted(w for w in weeks if oldest <= w < str(week))
    if not earlier:
        return None
    return {t: read_published(warehouse, manifest, t, earlier[-1]) for t in tables}


def _write_parquet(path: AnyPath, frame: pl.DataFrame) -> None:
    if storage.is_local(path):
        storage.local_path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(storage.local_path(path))
        return
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    path.write_bytes(buffer.getvalue())


def publish_week(
    warehouse: AnyPath,
    week: dt.date,
    run_id: str,
    tables: dict[str, pl.DataFrame],
    record: dict[str, Any],
    base_run: str | None,
    keep_runs: int = 3,
) -> list[str]:
    """publish_partition for the tables of one week (`<table>/week=<W>/run=<R>/`)."""
    return publish_partition(warehouse, "week", str(week), run_id, tables, record, base_run, keep_runs)


def publish_partition(
    warehouse: AnyPath,
    column: str,
    key: str,
    run_id: str,
    tables: dict[str, pl.DataFrame],
    record: dict[str, Any],
    base_run: str | None,
    keep_runs: int = 3,
) -> list[str]:
    """Writes a partition's files (a week, or a month) under new run folders, then swaps the manifest
    in one conditional write, provided the partition is still published by `base_run` (the run found
    at the start). Returns the run folders removed by retention (the newest `keep_runs` are kept)."""
    entries: dict[str, dict[str, Any]] = {}
    for name, frame in tables.items():
        rel = f"{name}/{column}={key}/run={run_id}/part-0.parquet"
        _write_parquet(warehouse / rel, frame)
        entries[name] = {"run_id": run_id, "files": [rel], "rows": frame.height}
    failpoints.reach("publish:data-written")
    for _ in range(MANIFEST_ATTEMPTS):
        manifest, version = read_manifest_versioned(warehouse)
        current = published_run(manifest, key)
        if current != base_run:
            raise ConcurrentPublication(
                f"{column} {key}: run {current} published it while run {run_id} was working "
                f"(which started from {base_run or 'nothing published'}); not publishing over it"
            )
        retained = manifest["retained"].setdefault(key, [])
        if current is not None:
            retained.insert(
                0,
                {
                    "run_id": current,
                    "files": [f for parts in manifest["tables"].values() for f in parts.get(key, {}).get("files", [])],
                },
            )
        dropped = retained[max(keep_runs - 1, 0) :]
        del retained[max(keep_runs - 1, 0) :]
        for name, entry in entries.items():
            manifest["tables"].setdefault(name, {})[key] = entry
        # A table the run no longer produces must not stay visible from an older run.
        for name, parts in manifest["tables"].items():
            if name not in entries:
                parts.pop(key, None)
        manifest["runs"][run_id] = {
            **record,
            column: key,
            "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        for old in dropped:
            manifest["runs"].pop(old["run_id"], None)
        text = json.dumps(manifest, indent=1, sort_keys=True).encode()
        failpoints.reach("publish:before-manifest")
        try:
            storage.write_if_unchanged(warehouse / MANIFEST, text, version)
        except storage.ConcurrentUpdate:
            continue  # another partition's run published meanwhile: read again and re-check
        failpoints.reach("publish:manifest-swapped")
        return _remove_unlisted_runs(warehouse, manifest, column, key, run_id)
    raise ConcurrentPublication(f"{column} {key}: manifest kept changing under run {run_id}; gave up")


def _remove_unlisted_runs(
    warehouse: AnyPath, manifest: dict[str, Any], column: str, key: str, run_id: str
) -> list[str]:
    """Deletes this partition's run folders that the manifest no longer lists: runs dropped by
    retention, and files of runs that crashed or lost a race before their manifest swap."""
    listed = {run_id, *(r["run_id"] for r in manifest["retained"].get(key, []))}
    removed = []
    for name in manifest["tables"]:
        folder = warehouse / name / f"{column}={key}"
        if not folder.exists():
            continue
        for run_folder in folder.iterdir():
            if run_folder.name.startswith("run=") and run_folder.name[4:] not in listed:
                storage.remove_tree(run_folder)
                removed.append(f"{name}/{column}={key}/{run_folder.name}")
    return sorted(removed)


def build_catalog(warehouse: AnyPath) -> AnyPath:
    """Rebuilds catalog.duckdb from the manifest: one table per published table (the listed files
    only), one view per sql/ file, and `_catalog` naming the manifest version it was built from."""
    manifest, version = read_manifest_versioned(warehouse)
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / CATALOG
        con = duckdb.connect(str(local))
        try:
            if not storage.is_local(warehouse):
                # DuckDB reads S3 through the same fsspec filesystem (its httpfs extension is not assumed).
                con.register_filesystem(warehouse.fs)  # type: ignore[union-attr]
            for name, weeks in sorted(manifest["tables"].items()):
                # Table names come from our own manifest keys, checked against a fixed pattern.
                if not name.replace("_", "").isalnum():
                    raise ValueError(f"unexpected table name in manifest: {name!r}")
                files = [_reader_path(warehouse / f) for entry in weeks.values() for f in entry["files"]]
                if not files:
                    continue
                con.execute(
                    f"create table {name} as select * from "
                    "read_parquet($files, union_by_name = true, hive_partitioning = true)",
                    {"files": files},
                )
            for sql_file in sorted(SQL_DIR.glob("*.sql")):
                try:
                    con.execute(f"create view {sql_file.stem} as {sql_file.read_text().strip().rstrip(';')}")
                except duckdb.CatalogException:
                    continue  # its tables are not published yet (e.g. only months so far): no view until they are
            con.execute(
                "create table _catalog as select $version as manifest_version, now() as built_at",
                {"version": version or ""},
            )
        finally:
            con.close()
        target = warehouse / CATALOG
        if storage.is_local(warehouse):
            storage.local_path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, storage.local_path(target))
        else:
            target.write_bytes(local.read_bytes())
    return target


def _reader_path(path: AnyPath) -> str:
    return str(storage.local_path(path)) if storage.is_local(path) else str(path)


def local_catalog(warehouse: AnyPath) -> Path:
    """A local file of the warehouse's catalog: the file itself, or a cached download from S3."""
    target = warehouse / CATALOG
    if storage.is_local(warehouse):
        return storage.local_path(target)
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trafficreport" / digest
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / CATALOG
    local.write_bytes(target.read_bytes())
    return local


def query_frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Rows of a query with bound parameters, as a polars frame."""
    result = pl.from_arrow(con.sql(sql, params=params or {}).to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return result
