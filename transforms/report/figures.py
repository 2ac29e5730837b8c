"""The report's derived figures: densities of log10 daily volume and reproducible user samples."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from transforms.tables.stats import BYTES_PER_MB, MODE_BIN_DECADES, smoothing_kernel

# Figures 3, 4 and 11 span 10 KB to 100 GB a day.
LOG10_MB_RANGE = (-2.0, 5.0)


def density_of_log_volume(bytes_per_day: np.ndarray) -> pl.DataFrame:
    """Rows (log10_mb, density) on 0.05-decade bins from 10 KB to 100 GB: the smoothed share of
    users per decade (the curve integrates to the share of users inside the range)."""
    lo, hi = LOG10_MB_RANGE
    edges = np.arange(lo, hi + MODE_BIN_DECADES / 2, MODE_BIN_DECADES)
    centres = edges[:-1] + MODE_BIN_DECADES / 2
    positive = bytes_per_day[bytes_per_day > 0] / BYTES_PER_MB
    if bytes_per_day.size == 0:
        return pl.DataFrame({"log10_mb": centres, "density": np.zeros(centres.size)})
    counts, _ = np.histogram(np.log10(positive), bins=edges)
    smoothed = np.convolve(counts.astype(float), smoothing_kernel(), mode="same")
    return pl.DataFrame({"log10_mb": centres, "density": smoothed / bytes_per_day.size / MODE_BIN_DECADES})


def sample_users(users: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """At most n rows of `users`, the same ones for the same rows whatever their order."""
    ordered = users.sort("user_key")
    return ordered if ordered.height <= n else ordered.sample(n, seed=seed).sort("user_key")


def nearest_week(published: list[dt.date], target: dt.date, tolerance_days: int = 28) -> dt.date | None:
    """The published week closest to `target` within the tolerance (the report's analysed weeks move
    by a few days from year to year), or None."""
    close = [w for w in published if abs((w - target).days) <= tolerance_days]
    return min(close, key=lambda w: (abs((w - target).days), w)) if close else None


def weeks_of_past_years(published: list[dt.date], week: dt.date, years: int) -> list[dt.date]:
    """This week and, for each of the `years` before, the published week nearest to the same time of
    that year: oldest first, years with none left out (Figures 9, 10 and 11)."""
    found = {week}
    for k in range(1, years + 1):
        earlier = nearest_week(published, week - dt.timedelta(weeks=52 * k))
        if earlier is not None:
            found.add(earlier)
    return sorted(found)


def normalise_monthly_traffic(monthly: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Rows (service, month, direction, level) with each service's levels divided by its January 2020
    OUT (or, when that month is not published, its earliest published OUT), and the base month used
    per service as text. Input rows: (month "YYYY-MM", service, in_bps, out_bps)."""
    long = monthly.unpivot(
        index=["service", "month"], on=["in_bps", "out_bps"], variable_name="direction"
    ).with_columns(pl.col("direction").str.replace("_bps", ""))
    bases = []
    for service in sorted(set(monthly["service"].to_list())):
        rows = monthly.filter(pl.col("service") == service).sort("month")
        chosen = rows.filter(pl.col("month") == "2020-01")
        if chosen.is_empty():
            chosen = rows.head(1)
        bases.append({"service": service, "base_month": chosen["month"][0], "base_bps": chosen["out_bps"][0]})
    base = pl.DataFrame(bases, schema={"service": pl.String, "base_month": pl.String, "base_bps": pl.Float64})
    levels = (
        long.join(base, on="service")
        .with_columns(level=pl.col("value") / pl.col("base_bps"))
        .select("service", "month", "direction", "level")
        .sort("service", "direction", "month")
    )
    text = "; ".join(f"{b['service']}: OUT of {b['base_month']} = 1" for b in bases)
    return levels, text


def month_shift(month: str, months: int) -> str:
    """ "YYYY-MM" moved by a number of months (negative: earlier)."""
    index = int(month[:4]) * 12 + int(month[5:]) - 1 + months
    return f"{index // 12}-{index % 12 + 1:02d}"


def missing_months(months: list[str]) -> list[str]:
    """Months between the first and last of `months` that are not in it."""
    if not months:
        return []
    first, last = min(months), max(months)
    span = (int(last[:4]) - int(first[:4])) * 12 + int(last[5:]) - int(first[5:])
    present = set(months)
    return [m for m in (month_shift(first, i) for i in range(span + 1)) if m not in present]


def month_ranges(months: list[str]) -> list[str]:
    """Consecutive months as "first to last" ranges (single months alone), in order."""
    ranges: list[list[str]] = []
    for month in sorted(months):
        if ranges and month_shift(ranges[-1][-1], 1) == month:
            ranges[-1].append(month)
        else:
            ranges.append([month])
    return [r[0] if len(r) == 1 else f"{r[0]} to {r[-1]} ({len(r)} months)" for r in ranges]


