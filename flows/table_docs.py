"""Rewrites the table list of `sql/README.md` from the table declarations (transforms/tables/registry.py)."""

from __future__ import annotations

from pathlib import Path

from transforms.tables.registry import markdown_table_list

BEGIN = (
    "<!-- tables: generated from transforms/tables/registry.py by `python -m flows.table_docs`; "
    "do not edit by hand -->\n"
)
END = "<!-- end of tables -->"


def documented_tables(readme: str) -> str:
    """The generated table list as it stands in a README's text ("" when the markers are missing)."""
    if BEGIN not in readme or END not in readme:
        return ""
    return readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)]


def write_table_docs(readme: Path) -> bool:
    """Replaces the README's table list with the declared one; True when it changed."""
    text = readme.read_text()
    current = documented_tables(text)
    wanted = markdown_table_list()
    if current == wanted:
        return False
    if not current and BEGIN not in text:
        raise ValueError(f"{readme}: no generated table list markers")
    readme.write_text(text.replace(BEGIN + current + END, BEGIN + wanted + END))
    return True


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "sql" / "README.md"
    print(f"{target}: {'rewritten' if write_table_docs(target) else 'already up to date'}")
