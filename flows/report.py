"""The report people read: one self-contained HTML page (figures embedded, also saved as PNG) and a
markdown version, made from the published warehouse only (the DuckDB catalog and sql/)."""

from __future__ import annotations

import datetime as dt
import html
import io
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import polars as pl

from flows import publish, storage
from flows.resources import sql_folder
from flows.storage import AnyPath
from transforms.report import figures as derive
from transforms.report import page as report_page
from transforms.report import style
from transforms.synth import reference

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SQL = sql_folder()
SCATTER_USERS = 5000
# The years whose port mix the generator has (the seed's Tables 3 and 4): a week of another year is
# generated with the nearest one's, which the port tables' footnote says.
PORT_MIX_YEARS = {
    service: [int(c) for c in reference.port_share_table(service).columns[1:]] for service in ("broadband", "mobile")
}
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


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=style.DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def _legend_outside(axis: Axes, **options: Any) -> None:
    """The axis's legend to the right of its frame, where it can cover no data."""
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize="small", **options)


def hourly_figure(
    hours: pl.DataFrame, weeks: list[dt.date], directions: tuple[str, ...], title: str, week: dt.date
) -> Figure:
    """Hourly average weekday traffic, one line per week in its year's colour (weeks at another time
    of year than `week` dashed); one panel per direction (the upload panel has its own, enlarged, scale)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(directions), 1, figsize=(style.FIGURE_WIDTH_IN * 0.8, 3.2 * len(directions)), squeeze=False
    )
    gbps = 8 / 3600 / 1e9  # bytes per hour -> Gbit/s
    for axis, direction in zip(axes[:, 0], directions):
        for shown in weeks:
            rows = hours.filter(pl.col("week") == shown).sort("hour")
            axis.plot(
                rows["hour"],
                rows[f"{direction}_bytes"] * gbps,
                marker=".",
                color=style.year_colour(shown.year),
                linestyle="-" if derive.same_time_of_year(shown, week) else "--",
                label=f"week of {shown}",
            )
        axis.set_ylabel(f"{style.DIRECTION_LABELS[direction]}, Gbit/s")
        axis.set_xticks(range(0, 24, 3))
        # Half an hour of margin: the 0 h and 23 h points are inside the frame, not on it.
        axis.set_xlim(-0.5, 23.5)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    _legend_outside(axes[0, 0])
    axes[-1, 0].set_xlabel("hour of day (local time), weekdays Monday-Friday")
    axes[0, 0].set_title(title)
    return figure


def monthly_figure(levels: pl.DataFrame, base_note: str) -> Figure:
    """Figure 1: one panel per direction (each with its own scale, so IN is not squashed under OUT),
    one line per service in its colour."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(style.FIGURE_WIDTH_IN, 3.6), squeeze=False)
    for axis, direction in zip(axes[0], ("out", "in")):
        for service in sorted(set(levels["service"].to_list())):
            rows = levels.filter((pl.col("service") == service) & (pl.col("direction") == direction)).sort("month")
            months = [dt.date(int(m[:4]), int(m[5:]), 15) for m in rows["month"]]
            axis.plot(
                months, rows["level"], marker=".", markersize=3, color=style.SERVICE_COLOURS.get(service), label=service
            )
        axis.set_title(style.DIRECTION_LABELS[direction])
        axis.xaxis.set_major_locator(mdates.YearLocator())
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
        axis.set_xlabel("month")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel("average traffic (relative)")
    _legend_outside(axes[0, 1])
    figure.suptitle(f"Figure 1: monthly average traffic ({base_note})", y=1.02)
    return figure