def traffic_growth(levels: pl.DataFrame, month: str) -> pl.DataFrame:
    """Rows (service, direction, period, factor, annual_factor): growth of average monthly traffic
    over the year to `month`, the year before, and five years (with its annualised rate); a period
    whose months are not both published is left out."""
    value = {(r["service"], r["direction"], r["month"]): r["level"] for r in levels.iter_rows(named=True)}
    rows = []
    for service, direction in sorted({(s, d) for s, d, _ in value}):
        for label, start, end, years in (
            (f"{month_shift(month, -12)} -> {month}", month_shift(month, -12), month, 1),
            (
                f"{month_shift(month, -24)} -> {month_shift(month, -12)}",
                month_shift(month, -24),
                month_shift(month, -12),
                1,
            ),
            (f"{month_shift(month, -60)} -> {month}", month_shift(month, -60), month, 5),
        ):
            a, b = value.get((service, direction, start)), value.get((service, direction, end))
            if a and b:
                rows.append(
                    {
                        "service": service,
                        "direction": direction.upper(),
                        "period": label,
                        "factor": b / a,
                        "annual_factor": (b / a) ** (1 / years),
                    }
                )
    return pl.DataFrame(
        rows,
        schema={
            "service": pl.String,
            "direction": pl.String,
            "period": pl.String,
            "factor": pl.Float64,
            "annual_factor": pl.Float64,
        },
    )


def usage_growth(summary: pl.DataFrame, week: dt.date, earlier: dt.date) -> pl.DataFrame:
    """Rows (service, direction, statistic, then_mb, now_mb, factor, annual_factor) of mean, median and
    mode daily usage between two published weeks (`summary`: usage_summary rows of both)."""
    years = max((week - earlier).days / 365.25, 1e-9)
    rows = []
    for (service, direction), group in sorted(summary.group_by("service", "direction"), key=lambda g: str(g[0])):
        then = group.filter(pl.col("week") == earlier)
        now = group.filter(pl.col("week") == week)
        if then.is_empty() or now.is_empty():
            continue
        for statistic in ("mean_mb", "median_mb", "mode_mb"):
            a, b = float(then[statistic][0]), float(now[statistic][0])
            rows.append(
                {
                    "service": str(service),
                    "direction": str(direction).upper(),
                    "statistic": statistic.removesuffix("_mb"),
                    "then_mb": a,
                    "now_mb": b,
                    "factor": b / a if a else float("nan"),
                    "annual_factor": (b / a) ** (1 / round(years)) if a and round(years) else float("nan"),
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "service": pl.String,
            "direction": pl.String,
            "statistic": pl.String,
            "then_mb": pl.Float64,
            "now_mb": pl.Float64,
            "factor": pl.Float64,
            "annual_factor": pl.Float64,
        },
    )


def normalise_port_buckets(buckets: pl.DataFrame, week: dt.date) -> pl.DataFrame:
    """Rows (hour_of_week, bucket, level) of one service's week, plus bucket "all", divided by the
    week's peak hour of all traffic (Figures 7 and 8). Input rows: (day, hour, bucket, bytes)."""
    hourly = buckets.with_columns(hour_of_week=(pl.col("day") - pl.lit(week)).dt.total_days() * 24 + pl.col("hour"))
    total = hourly.group_by("hour_of_week").agg(pl.col("bytes").sum()).with_columns(bucket=pl.lit("all"))
    both = pl.concat(
        [hourly.select("hour_of_week", "bucket", "bytes"), total.select("hour_of_week", "bucket", "bytes")]
    )
    peak = float(total["bytes"].max() or 0) or 1.0  # type: ignore[arg-type]
    return (
        both.with_columns(level=pl.col("bytes") / peak)
        .select("hour_of_week", "bucket", "level")
        .sort("bucket", "hour_of_week")
    )


def same_time_of_year(week: dt.date, other: dt.date, tolerance_days: int = 28) -> bool:
    """True when two weeks fall within the tolerance of the same day of the year, whatever their years
    (the report's analysed weeks: late May to mid-June)."""
    apart = abs(week.timetuple().tm_yday - other.timetuple().tm_yday)
    return min(apart, 366 - apart) <= tolerance_days


def scatter_title(name: str, service: str, shown: int, table_users: int) -> str:
    """Figure 5 / 6's title: how many users it draws, all of the usage table's or a sample of them."""
    of = f"all {shown:,} users of the week" if shown == table_users else f"{shown:,} of {table_users:,} users, sampled"
    return f"{name}: {service} IN vs OUT, {of}"


def scatter_note(in_bytes_per_day: np.ndarray, out_bytes_per_day: np.ndarray, sampled: bool, rates: list[str]) -> str:
    """What Figure 5 / 6's reader needs to read its edges: the users drawn at 0 and, when volumes are
    estimated from sampled packets, the rows of points at the bottom (whole numbers of packets)."""
    zero_in = int(np.count_nonzero(in_bytes_per_day <= 0))
    zero_out = int(np.count_nonzero(out_bytes_per_day <= 0))
    parts = [
        f"Users with no volume in a direction are drawn on the '0' row (IN: {zero_in:,}) or column "
        f"(OUT: {zero_out:,}): none is left out."
    ]
    positive = in_bytes_per_day[in_bytes_per_day > 0]
    if sampled and positive.size:
        floor_mb = float(positive.min()) / BYTES_PER_MB
        at_floor = int(np.count_nonzero(positive <= positive.min() * 1.001))
        users_at_floor = f"{at_floor:,} user" + ("" if at_floor == 1 else "s")
        parts.append(
            f"IN is estimated from sampled flow records ({', '.join(rates) or 'sampled'}): each sampled packet "
            "stands for all the packets of its sampling interval, so a light uploader's estimate is a whole number "
            f"of sampled packets. The lowest row, IN = {floor_mb:.2f} MB/day ({users_at_floor}), is the week's "
            "smallest non-zero estimate, a sampled packet or two (a packet of a feed sampled more sparsely counts "
            "more); the rows above it are more packets. Down there an estimate only says that a few packets were "
            "sampled: the true volume may be several times smaller or larger."
        )
    return " ".join(parts)
