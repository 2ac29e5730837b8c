"""The report page from its sections: HTML and markdown tables, figure and table sections, and
the self-contained page (figures embedded). Pure: frames and PNG bytes in, text out."""

from __future__ import annotations

import base64
import datetime as dt
import html

import polars as pl


def html_table(frame: pl.DataFrame, digits: int = 1) -> str:
    """The frame as an HTML table (numbers right-aligned, floats to `digits` places)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows():
        cells = "".join(
            f"<td class='n'>{v:,.{digits}f}</td>"
            if isinstance(v, float)
            else f"<td class='n'>{v:,}</td>"
            if isinstance(v, int) and not isinstance(v, bool)
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def md_table(frame: pl.DataFrame, digits: int = 1) -> str:
    """The frame as a markdown table."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(f"{v:,.{digits}f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def with_growth(table: pl.DataFrame) -> pl.DataFrame:
    """Adds, per direction, each statistic's factor against the earliest published week."""
    first = table.sort("week").group_by("direction", maintain_order=True).first()
    joined = table.join(
        first.select("direction", *(pl.col(c).alias(f"{c}_0") for c in ("mean_mb", "median_mb", "mode_mb"))),
        on="direction",
    )
    grown = joined.with_columns(
        (pl.col(c) / pl.col(f"{c}_0")).alias(f"{c.removesuffix('_mb')} x") for c in ("mean_mb", "median_mb", "mode_mb")
    ).drop("mean_mb_0", "median_mb_0", "mode_mb_0")
    return grown.rename(
        {
            "mean_mb": "mean",
            "median_mb": "median",
            "mode_mb": "mode",
            "top1_pct": "top 1% (%)",
            "top10_pct": "top 10% (%)",
        }
    )


def ports_by_week(ports: pl.DataFrame, week: dt.date) -> pl.DataFrame:
    """One row per category, one column of shares per published week; this week's rows first, in
    its order (the report's categories change between years: missing cells stay empty)."""
    wide = ports.with_columns(pl.col("week").cast(pl.String)).pivot(
        on="week", index="category", values="share_pct", sort_columns=True
    )
    order = ports.filter(pl.col("week") == week).select("category", "position")
    return (
        wide.join(order, on="category", how="left")
        .sort(pl.col("position").is_null(), "position", "category")
        .drop("position")
    )


def figure_key(name: str) -> str:
    """The key of a figure ("Figure 3" -> "figure3"): its PNG's file name and its place in the page."""
    return name.lower().replace(" ", "")


def figure_section(name: str, title: str, note: str = "") -> tuple[str, str, str]:
    """A figure's section (title, HTML, markdown), showing the PNG stored under figure_key(name)."""
    key = figure_key(name)
    html_note = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    md_note = f"\n\n{note}" if note else ""
    return (f"{name}: {title}", f"<img alt='{name}' src='{key}'>{html_note}", f"![{name}]({key}.png){md_note}")


def table_section(title: str, frame: pl.DataFrame, digits: int = 1, note: str = "") -> tuple[str, str, str]:
    """A table's section (title, HTML, markdown)."""
    html_note = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    md_note = f"\n\n{note}" if note else ""
    return (title, html_table(frame, digits) + html_note, md_table(frame, digits) + md_note)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td:last-child:not(.n) { white-space: normal; }
img { max-width: 100%; }
.note { color: #666; font-size: 0.85em; }
"""


def assemble_page(week: dt.date, sections: list[tuple[str, str, str]], figures: dict[str, bytes]) -> tuple[str, str]:
    """The self-contained HTML page (figures embedded as data URLs) and the markdown of the sections."""
    body = []
    for title, content, _ in sections:
        for key, png in figures.items():
            content = content.replace(f"src='{key}'", f"src='data:image/png;base64,{base64.b64encode(png).decode()}'")
        body.append(f"<section><h2>{html.escape(title)}</h2>{content}</section>")
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Broadband Traffic Report, week of {week}</title>"
        f"<style>{STYLE}</style></head><body><h1>Broadband Traffic Report, week of {week}</h1>"
        "<p class='note'>IN = upload (from users), OUT = download (to users). MB = 10<sup>6</sup> bytes. "
        "Made from the published warehouse only.</p>" + "".join(body) + "</body></html>"
    )
    markdown = f"# Broadband Traffic Report, week of {week}\n\n" + "\n\n".join(
        f"## {title}\n\n{md}" for title, _, md in sections
    )
    return page, markdown + "\n"
