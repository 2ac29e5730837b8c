"""Every published table, declared once: its grain, columns (type, nulls, meaning) and key.

From these declarations come the structural checks of each table's Great Expectations suite
(exact column set, types, not-null columns, unique key), the empty typed tables that let every
`sql/` view compile before a table is first published, the table list of `sql/README.md`, and
the list of tables a weekly run must publish. Value checks particular to a table (ranges, sets,
sums) stay in `expectations/<table>.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Column:
    """One column of a published table."""

    name: str
    dtype: pl.DataType
    description: str
    nullable: bool = False


@dataclass(frozen=True)
class PublishedTable:
    """A table of the warehouse: `partition` is "week" (the weekly flow) or "month" (counters)."""

    name: str
    grain: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition: str = "week"

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _week(what: str = "the Monday of its Monday-Sunday week, local time") -> Column:
    return Column("week", pl.Date(), what)


SERVICE = Column("service", pl.String(), "`broadband_pppoe`, `broadband_ipoe` or `mobile`")
SERVICE_GROUP = Column("service", pl.String(), "`broadband` or `mobile`")
DAY = Column("day", pl.Date(), "local day")
HOUR = Column("hour", pl.Int64(), "local hour, 0-23")

TABLES: tuple[PublishedTable, ...] = (
    PublishedTable(
        "user_day_usage",
        "user x local day with traffic",
        (
            DAY,
            SERVICE,
            Column("user_key", pl.String(), "pseudonym: first 128 bits of HMAC-SHA256 of the identity, hex"),
            Column("customer_type", pl.String(), "`personal` or `business`"),
            Column("in_bytes", pl.Float64(), "upload bytes of the day (estimated: sampled x rate)", nullable=True),
            Column("out_bytes", pl.Float64(), "download bytes of the day", nullable=True),
            Column(
                "source",
                pl.String(),
                "`flows`: sampled flows attributed by address; `billing`: mobile accounting counters",
                nullable=True,
            ),
            _week(),
        ),
        ("day", "service", "user_key"),
    ),
    PublishedTable(
        "user_week_usage",
        "user of the week",
        (
            _week(),
            Column("user_key", pl.String(), "pseudonym (as in user_day_usage)"),
            SERVICE,
            Column("service_group", pl.String(), "`broadband` or `mobile`", nullable=True),
            Column("customer_type", pl.String(), "`personal` or `business`"),
            Column("active_days", pl.Int64(), "days of the week with traffic", nullable=True),
            Column("in_bytes_per_day", pl.Float64(), "the week's upload bytes / 7", nullable=True),
            Column("out_bytes_per_day", pl.Float64(), "the week's download bytes / 7", nullable=True),
        ),
        ("week", "service", "user_key"),
    ),
    PublishedTable(
        "usage_summary",
        "service group x direction (personal users)",
        (
            SERVICE_GROUP,
            Column("direction", pl.String(), "`in` (upload) or `out` (download)"),
            Column("users", pl.Int64(), "users in the distribution"),
            Column("mean_mb", pl.Float64(), "mean MB/day"),
            Column("median_mb", pl.Float64(), "median MB/day"),
            Column("mode_mb", pl.Float64(), "mode of the smoothed log-density, MB/day", nullable=True),
            Column("top1_share", pl.Float64(), "share (0-1) of the volume used by the top 1% users", nullable=True),
            Column("top10_share", pl.Float64(), "share (0-1) of the volume used by the top 10% users", nullable=True),
            _week(),
        ),
        ("week", "service", "direction"),
    ),
    PublishedTable(
        "port_usage",
        "service x protocol x port",
        (
            SERVICE_GROUP,
            Column("protocol", pl.UInt8(), "IP protocol number"),
            Column("port", pl.Int32(), "lower of the two ports; null for protocols without ports", nullable=True),
            Column("bytes", pl.UInt64(), "bytes of the week (estimated: sampled bytes x sampling rate)"),
            _week(),
        ),
        ("week", "service", "protocol", "port"),
    ),
    PublishedTable(
        "port_share",
        "service x report category",
        (
            SERVICE_GROUP,
            Column("position", pl.Int32(), "row order of Tables 3 and 4", nullable=True),
            Column("category", pl.String(), "`TCP`, `TCP 443`, ..., `Other`"),
            Column("is_protocol_total", pl.Boolean(), "a protocol's total row (its ports are sub-rows)", nullable=True),
            Column("bytes", pl.Float64(), "bytes of the category", nullable=True),
            Column("share_pct", pl.Float64(), "% of the service's bytes of the week"),
            _week(),
        ),
        ("week", "service", "category"),
    ),
    PublishedTable(
        "traffic_hour",
        "service x local day x hour",
        (
            SERVICE_GROUP,
            DAY,
            HOUR,
            Column("in_bytes", pl.UInt64(), "upload bytes attributed to users", nullable=True),
            Column("out_bytes", pl.UInt64(), "download bytes attributed to users", nullable=True),
            Column("unattributed_bytes", pl.UInt64(), "bytes that matched no user", nullable=True),
            _week(),
        ),
        ("week", "service", "day", "hour"),
    ),
    PublishedTable(
        "port_bucket_hour",
        "service x local day x hour x bucket",
        (
            SERVICE_GROUP,
            DAY,
            HOUR,
            Column("bucket", pl.String(), "`TCP 80/443`, `TCP >=1024`, `UDP 443` or `other` (Figures 7 and 8)"),
            Column("bytes", pl.Float64(), "all flow bytes, attributed or not"),
            _week(),
        ),
        ("week", "service", "day", "hour", "bucket"),
    ),
    PublishedTable(
        "ingest_quality",
        "feed of the week",
        (
            Column("feed_type", pl.String(), "`flows` or `radius`"),
            Column("feed", pl.String(), "exporter, or `accounting`"),
            Column("service", pl.String(), "service the feed meters"),
            Column("records", pl.Int64(), "records used"),
            Column("quarantined_records", pl.Int64(), "records set aside (unreadable, no sampling rate)"),
            Column("sampling", pl.String(), "rates and where each came from, with its share of records"),
            Column("quarantined_pct", pl.Float64(), "% of the feed's records set aside"),
            _week(),
        ),
        ("week", "feed_type", "feed"),
    ),
    PublishedTable(
        "exporter_day_records",
        "exporter x local day of the week",
        (
            Column("exporter", pl.String(), "the exporter's folder name in the landing zone"),
            Column("service", pl.String(), "service whose traffic the exporter meters"),
            DAY,
            Column("records", pl.Int64(), "flow records of the day staged for attribution (0: a silent day)"),
            _week(),
        ),
        ("week", "exporter", "day"),
    ),
    PublishedTable(
        "monthly_traffic",
        "month x service",
        (
            Column("service", pl.String(), "service of the interfaces"),
            Column("in_bps", pl.Float64(), "average upload bit/s of the month from interface counters (Figure 1)"),
            Column("out_bps", pl.Float64(), "average download bit/s of the month"),
            Column("coverage", pl.Float64(), "share of the month the least-covered interface's polls cover"),
            Column("interfaces", pl.Int64(), "interfaces of the service"),
            Column("counter_resets", pl.Int64(), "intervals not counted: counters went down"),
            Column("month", pl.String(), "`YYYY-MM`, local time"),
        ),
        ("month", "service"),
        partition="month",
    ),
)

BY_NAME = {t.name: t for t in TABLES}
WEEKLY_TABLES = tuple(t.name for t in TABLES if t.partition == "week")


def published_table(name: str) -> PublishedTable:
    """The declaration of one table (KeyError naming it when there is none)."""
    return BY_NAME[name]


def _pandas_types(column: Column) -> list[str]:
    """Pandas dtype names GX sees for a column after polars' to_pandas (text is made `object`)."""
    dtype = column.dtype
    if dtype == pl.String:
        return ["str"]
    if dtype == pl.Date:
        return ["datetime64[ms]", "datetime64[us]", "datetime64[ns]"]
    if dtype == pl.Boolean:
        return ["bool"]
    name = str(dtype).lower()
    # pandas turns a signed integer column with nulls into float64.
    return [name, "float64"] if column.nullable and dtype in (pl.Int32, pl.Int16, pl.Int8) else [name]


