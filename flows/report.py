"""The report people read: one self-contained HTML page (figures embedded, also saved as PNG) and a
markdown version, made from the published warehouse only (the DuckDB catalog and sql/)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from flows import publish, storage
from flows.storage import AnyPath
from transforms import report as derive

SQL = Path(__file__).resolve().parents[1] / "sql"
SCATTER_USERS = 5000
SERVICES = {
    "broadband": ("Table 1", "Table 3", "Figure 2", "Figure 3", "Figure 5"),
    "mobile": ("Table 2", "Table 4", "Figure 9", "Figure 4", "Figure 6"),
}


@dataclass
class Report:
    """The rendered report: page, markdown, and each figure as PNG bytes."""

    week: dt.date
    html: str
    markdown: str
    figures: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0


def _query(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> pl.DataFrame:
    path = SQL / f"{name}.sql"
    text = path.read_text() if path.exists() else (SQL / "report" / f"{name}.sql").read_text()
    return publish.query_frame(con, text, params)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def _hourly_figure(hours: pl.DataFrame, week: dt.date, title: str) -> bytes:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.6))
    gbps = 8 / 3600 / 1e9  # bytes per hour -> Gbit/s
    axis.plot(hours["hour"], hours["out_bytes"] * gbps, label="OUT (download)", color="#1f77b4")
    axis.plot(hours["hour"], 5 * hours["in_bytes"] * gbps, label="IN (upload) x5", color="#d62728")
    axis.set_xlabel("hour of day (local time)")
    axis.set_ylabel("average traffic (Gbit/s)")
    axis.set_xticks(range(0, 24, 3))
    axis.set_ylim(bottom=0)
    axis.set_title(f"{title}: average weekday traffic, week of {week}")
    axis.legend()
    axis.grid(alpha=0.3)
    return _png(figure)


def _density_figure(users: dict[str, pl.DataFrame], title: str) -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for axis, direction in zip(axes, ("in", "out")):
        for label, frame in users.items():
            density = derive.density_of_log_volume(frame[f"{direction}_bytes_per_day"].to_numpy())
            axis.plot(10 ** density["log10_mb"], density["density"], label=label)
        axis.set_xscale("log")
        axis.set_xlabel(f"daily {direction.upper()} volume (MB/day)")
        axis.set_xlim(10**-2, 10**5)
        axis.grid(alpha=0.3, which="both")
        axis.set_title(f"{'IN (upload)' if direction == 'in' else 'OUT (download)'}")
    axes[0].set_ylabel("share of users per decade")
    axes[1].legend()
    figure.suptitle(title, y=1.04)
    return _png(figure)


def _scatter_figure(users: pl.DataFrame, title: str) -> bytes:
    import matplotlib.pyplot as plt

    sample = derive.sample_users(users, SCATTER_USERS)
    figure, axis = plt.subplots(figsize=(5, 5))
    inside = sample.filter((pl.col("in_bytes_per_day") > 0) & (pl.col("out_bytes_per_day") > 0))
    axis.scatter(inside["out_bytes_per_day"] / 1e6, inside["in_bytes_per_day"] / 1e6, s=2, alpha=0.4, color="#1f77b4")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.plot([1e-2, 1e6], [1e-2, 1e6], color="grey", linewidth=0.8, label="IN = OUT")
    axis.set_xlim(1e-2, 1e6)
    axis.set_ylim(1e-2, 1e6)
    axis.set_xlabel("OUT (download), MB/day")
    axis.set_ylabel("IN (upload), MB/day")
    axis.set_title(f"{title}: {inside.height:,} users sampled")
    axis.legend(loc="upper left")
    axis.grid(alpha=0.3, which="both")
    return _png(figure)


def _html_table(frame: pl.DataFrame, digits: int = 1) -> str:
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


def _md_table(frame: pl.DataFrame, digits: int = 1) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(f"{v:,.{digits}f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def _with_growth(table: pl.DataFrame) -> pl.DataFrame:
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


def _ports_by_week(ports: pl.DataFrame, week: dt.date) -> pl.DataFrame:
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


def build_report(warehouse: AnyPath, week: dt.date) -> Report:
    """Renders the report of one published week from the warehouse's catalog."""
    started = time.monotonic()
    manifest = publish.read_manifest(warehouse)
    run_id = publish.published_run(manifest, week)
    if run_id is None:
        raise LookupError(f"week {week} is not published in {warehouse}")
    con = duckdb.connect(str(publish.local_catalog(warehouse)), read_only=True)
    year_before = week - dt.timedelta(weeks=52)
    figures: dict[str, bytes] = {}
    sections: list[tuple[str, str, str]] = []  # (title, html body, markdown body)
    try:
        week_hours = _query(con, "hourly_weekday_traffic").filter(pl.col("week") == week)
        for service, (usage_name, ports_name, hourly_name, density_name, scatter_name) in SERVICES.items():
            view = "table1_broadband_usage" if service == "broadband" else "table2_mobile_usage"
            usage = _with_growth(_query(con, view))
            sections.append(
                (
                    f"{usage_name}: {service} daily usage per user (MB/day), every published week",
                    _html_table(usage, 2) + "<p class='note'>x: factor against the earliest published week.</p>",
                    _md_table(usage, 2),
                )
            )
            port_view = "table3_broadband_ports" if service == "broadband" else "table4_mobile_ports"
            ports = _ports_by_week(_query(con, port_view), week)
            sections.append(
                (
                    f"{ports_name}: {service} usage by port (% of bytes), every published week",
                    _html_table(ports),
                    _md_table(ports),
                )
            )
            hours = week_hours.filter(pl.col("service") == service)
            key = hourly_name.lower().replace(" ", "")
            figures[key] = _hourly_figure(hours, week, f"{hourly_name} ({service})")
            sections.append(
                (
                    f"{hourly_name}: {service} hourly weekday traffic",
                    f"<img alt='{hourly_name}' src='{key}'>",
                    f"![{hourly_name}]({key}.png)",
                )
            )
            users = {f"week of {week}": _query(con, "user_volumes", week=week, service_group=service)}
            earlier = _query(con, "user_volumes", week=year_before, service_group=service)
            note = (
                f"Against the same week a year earlier ({year_before})."
                if earlier.height
                else f"The week of {year_before} is not published: no comparison."
            )
            if earlier.height:
                users[f"week of {year_before}"] = earlier
            key = density_name.lower().replace(" ", "")
            figures[key] = _density_figure(users, f"{density_name}: {service} users' daily volume")
            sections.append(
                (
                    f"{density_name}: density of {service} daily volume",
                    f"<img alt='{density_name}' src='{key}'><p class='note'>{html.escape(note)}</p>",
                    f"![{density_name}]({key}.png)\n\n{note}",
                )
            )
            key = scatter_name.lower().replace(" ", "")
            figures[key] = _scatter_figure(users[f"week of {week}"], f"{scatter_name}: {service} IN vs OUT")
            sections.append(
                (
                    f"{scatter_name}: {service} IN vs OUT per user",
                    f"<img alt='{scatter_name}' src='{key}'>",
                    f"![{scatter_name}]({key}.png)",
                )
            )
        publications = _query(con, "publications", week=week)
        unattributed = _query(con, "unattributed", week=week)
    finally:
        con.close()
    record = manifest["runs"].get(run_id, {})
    audit = (
        "passed"
        if record.get("audit_passed")
        else "FAILED, accepted by the operator"
        if record.get("accepted_failed_audit")
        else "unknown"
    )
    quality = (
        f"<p>Published by run <code>{html.escape(str(run_id))}</code> "
        f"on {html.escape(str(record.get('published_at', '?')))}; audit {audit}.</p>"
        + _html_table(unattributed, 2)
        + _html_table(publications)
    )
    sections.append(
        (
            "Data quality",
            quality,
            f"Run `{run_id}`, audit {audit}.\n\n" + _md_table(unattributed, 2) + "\n\n" + _md_table(publications),
        )
    )
    page, markdown = _assemble(week, sections, figures)
    return Report(week, page, markdown, figures, round(time.monotonic() - started, 2))


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
.note { color: #666; font-size: 0.85em; }
"""


def _assemble(week: dt.date, sections: list[tuple[str, str, str]], figures: dict[str, bytes]) -> tuple[str, str]:
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


def write_report(warehouse: AnyPath, report: Report) -> AnyPath:
    """Saves report.html, report.md and the figures' PNGs under reports/<week>/; returns the page."""
    folder = warehouse / "reports" / str(report.week)
    storage.write_bytes(folder / "report.html", report.html.encode())
    storage.write_bytes(folder / "report.md", report.markdown.encode())
    for key, png in report.figures.items():
        storage.write_bytes(folder / f"{key}.png", png)
    return folder / "report.html"
