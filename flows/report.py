"""The report people read: one self-contained HTML page (figures embedded, also saved as PNG) and a
markdown version, made from the published warehouse only (the DuckDB catalog and sql/)."""

from __future__ import annotations

import datetime as dt
import html
import io
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from flows import publish, storage
from flows.resources import sql_folder
from flows.storage import AnyPath
from transforms.report import figures as derive
from transforms.report import page as report_page

SQL = sql_folder()
SCATTER_USERS = 5000
SERVICES = {
    "broadband": ("Table 1", "Table 3", "Figure 3", "Figure 5"),
    "mobile": ("Table 2", "Table 4", "Figure 4", "Figure 6"),
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


def _hourly_figure(hours: pl.DataFrame, weeks: list[dt.date], directions: tuple[str, ...], title: str) -> bytes:
    """Hourly average weekday traffic, one line per week; one panel per direction (the upload panel
    has its own, enlarged, scale)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(directions), 1, figsize=(7, 3.2 * len(directions)), squeeze=False)
    gbps = 8 / 3600 / 1e9  # bytes per hour -> Gbit/s
    for axis, direction in zip(axes[:, 0], directions):
        for week in weeks:
            rows = hours.filter(pl.col("week") == week).sort("hour")
            axis.plot(rows["hour"], rows[f"{direction}_bytes"] * gbps, marker=".", label=f"week of {week}")
        label = "OUT (download)" if direction == "out" else "IN (upload)"
        axis.set_ylabel(f"{label}, Gbit/s")
        axis.set_xticks(range(0, 24, 3))
        axis.set_xlim(0, 23)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    axes[-1, 0].set_xlabel("hour of day (local time), weekdays Monday-Friday")
    axes[0, 0].set_title(title)
    return _png(figure)


def _monthly_figure(levels: pl.DataFrame, base_note: str) -> bytes:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    services = sorted(set(levels["service"].to_list()))
    figure, axes = plt.subplots(1, len(services), figsize=(5 * len(services), 3.8), squeeze=False)
    for axis, service in zip(axes[0], services):
        for direction, colour in (("out", "#1f77b4"), ("in", "#d62728")):
            rows = levels.filter((pl.col("service") == service) & (pl.col("direction") == direction)).sort("month")
            months = [dt.date(int(m[:4]), int(m[5:]), 15) for m in rows["month"]]
            label = "OUT (download)" if direction == "out" else "IN (upload)"
            axis.plot(months, rows["level"], marker=".", markersize=3, color=colour, label=label)
        axis.set_title(service)
        axis.xaxis.set_major_locator(mdates.YearLocator())
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
        axis.set_xlabel("month")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    axes[0, 0].set_ylabel("average traffic (normalised)")
    figure.suptitle(f"Figure 1: monthly average traffic ({base_note})", y=1.02)
    return _png(figure)


def _port_bucket_figure(panels: list[tuple[dt.date, pl.DataFrame]], buckets: tuple[str, ...], title: str) -> bytes:
    """One panel per week (oldest on top): each bucket's traffic per hour of the week, normalised so
    the week's peak hour of all traffic is 1."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), squeeze=False, sharex=True)
    for axis, (week, levels) in zip(axes[:, 0], panels):
        for bucket in ("all", *buckets):
            rows = levels.filter(pl.col("bucket") == bucket).sort("hour_of_week")
            style = {"color": "black", "linewidth": 1.0} if bucket == "all" else {"linewidth": 1.2}
            axis.plot(rows["hour_of_week"], rows["level"], label=bucket if bucket != "all" else "all traffic", **style)
        axis.set_ylim(0, 1.05)
        axis.set_ylabel("traffic (week's peak = 1)")
        axis.set_title(f"week of {week}", fontsize="medium")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xticks(range(0, 7 * 24 + 1, 24), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", ""])
    axes[-1, 0].set_xlabel("day of the week (local time)")
    axes[0, 0].legend(fontsize="small", ncol=4, loc="upper left")
    figure.suptitle(title, y=1.01)
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


def _has_rows(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when the catalog's table `name` (a declared table: it always exists, empty until
    published) holds rows."""
    rows = con.execute(f"select exists (select 1 from {name})").fetchall()  # name: a fixed table name
    return bool(rows[0][0])


def _figure_section(
    figures: dict[str, bytes], name: str, png: bytes, title: str, note: str = ""
) -> tuple[str, str, str]:
    figures[report_page.figure_key(name)] = png
    return report_page.figure_section(name, title, note)


def _monthly_sections(
    con: duckdb.DuckDBPyConnection, week: dt.date, figures: dict[str, bytes]
) -> list[tuple[str, str, str]]:
    """Figure 1 and the traffic growth table, from the published months (a note when there are none)."""
    if not _has_rows(con, "monthly_traffic"):
        note = "No month of interface counters is published: run `trafficreport backfill` over months with counters."
        return [("Figure 1: monthly traffic", f"<p class='note'>{note}</p>", note)]
    monthly = _query(con, "monthly_traffic")
    levels, base_note = derive.normalise_monthly_traffic(monthly)
    gaps = derive.missing_months(monthly["month"].unique().to_list())
    months = sorted(monthly["month"].unique().to_list())
    span = f"{months[0]} to {months[-1]}"
    note = f"Published months {span}; " + (
        f"missing: {', '.join(derive.month_ranges(gaps))}." if gaps else "none missing."
    )
    sections = [
        _figure_section(
            figures, "Figure 1", _monthly_figure(levels, base_note), "monthly average traffic per service", note
        )
    ]
    growth = derive.traffic_growth(levels, f"{week:%Y-%m}")
    sections.append(
        report_page.table_section(
            f"Traffic growth to {week:%Y-%m} (average monthly traffic)",
            growth,
            2,
            "factor: later month / earlier month; annual_factor: the factor per year.",
        )
    )
    return sections


def _five_year_section(con: duckdb.DuckDBPyConnection, week: dt.date, published: list[dt.date]) -> tuple[str, str, str]:
    earlier = derive.nearest_week(published, week - dt.timedelta(weeks=52 * 5))
    title = "Five years: growth of daily usage per user"
    if earlier is None:
        note = f"No week near {week - dt.timedelta(weeks=260)} is published: no five-year comparison."
        return (title, f"<p class='note'>{note}</p>", note)
    growth = derive.usage_growth(_query(con, "usage_summaries"), week, earlier)
    return report_page.table_section(
        f"{title} (week of {earlier} to week of {week})",
        growth,
        2,
        "MB/day; factor: now / then; annual_factor: the factor per year.",
    )


def build_report(warehouse: AnyPath, week: dt.date) -> Report:
    """Renders the report of one published week from the warehouse's catalog."""
    started = time.monotonic()
    manifest = publish.read_manifest(warehouse)
    run_id = publish.published_run(manifest, week)
    if run_id is None:
        raise LookupError(f"week {week} is not published in {warehouse}")
    con = duckdb.connect(str(publish.local_catalog(warehouse)), read_only=True)
    published = sorted(dt.date.fromisoformat(w) for w in manifest["tables"].get("usage_summary", {}))
    year_before = derive.nearest_week(published, week - dt.timedelta(weeks=52))
    past_years = derive.weeks_of_past_years(published, week, 5)
    # Figure 2: the weeks from the one a year earlier (analysed weeks drift by days) to this one.
    past_year_weeks = [w for w in published if (year_before or week - dt.timedelta(weeks=52)) <= w <= week]
    no_year_before = f"No week near {week - dt.timedelta(weeks=52)} is published: no comparison with a year earlier."
    figures: dict[str, bytes] = {}
    sections: list[tuple[str, str, str]] = []  # (title, html body, markdown body)
    volumes: dict[tuple[dt.date, str], pl.DataFrame] = {}

    def user_volumes(of_week: dt.date, service: str) -> pl.DataFrame:
        # Figures 3-6 and 11 share weeks: each week's users are read once.
        if (of_week, service) not in volumes:
            volumes[(of_week, service)] = _query(con, "user_volumes", week=of_week, service_group=service)
        return volumes[(of_week, service)]

    try:
        sections += _monthly_sections(con, week, figures)
        hours = _query(con, "hourly_weekday_traffic")
        broadband_hours = hours.filter(pl.col("service") == "broadband")
        sections.append(
            _figure_section(
                figures,
                "Figure 2",
                _hourly_figure(
                    broadband_hours, past_year_weeks, ("out", "in"), "Figure 2: broadband weekday traffic per hour"
                ),
                "broadband hourly weekday traffic, published weeks of the past year",
            )
        )
        for service, (usage_name, *_) in SERVICES.items():
            view = "table1_broadband_usage" if service == "broadband" else "table2_mobile_usage"
            sections.append(
                report_page.table_section(
                    f"{usage_name}: {service} daily usage per user (MB/day), every published week",
                    report_page.with_growth(_query(con, view)),
                    2,
                    "x: factor against the earliest published week; top 1% / 10%: share of all volume "
                    "carried by the heaviest users.",
                )
            )
        sections.append(_five_year_section(con, week, published))
        sections.append(
            _figure_section(
                figures,
                "Figure 9",
                _hourly_figure(
                    broadband_hours, past_years, ("out",), "Figure 9: broadband weekday traffic, five years"
                ),
                "broadband hourly weekday traffic over five years",
            )
        )
        sections.append(
            _figure_section(
                figures,
                "Figure 10",
                _hourly_figure(broadband_hours, past_years, ("in",), "Figure 10: broadband weekday upload, five years"),
                "broadband hourly weekday upload (Figure 9's IN, enlarged)",
            )
        )
        for service, (_, _, density_name, scatter_name) in SERVICES.items():
            users = {f"week of {week}": user_volumes(week, service)}
            if year_before is not None:
                users[f"week of {year_before}"] = user_volumes(year_before, service)
            note = f"Against the week of {year_before}." if year_before else no_year_before
            sections.append(
                _figure_section(
                    figures,
                    density_name,
                    _density_figure(users, f"{density_name}: {service} users' daily volume"),
                    f"density of {service} daily volume",
                    note,
                )
            )
            sections.append(
                _figure_section(
                    figures,
                    scatter_name,
                    _scatter_figure(users[f"week of {week}"], f"{scatter_name}: {service} IN vs OUT"),
                    f"{service} IN vs OUT per user",
                )
            )
        five_years = {f"week of {w}": user_volumes(w, "broadband") for w in past_years}
        sections.append(
            _figure_section(
                figures,
                "Figure 11",
                _density_figure(five_years, "Figure 11: broadband users' daily volume, five years"),
                "density of broadband daily volume over five years",
                f"Weeks shown: {', '.join(map(str, past_years))}.",
            )
        )
        for service, (_, ports_name, *_) in SERVICES.items():
            port_view = "table3_broadband_ports" if service == "broadband" else "table4_mobile_ports"
            sections.append(
                report_page.table_section(
                    f"{ports_name}: {service} usage by port (% of bytes), every published week",
                    report_page.ports_by_week(_query(con, port_view), week),
                )
            )
        bucket_weeks = [w for w in (year_before, week) if w is not None]
        for service, name, buckets in (
            ("broadband", "Figure 7", ("TCP 80/443", "TCP >=1024", "UDP 443")),
            ("mobile", "Figure 8", ("TCP 80/443", "UDP 443")),
        ):
            panels = [
                (w, derive.normalise_port_buckets(_query(con, "port_buckets", week=w, service=service), w))
                for w in bucket_weeks
            ]
            sections.append(
                _figure_section(
                    figures,
                    name,
                    _port_bucket_figure(panels, buckets, f"{name}: {service} port usage over a week"),
                    f"{service} port usage over a week",
                    "" if year_before else no_year_before,
                )
            )
        publications = _query(con, "publications", week=week)
        unattributed = _query(con, "unattributed", week=week)
        feeds = _query(con, "ingest_quality", week=week).rename(
            {"feed_type": "feed type", "quarantined_records": "set aside", "quarantined_pct": "set aside %"}
        )
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
        + "<h3>Feeds: records, set aside, sampling</h3>"
        + report_page.html_table(feeds, 2)
        + "<h3>Attributed and unattributed traffic</h3>"
        + report_page.html_table(unattributed, 2)
        + "<h3>Published tables</h3>"
        + report_page.html_table(publications)
    )
    sections.append(
        (
            "Data quality",
            quality,
            f"Run `{run_id}`, audit {audit}.\n\n"
            + report_page.md_table(feeds, 2)
            + "\n\n"
            + report_page.md_table(unattributed, 2)
            + "\n\n"
            + report_page.md_table(publications),
        )
    )
    page, markdown = report_page.assemble_page(week, sections, figures)
    return Report(week, page, markdown, figures, round(time.monotonic() - started, 2))


def write_report(warehouse: AnyPath, report: Report) -> AnyPath:
    """Saves report.html, report.md and the figures' PNGs under reports/<week>/; returns the page."""
    folder = warehouse / "reports" / str(report.week)
    storage.write_bytes(folder / "report.html", report.html.encode())
    storage.write_bytes(folder / "report.md", report.markdown.encode())
    for key, png in report.figures.items():
        storage.write_bytes(folder / f"{key}.png", png)
    return folder / "report.html"