def structural_expectations(table: PublishedTable) -> list[dict[str, object]]:
    """GX expectation configurations (type, kwargs) of a table's shape: exact column set, each
    column's type, not-null columns, unique key."""
    checks: list[dict[str, object]] = [
        {
            "type": "expect_table_columns_to_match_set",
            "kwargs": {"column_set": table.column_names, "exact_match": True},
        }
    ]
    for column in table.columns:
        checks.append(
            {
                "type": "expect_column_values_to_be_in_type_list",
                "kwargs": {"column": column.name, "type_list": _pandas_types(column)},
            }
        )
        if not column.nullable:
            checks.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column.name}})
    # "never": a key with a null part (a port-less protocol's port) still counts as a key.
    checks.append(
        {
            "type": "expect_compound_columns_to_be_unique",
            "kwargs": {"column_list": list(table.key), "ignore_row_if": "never"},
        }
    )
    return checks


STRUCTURAL_TYPES = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_column_to_exist",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_not_be_null",
        "expect_compound_columns_to_be_unique",
    }
)


def conform_to_table(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The frame's columns in the declared order; ValueError naming the table and the columns
    missing, extra or of another type than declared."""
    table = published_table(name)
    missing = [c for c in table.column_names if c not in frame.columns]
    extra = [c for c in frame.columns if c not in table.column_names]
    wrong = [
        f"{c.name} is {frame.schema[c.name]}, declared {c.dtype}"
        for c in table.columns
        if c.name in frame.columns and frame.schema[c.name] != c.dtype
    ]
    if missing or extra or wrong:
        problems = [f"missing {missing}"] * bool(missing) + [f"extra {extra}"] * bool(extra) + wrong
        raise ValueError(f"table {name} does not match its declaration: {'; '.join(problems)}")
    return frame.select(table.column_names)


def empty_table(name: str) -> pl.DataFrame:
    """No rows, the declared columns and types."""
    return pl.DataFrame(schema=published_table(name).schema)


def markdown_table_list() -> str:
    """The `sql/README.md` list of tables: one row per table with its grain and columns."""
    lines = ["| table | one row per | key | columns |", "|---|---|---|---|"]
    for table in TABLES:
        columns = "; ".join(
            f"`{c.name}` {c.dtype}{'' if c.nullable else ' not null'}: {c.description}" for c in table.columns
        )
        lines.append(f"| `{table.name}` | {table.grain} | {', '.join(table.key)} | {columns} |")
    return "\n".join(lines) + "\n"
