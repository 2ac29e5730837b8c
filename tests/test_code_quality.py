"""The house style is checked, not hoped for: ruff (lint + format) and mypy over the code."""

from __future__ import annotations

import re
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
    result = _run(str(BIN / "mypy"), "flows", "transforms", "expectations")
    assert result.returncode == 0, result.stdout + result.stderr


IMPURE_IMPORT = re.compile(r"^(from|import)\s+(prefect|great_expectations|s3fs|boto3|os|pathlib)\b")
IO_CALL = re.compile(r"\bopen\(|\.read_(text|bytes|parquet|csv)\(|\.write_(text|bytes|parquet|csv)\(|\bscan_parquet\(")


def test_transforms_stay_pure() -> None:
    impure = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in (ROOT / "transforms").rglob("*.py")
        for line in path.read_text().splitlines()
        # Parsing text or bytes already in memory (io.StringIO, io.BytesIO) is not IO, nor is reading
        # the package's own data files through importlib.resources (transforms/synth/mixtures.py).
        if IMPURE_IMPORT.match(line.strip())
        or (
            IO_CALL.search(line)
            and "io.StringIO" not in line
            and "io.BytesIO" not in line
            and "resources.files(__package__)" not in line
        )
    ]
    assert impure == []
