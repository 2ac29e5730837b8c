"""Write-audit-publish: immutable data files, one manifest swapped atomically, the DuckDB catalog."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

MANIFEST = "_manifest.json"
CATALOG = "catalog.duckdb"
SQL_DIR = Path(__file__).resolve().parents[1] / "sql"


def read_manifest(warehouse: Path) -> dict[str, Any]:
    """The published state: {"tables": {table: {week: entry}}, "runs": {run_id: summary}}."""
    path = warehouse / MANIFEST
    if not path.exists():
        return {"tables": {}, "runs": {}}
    return json.loads(path.read_text())


def is_published(warehouse: Path, week: dt.date) -> bool:
    tables = read_manifest(warehouse)["tables"]
    return any(str(week) in weeks for weeks in tables.values())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def publish_week(
    warehouse: Path, week: dt.date, run_id: str, tables: dict[str, pl.DataFrame], run: dict[str, Any]
) -> None:
    """Writes each table's files under a new run folder, then swaps the manifest in one step."""
    entries: dict[str, dict[str, Any]] = {}
    for name, frame in tables.items():
        rel = Path(name) / f"week={week}" / f"v-{run_id}" / "part-0.parquet"
        path = warehouse / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        entries[name] = {"run_id": run_id, "files": [str(rel)], "rows": frame.height}
    manifest = read_manifest(warehouse)
    for name, entry in entries.items():
        manifest["tables"].setdefault(name, {})[str(week)] = entry
    manifest["runs"][run_id] = {
        "week": str(week),
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "audit_passed": run["audit_passed"],
    }
    _atomic_write(warehouse / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def build_catalog(warehouse: Path) -> Path:
    """Rebuilds catalog.duckdb from the manifest: one table per published table, one view per sql/ file."""
    manifest = read_manifest(warehouse)
    target = warehouse / CATALOG
    tmp = warehouse / f".{CATALOG}.tmp"
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        for name, weeks in sorted(manifest["tables"].items()):
            files = [str(warehouse / f) for entry in weeks.values() for f in entry["files"]]
            # Table names come from our own manifest keys, checked against a fixed pattern.
            if not name.replace("_", "").isalnum():
                raise ValueError(f"unexpected table name in manifest: {name!r}")
            con.execute(
                f"create table {name} as select * from read_parquet($files, union_by_name = true)", {"files": files}
            )
        for sql_file in sorted(SQL_DIR.glob("*.sql")):
            con.execute(f"create view {sql_file.stem} as {sql_file.read_text().strip().rstrip(';')}")
    finally:
        con.close()
    os.replace(tmp, target)
    return target


def query_frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Rows of a query with bound parameters, as a polars frame."""
    result = pl.from_arrow(con.sql(sql, params=params or {}).to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return result