def port_bucket_figure(panels: list[tuple[dt.date, pl.DataFrame]], buckets: tuple[str, ...], title: str) -> Figure:
    """One panel per week (oldest on top): each bucket's traffic per hour of the week in the bucket's
    colour, normalised so the week's peak hour of all traffic is 1."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(panels), 1, figsize=(style.FIGURE_WIDTH_IN, 2.8 * len(panels)), squeeze=False, sharex=True
    )
    for axis, (week, levels) in zip(axes[:, 0], panels):
        for bucket in ("all", *buckets):
            rows = levels.filter(pl.col("bucket") == bucket).sort("hour_of_week")
            axis.plot(
                rows["hour_of_week"],
                rows["level"],
                color=style.bucket_colour(bucket),
                linewidth=1.0 if bucket == "all" else 1.2,
                label=style.BUCKET_LABELS.get(bucket, bucket),
            )
        axis.set_ylim(0, 1.05)
        axis.set_xlim(0, 7 * 24)
        axis.set_ylabel("traffic (week's peak = 1)")
        axis.set_title(f"week of {week}", fontsize="medium")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xticks(range(0, 7 * 24 + 1, 24), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", ""])
    axes[-1, 0].set_xlabel("day of the week (local time)")
    _legend_outside(axes[0, 0])
    figure.suptitle(title, y=1.01)
    return figure


def density_figure(users: dict[dt.date, pl.DataFrame], title: str) -> Figure:
    """Density of log10 daily volume, IN and OUT panels, one line per week in its year's colour."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(style.FIGURE_WIDTH_IN, 3.6), sharey=True)
    for axis, direction in zip(axes, ("in", "out")):
        for week, frame in sorted(users.items()):
            density = derive.density_of_log_volume(frame[f"{direction}_bytes_per_day"].to_numpy())
            axis.plot(
                10 ** density["log10_mb"],
                density["density"],
                color=style.year_colour(week.year),
                label=f"week of {week}",
            )
        axis.set_xscale("log")
        axis.set_xlabel(f"daily {direction.upper()} volume (MB/day)")
        axis.set_xlim(10**-2, 10**5)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3, which="both")
        axis.set_title(style.DIRECTION_LABELS[direction])
    axes[0].set_ylabel("share of users per decade")
    _legend_outside(axes[1])
    figure.suptitle(title, y=1.04)
    return figure


# Where users with no volume in a direction are drawn on Figures 5 and 6: a row (column) of its own
# below (left of) the log axes' 10 KB, marked "0".
ZERO_AT_MB = 10**-2.7
SCATTER_LIMITS_MB = (10**-3, 10**6)


