"""Where the code finds the files it ships: the catalog's views and the report's queries (sql/).

sql/ is a folder of SQL files with no Python in it, installed as the data-only (namespace) package
`sql` (pyproject's packages.find and package-data), so it is found the same way from a source
checkout, an editable install and an installed wheel: through the import system, never by a path
relative to this file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SQL_PACKAGE = "sql"
# A file every copy of this project's sql/ holds. `sql` has no __init__.py, so every folder named sql
# on sys.path (the current folder's, under `python -m`) is a portion of it: the marker picks ours.
SQL_MARKER = "table1_broadband_usage.sql"


def sql_folder() -> Path:
    """The folder of this project's SQL files (views at the top, report/ and examples/ below).

    Read from the namespace package's portions (its import spec) rather than through
    importlib.resources.files(), which on Python < 3.13 raises NotADirectoryError for a namespace
    package of a setuptools editable install (its path holds the finder's placeholder entry,
    python/importlib_resources#311)."""
    spec = importlib.util.find_spec(SQL_PACKAGE)
    portions = list(spec.submodule_search_locations or []) if spec is not None else []
    for portion in portions:
        if (Path(portion) / SQL_MARKER).is_file():
            return Path(portion)
    raise FileNotFoundError(
        f"this project's SQL files are not installed: no {SQL_MARKER} in the package {SQL_PACKAGE!r} "
        f"(searched {portions}; a wheel built without sql/, or another package named sql shadowing it)"
    )


def sql_path(*parts: str) -> Path:
    """A file under the SQL folder, e.g. sql_path("report", "user_volumes.sql")."""
    return sql_folder().joinpath(*parts)
