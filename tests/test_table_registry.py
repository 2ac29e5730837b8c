"""The table registry is the one declaration of each published table: suites, docs, catalog and
every SQL file agree with it."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from expectations import audit
from flows import publish
from flows.failures import RunFailed
from flows.table_docs import documented_tables
from transforms.tables import registry

ROOT = Path(__file__).resolve().parents[1]
# A value for every parameter the SQL files bind; a new parameter must be added here.
PARAMETERS = {
    "week": dt.date(2024, 6, 3),
    "service": "broadband",
    "service_group": "broadband",
    "limit": 10,
    "threshold_gb": 1.0,
}


def test_every_declared_table_has_a_suite_and_every_suite_a_table() -> None:
    suites = audit.load_suite_definitions()
    assert set(suites) == {t.name for t in registry.TABLES}
    for table in registry.TABLES:
        types = [e["type"] for e in suites[table.name]["expectations"]]
        # The shape from the declaration, once, then the suite's own value checks.
        assert types.count("expect_table_columns_to_match_set") == 1
        assert types.count("expect_column_values_to_not_be_null") == sum(not c.nullable for c in table.columns)
        assert "expect_column_to_exist" not in types


def test_a_suite_repeating_a_structural_check_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in (ROOT / "expectations").glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    suite = json.loads((tmp_path / "port_usage.json").read_text())
    suite["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "port"}})
    (tmp_path / "port_usage.json").write_text(json.dumps(suite))
    monkeypatch.setattr(audit, "SUITE_DIR", tmp_path)
    with pytest.raises(ValueError, match="port_usage.json: expect_column_values_to_not_be_null belongs in"):
        audit.load_suite_definitions()
    (tmp_path / "port_usage.json").unlink()
    (tmp_path / "ports_by_hour.json").write_text(json.dumps({"name": "ports_by_hour", "expectations": []}))
    with pytest.raises(ValueError, match="'ports_by_hour', which is not a declared published table"):
        audit.load_suite_definitions()


def test_the_sql_readme_lists_the_declared_tables() -> None:
    documented = documented_tables((ROOT / "sql" / "README.md").read_text())
    assert documented == registry.markdown_table_list(), "run `python -m flows.table_docs` to rewrite the list"


def test_every_view_and_query_compiles_against_the_declared_tables(tmp_path: Path) -> None:
    # The real catalog build from an empty manifest: every table empty, every view created.
    publish._write_catalog(tmp_path / "catalog.duckdb", tmp_path, publish.empty_manifest(), None)
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"), read_only=True)
    try:
        views = {row[0] for row in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        assert views == {p.stem for p in (ROOT / "sql").glob("*.sql")}
        for table in registry.TABLES:
            columns = [row[0] for row in con.execute(f"describe {table.name}").fetchall()]
            assert columns == [*table.column_names, "run"]
        queries = sorted((ROOT / "sql" / "report").glob("*.sql")) + sorted((ROOT / "sql" / "examples").glob("*.sql"))
        assert len(queries) >= 10
        for query in queries:
            text = query.read_text()
            names = set(re.findall(r"\$([a-z_]+)", text))
            assert names <= set(PARAMETERS), f"{query.name}: give the test a value for {names - set(PARAMETERS)}"
            con.execute(text, {name: PARAMETERS[name] for name in names}).fetchall()
    finally:
        con.close()


def test_a_view_that_does_not_compile_fails_the_catalog_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "good_view.sql").write_text("select week, users from usage_summary")
    (sql / "broken_view.sql").write_text("select week, no_such_column from usage_summary")
    monkeypatch.setattr(publish, "SQL_DIR", sql)
    with pytest.raises(RunFailed, match="view broken_view.sql does not compile: Binder Error"):
        publish.build_catalog(tmp_path / "warehouse")
    assert not (tmp_path / "warehouse" / publish.CATALOG).exists()


def test_a_table_is_published_only_as_declared() -> None:
    table = registry.published_table("usage_summary")
    frame = registry.empty_table("usage_summary")
    assert registry.conform_to_table("usage_summary", frame.select(reversed(frame.columns))).columns == (
        table.column_names
    )
    with pytest.raises(ValueError, match=r"usage_summary does not match .*missing \['users'\]"):
        registry.conform_to_table("usage_summary", frame.drop("users"))
    with pytest.raises(ValueError, match=r"extra \['note'\]"):
        registry.conform_to_table("usage_summary", frame.with_columns(note=pl.lit("x")))
    with pytest.raises(ValueError, match="users is Int32, declared Int64"):
        registry.conform_to_table("usage_summary", frame.with_columns(pl.col("users").cast(pl.Int32)))
