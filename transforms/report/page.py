"""The report page from its sections: HTML and markdown tables, figure and table sections, and
the self-contained page (figures embedded). Pure: frames and PNG bytes in, text out."""

from __future__ import annotations

import base64
import datetime as dt
import html
import re

import polars as pl

# Column names of the published tables and queries as a reader says them; any other snake_case
# name is shown with spaces (human_header).
HEADERS = {
    "mean_mb": "mean (MB/day)",
    "median_mb": "median (MB/day)",
    "mode_mb": "mode (MB/day)",
    "then_mb": "then (MB/day)",
    "now_mb": "now (MB/day)",
    "annual_factor": "factor per year",
    "attributed_gb": "attributed (GB)",
    "unattributed_gb": "unattributed (GB)",
    "unattributed_pct": "unattributed (%)",
    "table_name": "table",
    "feed_type": "feed type",
    "quarantined_records": "set aside",
    "quarantined_pct": "set aside (%)",
    "share_pct": "share (%)",
    "top1_pct": "top 1% (%)",
    "top10_pct": "top 10% (%)",
}
# Indentation of a table's first column (the port tables' sub-rows), in em.
INDENT_EM = 1.2


def human_header(column: str) -> str:
    """A column's header as the report shows it: HEADERS' wording, else the name with spaces for underscores."""
    return HEADERS.get(column, column.replace("_", " "))


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return f"<td class='n'>{value:,.{digits}f}</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<td class='n'>{value:,}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def html_table(
    frame: pl.DataFrame, digits: int = 1, levels: list[int] | None = None, marks: dict[str, str] | None = None
) -> str:
    """The frame as an HTML table (numbers right-aligned, floats to `digits` places, human headers);
    `levels` indents each row's first cell, `marks` appends a footnote mark to a column's header."""
    marks = marks or {}
    head = "".join(f"<th>{html.escape(human_header(c))}{marks.get(c, '')}</th>" for c in frame.columns)
    rows = []
    for i, row in enumerate(frame.iter_rows()):
        cells = [_cell(v, digits) for v in row]
        level = levels[i] if levels else 0
        if level:
            cells[0] = cells[0].replace(
                "<td", f"<td class='sub' style='padding-left:{0.7 + INDENT_EM * level:.1f}em'", 1
            )
        rows.append(f"<tr class='level{level}'>{''.join(cells)}</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def md_table(
    frame: pl.DataFrame, digits: int = 1, levels: list[int] | None = None, marks: dict[str, str] | None = None
) -> str:
    """The frame as a markdown table (human headers; `levels` indents first cells with em spaces,
    which markdown keeps where it trims ordinary ones)."""
    marks = marks or {}
    lines = [
        "| " + " | ".join(human_header(c) + marks.get(c, "") for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
    ]
    for i, row in enumerate(frame.iter_rows()):
        cells = [f"{v:,.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        if levels and levels[i]:
            cells[0] = "\u2003" * levels[i] + cells[0]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_level(category: str, categories: list[str]) -> int:
    """How deep a port-table row sits: 0 for a protocol (TCP), 1 for a port range (TCP <1024) or a
    port of a protocol without ranges, 2 for a port inside a range ("TCP 443" under "TCP <1024")."""
    protocol, _, rest = category.partition(" ")
    if not rest:
        return 0
    token = rest.split(" ")[0]
    if not token.isdigit():
        return 1
    ranged = any(c.startswith(f"{protocol} <") or c.startswith(f"{protocol} >=") for c in categories)
    return 2 if ranged else 1


def borrowed_port_years(weeks: list[str], mix_years: list[int]) -> dict[str, int]:
    """Week columns ("YYYY-MM-DD") whose year has no port mix of its own among `mix_years`, each with
    the year whose mix the generator uses instead (the nearest)."""
    borrowed = {}
    for week in weeks:
        year = int(week[:4])
        if mix_years and year not in mix_years:
            borrowed[week] = min(mix_years, key=lambda y: (abs(y - year), y))
    return borrowed


def port_table_section(
    title: str, frame: pl.DataFrame, reference_table: str, mix_years: list[int]
) -> tuple[str, str, str]:
    """Table 3 or 4 (section title, HTML, markdown): sub-rows indented under the row they are part
    of, and a footnote on each week column whose year's port mix the generator borrowed."""
    categories = frame["category"].to_list()
    levels = [category_level(c, categories) for c in categories]
    weeks = [c for c in frame.columns if re.fullmatch(r"\d{4}-\d{2}-\d{2}", c)]
    borrowed = borrowed_port_years(weeks, mix_years)
    marks = {week: "*" * (k + 1) for k, week in enumerate(borrowed)}
    notes = [
        "Indented rows are parts of the less indented row above them (a port of its port range or protocol, a "
        "range of its protocol): only the protocol rows (in bold), with the traffic in no row, add up to 100%."
    ]
    notes += [
        f"{marks[week]} Week of {week}: the seed report's {reference_table} starts in {min(mix_years)}, so the "
        f"synthetic generator has no {week[:4]} port mix and generates {week[:4]}'s weeks with {year}'s; "
        f"on generated data this column is {year}'s mix (up to sampling), not {week[:4]}'s."
        for week, year in borrowed.items()
    ]
    body = html_table(frame, 1, levels, marks) + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return (title, body, md_table(frame, 1, levels, marks) + "".join(f"\n\n{n}" for n in notes))


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
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 1.5em auto; padding: 0 1em; color: #222;
       line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
nav ol { columns: 2; font-size: 0.9em; padding-left: 1.5em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0 0.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td:last-child:not(.n) { white-space: normal; }
tr.level0 td:first-child { font-weight: 600; }
tr.level1 td, tr.level2 td { color: #444; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.85em; max-width: 50em; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { max-width: none; margin: 0; padding: 0; font-size: 9.5pt; color: #000; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; margin-top: 1em; }
  section { break-inside: avoid; page-break-inside: avoid; }
  img { max-width: 100%; max-height: 22cm; }
  .scroll { overflow: visible; }
  table { font-size: 8pt; }
  th { background: none; }
  .note { color: #000; }
}
"""


def section_id(title: str) -> str:
    """The anchor of a section ("Figure 3: ..." -> "figure-3"; other titles: their words joined)."""
    head = title.split(":")[0] if title.startswith(("Figure", "Table")) else title
    return re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-")


def assemble_page(week: dt.date, sections: list[tuple[str, str, str]], figures: dict[str, bytes]) -> tuple[str, str]:
    """The self-contained HTML page (figures embedded as data URLs) and the markdown of the sections."""
    body = []
    contents = []
    for title, content, _ in sections:
        for key, png in figures.items():
            content = content.replace(f"src='{key}'", f"src='data:image/png;base64,{base64.b64encode(png).decode()}'")
        anchor = section_id(title)
        body.append(f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{content}</section>")
        contents.append(f"<li><a href='#{anchor}'>{html.escape(title)}</a></li>")
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Broadband Traffic Report, week of {week}</title>"
        f"<style>{STYLE}</style></head><body><h1>Broadband Traffic Report, week of {week}</h1>"
        "<p class='note'>IN = upload (from users), OUT = download (to users). MB = 10<sup>6</sup> bytes. "
        "Made from the published warehouse only. Colours: each service, port bucket and year has one colour "
        "in every figure; IN and OUT are always separate panels.</p>"
        f"<nav><ol>{''.join(contents)}</ol></nav>" + "".join(body) + "</body></html>"
    )
    markdown = f"# Broadband Traffic Report, week of {week}\n\n" + "\n\n".join(
        f"## {title}\n\n{md}" for title, _, md in sections
    )
    return page, markdown + "\n"
