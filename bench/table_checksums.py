"""SHA-256 of every published table's canonical CSV, to show two warehouses publish the same data.

    .venv/bin/python bench/table_checksums.py data/warehouse [other/warehouse]

One line per (table, week or month): rows, SHA-256 (first 16 hex digits) of the rows sorted on
every column and written as CSV, and a hash of the schema (names and types). With two warehouses,
the lines that differ are printed and the exit status is 1. Files are read as the manifest lists
them, so retained older runs are ignored.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import polars as pl


def checksums(warehouse: Path) -> dict[tuple[str, str], str]:
    """(table, partition) -> "rows csv-sha256 schema-sha256" for every published partition."""
    manifest = json.loads((warehouse / "_manifest.json").read_text())
    out = {}
    for table, parts in sorted(manifest["tables"].items()):
        for key, entry in sorted(parts.items()):
            frame = pl.concat([pl.read_parquet(warehouse / f) for f in entry["files"]])
            frame = frame.sort(frame.columns, nulls_last=True)
            rows = hashlib.sha256(frame.write_csv().encode()).hexdigest()[:16]
            schema = hashlib.sha256(str(list(frame.schema.items())).encode()).hexdigest()[:8]
            out[(table, key)] = f"{frame.height} {rows} {schema}"
    return out


def main(arguments: list[str]) -> int:
    first = checksums(Path(arguments[0]))
    if len(arguments) == 1:
        for (table, key), line in first.items():
            print(table, key, line)
        return 0
    second = checksums(Path(arguments[1]))
    differ = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
    for table, key in differ:
        print(table, key, first.get((table, key), "-"), "|", second.get((table, key), "-"))
    print(
        f"{len(first.keys() & second.keys()) - len([k for k in differ if k in first and k in second])} "
        f"partitions identical, {len(differ)} differ or exist in one warehouse only"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
