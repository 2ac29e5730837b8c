"""The house style is checked, not hoped for: ruff (lint + format) and mypy over the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint_and_format_are_clean() -> None:
    lint = _run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_is_clean() -> None:
    result = _run(str(BIN / "mypy"), "flows", "transforms", "expectations", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


# Import rules (layers, purity of transforms/, private modules) are import-linter contracts in
# pyproject.toml; calls that do IO through an allowed library (polars' readers) are found here.
IO_CALL = re.compile(r"\bopen\(|\.read_(text|bytes|parquet|csv)\(|\.write_(text|bytes|parquet|csv)\(|\bscan_parquet\(")


def test_import_contracts_are_kept() -> None:
    result = _run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_catch_a_thread_pool_or_a_private_import(tmp_path: Path) -> None:
    for package in ("flows", "transforms", "expectations"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    usage = tmp_path / "transforms" / "tables" / "usage.py"
    usage.write_text(usage.read_text() + "\nfrom concurrent.futures import ThreadPoolExecutor  # noqa: E402\n")
    weekly = tmp_path / "flows" / "weekly.py"
    weekly.write_text(weekly.read_text() + "\nfrom transforms.attribution._grid import TimeGrid  # noqa: E402\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(BIN / "lint-imports")], cwd=tmp_path, capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode == 1
    assert "transforms is not allowed to import concurrent" in result.stdout
    assert "flows is not allowed to import transforms.attribution._grid" in result.stdout


def test_transforms_do_no_io_calls() -> None:
    impure = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in (ROOT / "transforms").rglob("*.py")
        for line in path.read_text().splitlines()
        # Parsing text or bytes already in memory (io.StringIO, io.BytesIO) is not IO, nor is reading
        # the package's own data files through importlib.resources (transforms/synth/mixtures.py).
        if IO_CALL.search(line)
        and "io.StringIO" not in line
        and "io.BytesIO" not in line
        and "resources.files(__package__)" not in line
    ]
    assert impure == []


POLARS_CALLBACK = re.compile(r"\.(map_elements|map_batches|map_rows|map_groups)\(")


def test_no_python_callbacks_run_inside_polars() -> None:
    # A callback runs on polars' thread pool and waits there for the GIL; a thread holding the GIL
    # while it waits for that pool (to_pandas, for one) then deadlocks both. A backfill running a
    # month's audit beside a week's accounting hung this way: Python work is done on distinct
    # values outside polars instead (transforms/addresses.py, transforms/accounting/privacy.py).
    found = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for package in ("flows", "transforms", "expectations")
        for path in (ROOT / package).rglob("*.py")
        for line in path.read_text().splitlines()
        if POLARS_CALLBACK.search(line)
    ]
    assert found == []
