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
import json
import os
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import duckdb
import polars as pl

from flows import failpoints, storage
from flows.failures import ConcurrentPublication as ConcurrentPublication  # raised here; defined with the other errors
from flows.failures import RunFailed, UsageError, one_line
from flows.resources import sql_folder
from flows.storage import AnyPath
from transforms.run_records import PublicationRecord, as_json_dict
from transforms.tables import registry

MANIFEST = "_manifest.json"
# The manifest's layout: {"version", "tables": {table: {partition: {run_id, files, rows}}}, "runs":
# {run_id: PublicationRecord + partition + published_at}, "retained": {partition: [{run_id, files}]}}.
# A manifest written by a newer layout is refused rather than rewritten without what it added.
MANIFEST_VERSION = 1
CATALOG = "catalog.duckdb"
SQL_DIR = sql_folder()
# Conditional-write retries when other weeks' runs publish between our read and our write.
MANIFEST_ATTEMPTS = 20


# DuckDB settings of connections that run analysts' SQL (`query`, `shell`): it reads the catalog and
# nothing else. No file is read or written outside it (COPY, EXPORT, read_csv, glob), no database
# attached, no extension installed or loaded, and no setting changed back: after lock_configuration
# every SET / RESET / PRAGMA of a setting is refused. The catalog's tables are loaded at build time,
# so no analyst query needs to read a file (no allowed_directories).
ANALYST_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,  # last: the settings above are applied first
}

# S3 object metadata of an uploaded catalog: the manifest version it was built from.
CATALOG_VERSION_KEY = "manifest-version"


class QueryRefused(UsageError, duckdb.Error):
    """DuckDB refused an analyst's SQL (the sandbox, read-only, a syntax or binding error): one line,
    exit 2. Also a duckdb.Error, so code that catches DuckDB's errors still catches it."""


class TableEntry(TypedDict):
    """The published files of one table for one week (or month), and the run that wrote them."""

    run_id: str
    files: list[str]
    rows: NotRequired[int]  # absent in manifests written before rows were counted


class RetainedRun(TypedDict):
    """An earlier publication of a week kept for `keep_runs` (its files stay until dropped)."""

    run_id: str
    files: list[str]


class RunEntry(TypedDict, total=False):
    """A run that published: its PublicationRecord, the partition (`week` or `month`) and when."""

    audit_passed: bool
    replaced_run: str | None
    accepted_failed_audit: bool
    failed_checks: list[str]
    polls: int | None
    week: str
    month: str
    published_at: str


class Manifest(TypedDict):
    """The published state of a warehouse (`_manifest.json`)."""

    version: int
    tables: dict[str, dict[str, TableEntry]]
    runs: dict[str, RunEntry]
    retained: dict[str, list[RetainedRun]]


def empty_manifest() -> Manifest:
    return {"version": MANIFEST_VERSION, "tables": {}, "runs": {}, "retained": {}}


def read_manifest_versioned(warehouse: AnyPath) -> tuple[Manifest, str | None]:
    """The published state and the manifest's version (None before the first publication)."""
    data, version = storage.read_versioned(warehouse / MANIFEST)
    if data is None:
        return empty_manifest(), None
    manifest = cast(Manifest, {**empty_manifest(), **json.loads(data)})
    if int(manifest["version"]) > MANIFEST_VERSION:
        raise UsageError(
            f"{warehouse / MANIFEST}: manifest layout version {manifest['version']} is newer than this "
            f"trafficreport's ({MANIFEST_VERSION}); upgrade trafficreport to read or publish to this warehouse"
        )
    # A manifest from before the layout had a version is version 1's layout.
    manifest["version"] = MANIFEST_VERSION
    return manifest, version


def read_manifest(warehouse: AnyPath) -> Manifest:
    """The published state: {"tables": {table: {week: entry}}, "runs": {run_id: record}, "retained": ...}."""
    return read_manifest_versioned(warehouse)[0]


def published_run(manifest: Manifest, key: dt.date | str) -> str | None:
    """The run whose tables are published for a week (or a month, "YYYY-MM"), if any."""
    for parts in manifest["tables"].values():
        if str(key) in parts:
            return str(parts[str(key)]["run_id"])
    return None


def read_published(warehouse: AnyPath, manifest: Manifest, table: str, week: str) -> pl.DataFrame:
    """The rows of one table for one published week, from the files the manifest lists."""
    entry = manifest["tables"][table][week]
    return pl.concat([storage.read_parquet(warehouse / f) for f in entry["files"]])


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