def scatter_figure(sample: pl.DataFrame, title: str, service: str) -> Figure:
    """IN vs OUT per user (log-log) in the service's colour; users with 0 in a direction on the "0"
    row or column, so every sampled user is drawn."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5.5))
    out_mb = (sample["out_bytes_per_day"] / 1e6).to_numpy()
    in_mb = (sample["in_bytes_per_day"] / 1e6).to_numpy()
    zero = (in_mb <= 0) | (out_mb <= 0)
    colour = style.SERVICE_COLOURS.get(service, "#333333")
    axis.scatter(out_mb[~zero], in_mb[~zero], s=2, alpha=0.4, color=colour, label="a user")
    if zero.any():
        axis.scatter(
            np.where(out_mb[zero] > 0, out_mb[zero], ZERO_AT_MB),
            np.where(in_mb[zero] > 0, in_mb[zero], ZERO_AT_MB),
            s=12,
            marker="x",
            color="#D55E00",
            label="a user with 0 IN or OUT",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    low, high = SCATTER_LIMITS_MB
    axis.plot([10**-2, high], [10**-2, high], color="grey", linewidth=0.8, label="IN = OUT")
    for line in (axis.axhline, axis.axvline):
        line(10**-2.35, color="grey", linewidth=0.5, linestyle=":")
    powers = range(-2, 7, 2)
    ticks = [ZERO_AT_MB, *(10.0**k for k in powers)]
    labels = ["0", *(f"$10^{{{k}}}$" for k in powers)]  # as Figures 3, 4 and 11 write them
    axis.set_xticks(ticks, labels)
    axis.set_yticks(ticks, labels)
    axis.minorticks_off()
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    axis.set_xlabel("OUT (download), MB/day")
    axis.set_ylabel("IN (upload), MB/day")
    axis.set_title(title)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small", markerscale=3)
    axis.grid(alpha=0.3, which="major")
    return figure


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
            figures,
            "Figure 1",
            _png(monthly_figure(levels, base_note)),
            "monthly average traffic per service",
            note + " IN and OUT have their own scales.",
        )
    ]
    growth = derive.traffic_growth(levels, f"{week:%Y-%m}")
    sections.append(
        report_page.table_section(
            f"Traffic growth to {week:%Y-%m} (average monthly traffic)",
            growth,
            2,
            "factor: later month / earlier month; factor per year: its annual rate.",
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
        "factor: now / then; factor per year: its annual rate.",
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
                _png(
                    hourly_figure(
                        broadband_hours,
                        past_year_weeks,
                        ("out", "in"),
                        "Figure 2: broadband weekday traffic per hour",
                        week,
                    )
                ),
                "broadband hourly weekday traffic, published weeks of the past year",
                "Each year has its colour (the same in every figure); weeks at another time of year are dashed.",
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
                _png(
                    hourly_figure(
                        broadband_hours, past_years, ("out",), "Figure 9: broadband weekday traffic, five years", week
                    )
                ),
                "broadband hourly weekday traffic over five years",
            )
        )
        sections.append(
            _figure_section(
                figures,
                "Figure 10",
                _png(
                    hourly_figure(
                        broadband_hours, past_years, ("in",), "Figure 10: broadband weekday upload, five years", week
                    )
                ),
                "broadband hourly weekday upload (Figure 9's IN, enlarged)",
            )
        )
        feeds = _query(con, "ingest_quality", week=week)
        summaries = _query(con, "usage_summaries")
        usage_users = {
            row["service"]: int(row["users"])
            for row in summaries.filter((pl.col("week") == week) & (pl.col("direction") == "in")).iter_rows(named=True)
        }
        for service, (usage_name, _, density_name, scatter_name) in SERVICES.items():
            users = {week: user_volumes(week, service)}
            if year_before is not None:
                users[year_before] = user_volumes(year_before, service)
            note = f"Against the week of {year_before}." if year_before else no_year_before
            sections.append(
                _figure_section(
                    figures,
                    density_name,
                    _png(density_figure(users, f"{density_name}: {service} users' daily volume")),
                    f"density of {service} daily volume",
                    note,
                )
            )
            everyone = users[week]
            sample = derive.sample_users(everyone, SCATTER_USERS)
            table_users = usage_users.get(service, everyone.height)
            # Broadband volumes are counted from sampled flows; mobile ones from billing counters.
            flow_feeds = feeds.filter((pl.col("feed_type") == "flows") & (pl.col("service") == service))
            rates = sorted({str(s).split(" ")[0] for s in flow_feeds["sampling"].to_list()})
            sections.append(
                _figure_section(
                    figures,
                    scatter_name,
                    _png(
                        scatter_figure(
                            sample,
                            derive.scatter_title(scatter_name, service, sample.height, table_users),
                            service,
                        )
                    ),
                    f"{service} IN vs OUT per user",
                    derive.scatter_note(
                        sample["in_bytes_per_day"].to_numpy(),
                        sample["out_bytes_per_day"].to_numpy(),
                        sampled=service == "broadband",
                        rates=rates,
                    )
                    + ("" if sample.height == table_users else f" {usage_name} counts {table_users:,} users."),
                )
            )
        five_years = {w: user_volumes(w, "broadband") for w in past_years}
        sections.append(
            _figure_section(
                figures,
                "Figure 11",
                _png(density_figure(five_years, "Figure 11: broadband users' daily volume, five years")),
                "density of broadband daily volume over five years",
                f"Weeks shown: {', '.join(map(str, past_years))}.",
            )
        )
        for service, (_, ports_name, *_) in SERVICES.items():
            port_view = "table3_broadband_ports" if service == "broadband" else "table4_mobile_ports"
            sections.append(
                report_page.port_table_section(
                    f"{ports_name}: {service} usage by port (% of bytes), every published week",
                    report_page.ports_by_week(_query(con, port_view), week),
                    ports_name,
                    PORT_MIX_YEARS[service],
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
                    _png(port_bucket_figure(panels, buckets, f"{name}: {service} port usage over a week")),
                    f"{service} port usage over a week",
                    "" if year_before else no_year_before,
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
