"""The package works as installed, not only from the source tree: every import is declared in
pyproject, and the built wheel holds its data files (sql/, the expectation suites, the fitted
mixtures) and runs a week end to end from a folder that is not the checkout."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions, version
from pathlib import Path

import duckdb
import pytest

from tests.conftest import TEST_KEY, WEEK

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_CODE = ("flows", "transforms", "expectations")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(requirement: str) -> str:
    """The distribution a requirement names ("moto[server]>=5.1" -> "moto")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unreadable requirement in pyproject: {requirement!r}"
    return _normalized(match.group(1))


def _declared(*extras: str) -> set[str]:
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {_distribution(r) for r in requirements}


def _project_packages() -> set[str]:
    """Top-level packages the wheel ships (pyproject's packages.find include patterns)."""
    return {
        pattern.rstrip("*").rstrip(".") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }


def _imports(path: Path) -> set[tuple[str, int]]:
    """(top-level module, line) of every absolute import in a file: statements anywhere (inside
    functions too) and importlib.import_module / __import__ calls with a literal name."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found |= {(name.split(".")[0], getattr(node, "lineno", 0)) for name in names if not name.startswith(".")}
    return found


def _undeclared(files: list[Path], declared: set[str], own: set[str]) -> list[str]:
    """'file:line: module' for every import that is neither stdlib, nor one of `own` packages, nor
    provided by a distribution in `declared` (normalized names)."""
    providers = packages_distributions()
    problems = []
    for path in files:
        for module, line in sorted(_imports(path), key=lambda found: (found[1], found[0])):
            if module in sys.stdlib_module_names or module in own:
                continue
            distributions = {_normalized(d) for d in providers.get(module, [])}
            if not distributions & declared:
                why = (
                    f"provided by {sorted(distributions)}" if distributions else "no installed distribution provides it"
                )
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                problems.append(f"{shown}:{line}: {module} ({why}; not declared in pyproject)")
    return problems


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_package_code_imports_only_declared_distributions() -> None:
    # The package's optional extras (dask) may be imported by the code that needs them; dev may not.
    extras = [e for e in PYPROJECT["project"]["optional-dependencies"] if e != "dev"]
    assert _undeclared(_python_files(*PACKAGE_CODE), _declared(*extras), _project_packages()) == []


def test_the_tests_import_only_declared_distributions() -> None:
    assert _undeclared(_python_files("tests"), _declared("dev"), _project_packages() | {"tests"}) == []


def test_an_undeclared_import_is_found(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "import json\nimport polars\nfrom flows import cli\n\n\ndef f():\n    import yaml\n"
        "    importlib.import_module('cloudpickle')\n    importlib.import_module('rich.progress')\n"
    )
    problems = _undeclared([module], {"polars", "cloudpickle"}, {"flows"})
    assert [p.split(" (")[0].removeprefix(str(module)) for p in problems] == [":7: yaml", ":9: rich"], problems


# --- the built wheel, installed without -e -------------------------------------------------------


def _build_isolation_args() -> list[str]:
    """--no-build-isolation (no network) when this environment meets pyproject's build requirements
    (setuptools >= the required version, with bdist_wheel: setuptools >= 70.1 or the wheel package);
    otherwise pip builds in an isolated environment it installs from the package registry."""
    required = [r for r in PYPROJECT["build-system"]["requires"] if _distribution(r) == "setuptools"]
    minimum = tuple(int(p) for p in re.findall(r">=\s*([\d.]+)", required[0])[0].split(".")) if required else (0,)
    try:
        have = tuple(int(p) for p in re.findall(r"\d+", version("setuptools"))[:2])
    except Exception:  # not installed
        return []
    try:
        version("wheel")
        has_bdist_wheel = True
    except Exception:
        has_bdist_wheel = have >= (70, 1)
    return ["--no-build-isolation"] if have >= minimum and has_bdist_wheel else []


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel built from a copy of the sources it is made of (so the build leaves nothing in the
    checkout, where other work may be going on)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in sorted(_project_packages()):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *_build_isolation_args(), "-w", str(dist)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    built = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("trafficreport-*.whl")
    return wheel


@pytest.mark.slow
def test_the_installed_wheel_runs_a_week_outside_the_checkout(tmp_path: Path, prefect_server: str) -> None:
    wheel = _build_wheel(tmp_path)

    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        str(p.relative_to(ROOT))
        for pattern in ("sql/**/*.sql", "sql/README.md", "expectations/*.json", "transforms/synth/fitted_mixtures.json")
        for p in ROOT.glob(pattern)
    }
    assert {"sql/README.md", "sql/report/user_volumes.sql", "sql/examples/top_ports.sql"} <= shipped
    assert len([n for n in shipped if n.startswith("expectations/")]) >= 9
    assert shipped - names == set(), "data files missing from the wheel"
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench/", "deploy/"))]
    assert not [n for n in names if n.startswith("sql/") and n.endswith(".py")], "sql/ must stay a folder of data"

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    work = tmp_path / "work"  # the commands' current folder: no sql/, flows/ or data/ here
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PREFECT_API_URL")}
    env.update(
        PYTHONPATH=str(target),
        PREFECT_API_URL=prefect_server,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        TRAFFICREPORT_HMAC_KEY=TEST_KEY,
    )

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    where = run(
        "-c",
        "import json, flows, transforms, expectations, expectations.audit as audit, transforms.synth.mixtures as m\n"
        "from flows.resources import sql_folder\n"
        "print(json.dumps({'flows': flows.__file__, 'transforms': transforms.__file__,\n"
        "    'expectations': expectations.__file__, 'suites': str(audit.SUITE_DIR), 'sql': str(sql_folder()),\n"
        "    'mixtures': m.__file__, 'mixture_count': len(m.MIXTURES)}))",
    )
    located = json.loads(where.stdout)
    assert located.pop("mixture_count") > 0
    for what, path in located.items():
        assert Path(path).resolve().is_relative_to(target.resolve()), f"{what} from {path}, not the installed wheel"

    run("-m", "flows.cli", "generate", "--week", str(WEEK), "--out", "landing", "--users", "200", "--phones", "80")
    run(
        "-m", "flows.cli", "weekly", "--week", str(WEEK), "--landing", "landing", "--warehouse", "wh", "--staging", "st"
    )

    con = duckdb.connect(str(work / "wh" / "catalog.duckdb"), read_only=True)
    try:
        views = {row[0] for row in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
        rows = con.execute("select count(*) from table1_broadband_usage").fetchone()
    finally:
        con.close()
    assert {p.stem for p in (ROOT / "sql").glob("*.sql")} <= views
    assert rows is not None and rows[0] > 0
    queried = run("-m", "flows.cli", "query", "select count(*) as n from table3_broadband_ports", "--warehouse", "wh")
    counts = re.findall(r"│\s*(\d+)\s*│", queried.stdout)
    assert counts and int(counts[-1]) > 0, queried.stdout

    report = work / "wh" / "reports" / str(WEEK)
    assert (report / "report.html").stat().st_size > 0 and (report / "report.md").stat().st_size > 0