def publish_week(
    warehouse: AnyPath,
    week: dt.date,
    run_id: str,
    tables: dict[str, pl.DataFrame],
    record: PublicationRecord,
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
    record: PublicationRecord,
    base_run: str | None,
    keep_runs: int = 3,
) -> list[str]:
    """Writes a partition's files (a week, or a month) under new run folders, then swaps the manifest
    in one conditional write, provided the partition is still published by `base_run` (the run found
    at the start). Returns the run folders removed by retention (the newest `keep_runs` are kept)."""
    entries: dict[str, TableEntry] = {}
    for name, frame in tables.items():
        rel = f"{name}/{column}={key}/run={run_id}/part-0.parquet"
        storage.write_parquet(warehouse / rel, frame)
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
                    "files": [f for parts in manifest["tables"].values() if key in parts for f in parts[key]["files"]],
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
        manifest["runs"][run_id] = cast(
            RunEntry,
            {
                **as_json_dict(record),
                column: key,
                "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        )
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


def _remove_unlisted_runs(warehouse: AnyPath, manifest: Manifest, column: str, key: str, run_id: str) -> list[str]:
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
    only), one view per sql/ file, and `_catalog` naming the manifest version it was built from.

    Locally the new catalog is written to a hidden file beside the old one and renamed over it (same
    folder, so same filesystem); on S3 it is built in a local temporary folder and uploaded in one
    PUT. Either way the old catalog stays as it was until a new one is whole: a failed build (a full
    disk, a bad file) raises RunFailed saying which manifest version the kept catalog shows, and
    `status` / `query` say the catalog is behind until a build succeeds."""
    target = warehouse / CATALOG
    backend = storage.backend_of(warehouse)
    # One build at a time per local warehouse, each from the manifest as it is once it holds the lock:
    # the last build to finish shows the newest manifest (concurrent backfill runs each build one).
    with backend.exclusive(target), backend.scratch_for(target) as building:
        manifest, version = read_manifest_versioned(warehouse)
        try:
            _write_catalog(building, warehouse, manifest, version)
            # The manifest version it shows travels as object metadata on S3, so `status` need not download it.
            backend.install(building, target, {CATALOG_VERSION_KEY: version or ""})
        except Exception as exc:
            raise _not_rebuilt(warehouse, exc) from exc
    return target


def _wal(database: Path) -> Path:
    return database.with_name(database.name + ".wal")


def _write_catalog(local: Path, warehouse: AnyPath, manifest: Manifest, version: str | None) -> None:
    """Writes a new catalog database at `local` and checks it holds every listed row."""
    expected_rows: dict[str, int] = {}
    con = duckdb.connect(str(local))
    try:
        backend = storage.backend_of(warehouse)
        filesystem = backend.filesystem(warehouse)
        if filesystem is not None:
            # DuckDB reads S3 through the same fsspec filesystem (its httpfs extension is not assumed).
            con.register_filesystem(filesystem)
        for name, weeks in sorted(manifest["tables"].items()):
            # Table names come from our own manifest keys, checked against a fixed pattern.
            if not name.replace("_", "").isalnum():
                raise ValueError(f"unexpected table name in manifest: {name!r}")
            files = [backend.reader_path(warehouse / f) for entry in weeks.values() for f in entry["files"]]
            if not files:
                continue
            con.execute(
                f"create table {name} as select * from "
                "read_parquet($files, union_by_name = true, hive_partitioning = true)",
                {"files": files},
            )
            if all("rows" in entry for entry in weeks.values()):
                expected_rows[name] = sum(int(entry["rows"]) for entry in weeks.values())
        loaded = {name for name, weeks in manifest["tables"].items() if any(e["files"] for e in weeks.values())}
        for table in registry.TABLES:
            if table.name not in loaded:
                # Not published yet (only months so far, say): empty, with the declared columns, so
                # every view compiles now and any view that does not is an error.
                con.register("declared_empty", registry.empty_table(table.name).to_arrow())
                con.execute(f"create table {table.name} as select *, null::varchar as run from declared_empty")
                con.unregister("declared_empty")
        con.execute(
            "create table _publications (table_name varchar, partition_column varchar, partition_key varchar, "
            "run varchar, rows bigint)"
        )
        for name, parts in sorted(manifest["tables"].items()):
            for key, entry in sorted(parts.items()):
                con.execute(
                    "insert into _publications values ($name, $column, $key, $run, $rows)",
                    {
                        "name": name,
                        "column": registry.BY_NAME[name].partition if name in registry.BY_NAME else None,
                        "key": key,
                        "run": entry["run_id"],
                        "rows": entry.get("rows"),
                    },
                )
        for sql_file in sorted(SQL_DIR.glob("*.sql")):
            try:
                con.execute(f"create view {sql_file.stem} as {sql_file.read_text().strip().rstrip(';')}")
            except duckdb.Error as exc:
                raise RuntimeError(f"view {sql_file.name} does not compile: {one_line(exc)}") from exc
        con.execute(
            "create table _catalog as select $version as manifest_version, now() as built_at",
            {"version": version or ""},
        )
        # An explicit checkpoint fails loudly on a full disk; one left to close() may fail silently and
        # leave the rows in a WAL file that the rename would not carry along (an empty catalog).
        con.execute("checkpoint")
    finally:
        con.close()
    if _wal(local).exists():
        raise RuntimeError("the new catalog was not checkpointed (its write-ahead log is still there)")
    check = duckdb.connect(str(local), read_only=True)
    try:
        built = check.execute("select manifest_version from _catalog").fetchone()
        if built is None or built[0] != (version or ""):
            raise RuntimeError("the new catalog does not name the manifest version it was built from")
        for name, rows in expected_rows.items():
            found = check.execute(f"select count(*) from {name}").fetchone()
            if found is None or found[0] != rows:
                raise RuntimeError(
                    f"the new catalog's {name} holds {found and found[0]} rows, the manifest lists {rows}"
                )
    finally:
        check.close()


def _not_rebuilt(warehouse: AnyPath, exc: BaseException) -> RunFailed:
    try:
        kept = catalog_version(warehouse)
    except Exception:
        kept = "?"
    remedy = "the next run or `trafficreport rebuild-catalog` rebuilds it"
    if kept is None:
        return RunFailed(f"catalog not rebuilt: {one_line(exc)}; there is no previous catalog; {remedy}")
    return RunFailed(
        f"catalog not rebuilt: {one_line(exc)}; the previous catalog (manifest version {short_version(kept)}) "
        f"is kept; {remedy}"
    )


def short_version(version: str | None) -> str:
    """A manifest version as people read it: the first 12 characters of its hash or ETag."""
    return (version or "").strip('"')[:12] or "?"


def catalog_version(warehouse: AnyPath) -> str | None:
    """The manifest version the warehouse's catalog was built from; None when there is no catalog
    ("" when it does not say: an S3 catalog uploaded before the version was recorded with it)."""
    target = warehouse / CATALOG
    local = storage.backend_of(warehouse).local_file(target)
    if local is not None:
        if not local.exists():
            return None
        con = open_analyst_catalog(local)
        try:
            return built_from(con)
        finally:
            con.close()
    try:
        metadata = storage.backend_of(warehouse).metadata(target) or {}
    except FileNotFoundError:
        return None
    return metadata.get(CATALOG_VERSION_KEY, "")


def built_from(con: duckdb.DuckDBPyConnection) -> str:
    """The manifest version an open catalog was built from."""
    rows = con.execute("select manifest_version from _catalog").fetchall()
    return str(rows[0][0]) if rows else ""


def describe_catalog(warehouse: AnyPath, manifest: str | None) -> str:
    """`status`'s line on the catalog: up to date, behind the manifest, missing or unreadable."""
    try:
        catalog = catalog_version(warehouse)
    except duckdb.Error as exc:
        return f"catalog unreadable: {one_line(exc)}; `trafficreport rebuild-catalog` rebuilds it"
    return catalog_lag(catalog, manifest) or f"catalog: up to date (manifest version {short_version(manifest)})"


def catalog_lag(catalog: str | None, manifest: str | None) -> str | None:
    """One line when the catalog does not show the manifest's current version; None when it does
    (or nothing is published)."""
    if manifest is None:
        return None
    if catalog is None:
        return (
            f"catalog missing: the manifest is at version {short_version(manifest)}; "
            "the next run or `trafficreport rebuild-catalog` builds it"
        )
    if catalog != manifest:
        return (
            f"catalog is behind the manifest: it shows manifest version {short_version(catalog)}, "
            f"the manifest is at {short_version(manifest)}; the next run or `trafficreport rebuild-catalog` rebuilds it"
        )
    return None


def local_catalog(warehouse: AnyPath) -> Path:
    """A local file of the warehouse's catalog: the file itself, or a cached download from S3."""
    target = warehouse / CATALOG
    local = storage.backend_of(warehouse).local_file(target)
    if local is not None:
        return local
    digest = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trafficreport" / digest
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / CATALOG
    # Written beside and renamed: a `query` running on the previous download keeps reading it whole.
    fd, scratch = storage.create_beside(local)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(target.read_bytes())
        os.replace(scratch, local)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return local


def open_analyst_catalog(path: Path) -> duckdb.DuckDBPyConnection:
    """A catalog file opened for analysts' SQL: read-only, and sandboxed (ANALYST_CONFIG)."""
    return duckdb.connect(str(path), read_only=True, config=ANALYST_CONFIG)


def query_refused(exc: duckdb.Error) -> QueryRefused:
    """The one-line refusal of an analyst's SQL that DuckDB did not run."""
    return QueryRefused(f"query refused: {one_line(exc)}")


def query_frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Rows of a query with bound parameters, as a polars frame (empty for a statement without rows)."""
    relation = con.sql(sql, params=params or {})
    if relation is None:
        return pl.DataFrame()
    result = pl.from_arrow(relation.to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return result
