"""pmacct `nfacctd` print-plugin output (`print_output: csv` and `json`) read as flows.

What nfacctd 1.7.7 (Debian's pmacct) printed, fed the generator's IPFIX (flows/generate.py, transforms/
synth/exporter.py) over UDP on 127.0.0.1, with `aggregate: src_host, dst_host, src_port, dst_port,
proto, timestamp_start, timestamp_end, sampling_rate, peer_src_ip` (tests/tools/test_pmacct_tools.py):

- CSV: a title line of upper-case names in pmacct's own order, whatever order `aggregate` lists them
  in: `PEER_SRC_IP,SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,SAMPLING_RATE,TIMESTAMP_START,
  TIMESTAMP_END,PACKETS,BYTES` (with `export_proto_sysid` and `flows` also `EXPORT_PROTO_SYSID`
  before and `FLOWS` between the counts: `...,PACKETS,FLOWS,BYTES`). `print_markers` wraps each
  purge in `--START (pid)--` / `--END (pid)--` lines, the first one before the title.
  `print_output_file_append` writes the title once per file. `print_output_separator` may be
  another character than the comma.
- JSON: one object per line, `{"event_type": "purge", "peer_ip_src", "ip_src", "ip_dst",
  "port_src", "port_dst", "ip_proto", "sampling_rate", "timestamp_start", "timestamp_end",
  "export_proto_sysid", "stamp_inserted", "stamp_updated", "flows", "packets", "bytes"}`; markers
  are `{"event_type": "purge_init", ...}` and `{"event_type": "purge_close", ...}` lines.
- Protocols as pmacct's names (`tcp`, `udp`, `gre`, `ipv6-icmp`, ...; numbers for the unnamed),
  as numbers with `print_num_protos: true` (in JSON as a string, "6").
- Timestamps (start/end, also stamp_inserted in JSON): `2024-06-02 15:00:00.123000` by default,
  in the collector's local zone (TZ=Asia/Tokyo printed `2024-06-03 00:00:00.123000` for the same
  flow) with no zone in the text, in UTC with `timestamps_utc: true`; `2024-06-03T00:00:00.123000+09:00`
  or `...Z` with `timestamps_rfc3339: true`; `1717340400.123000` (seconds since the epoch, a string
  in JSON) with `timestamps_since_epoch: true`. `timestamps_secs: true` prints `.000000`. All of
  these are read; a text without a zone is local time in `timezone` (UTC unless told).
- Sampling (the exporters announce 1-in-N in IPFIX options data; IE 34, or IE 305/306 with interval 1
  and space N-1: pmacct reads both):
  - `nfacctd_renormalize: false`: SAMPLING_RATE = N, counts as exported (sampled).
  - `nfacctd_renormalize: true`: SAMPLING_RATE = 1 and counts multiplied by N.
  - no rate announced: SAMPLING_RATE = 0 and counts as exported, renormalising or not.
  - `nfacctd_ext_sampling_rate: M`: SAMPLING_RATE still 0 without renormalising (counts as
    exported); renormalising, counts are multiplied by M, even over an announced N (SAMPLING_RATE 1
    then, 0 when nothing was announced).
  So the output cannot tell renormalised counts from raw ones: SAMPLING_RATE 1 is a 1-in-1
  exporter or a renormalised row, 0 is an unknown rate or counts scaled by the configured rate.
  The caller says which (`counts_scaled`, nfacctd's `nfacctd_renormalize`) and gives the rate
  configured for the collector (`collector_sampling`, nfacctd's `nfacctd_ext_sampling_rate`), if any.
- The print plugin's file names (`print_output_file: nfacctd-%Y%m%d-%H%M.csv` with `print_history`)
  are those of pmacct's time bins of flow start times, not of arrival. Without
  `print_history_roundoff` the bins start at the minute nfacctd started (1h bins named 2326, 0026,
  ...); with 1m bins the flow starting at 15:00:00.123 went into the 14:59 bin (stamp_inserted
  14:59:00), the one a second later into 15:00. Without `print_output_file_append: true` a purge
  rewrites its bin's file, dropping what an earlier purge wrote there. Nothing here relies on
  file names.
- nfacctd ignores SIGTERM; SIGINT makes its plugins purge their caches, then it exits.

Rows become FLOW_SCHEMA flows: packets/bytes are sampled counts and record_rate their 1-in-N rate:

- raw counts (`counts_scaled=False`): record_rate = SAMPLING_RATE where above 0 (source
  `pmacct`), else `collector_sampling` (source `config:collector_sampling`), else null (resolved
  later from the exporter's configuration, like other flows without a rate).
- renormalised counts (`counts_scaled=True`): divided back by sampling.divide_scaled_counts with
  the rate SAMPLING_RATE states where above 1 (pmacct 1.7.7 never printed one), else
  `collector_sampling` (source `config:collector_sampling`), else the greatest common divisor of
  the scaled rows' counts (`pmacct:inferred`: at least the true rate, so sample counts are never
  overstated; volumes are exact either way). A row with SAMPLING_RATE 0 and no
  `collector_sampling` was not scaled by pmacct (it knew no rate): it stays as it is, record_rate null.

PEER_SRC_IP (the exporter's address) is the origin, EXPORT_PROTO_SYSID (the observation domain)
the domain_id when printed (else 0). Blank lines, markers and repeated title lines are no records;
any other line that does not read is one problem (`InputFormatError` naming file and line,
records=1) and is set aside, the first MAX_REPORTED of them one by one, the rest in one more
problem counting them. Nothing is raised: content that is neither format is one problem.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl

from transforms.decode._records import FLOW_SCHEMA, NO_SELECTOR
from transforms.decode.nfdump_csv import _address_columns, _localise
from transforms.decode.sampling import divide_scaled_counts
from transforms.errors import InputFormatError

# Roles of the columns, as the CSV titles and JSON keys of pmacct's print plugin name them.
CSV_TITLES = {
    "origin": "PEER_SRC_IP",
    "domain": "EXPORT_PROTO_SYSID",
    "src": "SRC_IP",
    "dst": "DST_IP",
    "sport": "SRC_PORT",
    "dport": "DST_PORT",
    "proto": "PROTOCOL",
    "rate": "SAMPLING_RATE",
    "first": "TIMESTAMP_START",
    "last": "TIMESTAMP_END",
    "packets": "PACKETS",
    "bytes": "BYTES",
}
JSON_KEYS = {
    "origin": "peer_ip_src",
    "domain": "export_proto_sysid",
    "src": "ip_src",
    "dst": "ip_dst",
    "sport": "port_src",
    "dport": "port_dst",
    "proto": "ip_proto",
    "rate": "sampling_rate",
    "first": "timestamp_start",
    "last": "timestamp_end",
    "packets": "packets",
    "bytes": "bytes",
}
REQUIRED = ("src", "dst", "sport", "dport", "proto", "first", "packets", "bytes")
# pmacct's protocol names (src/pmacct-data.h, as in nfacctd 1.7.7's binary); other protocols print as numbers.
PROTOCOL_NAMES = {
    "icmp": 1,
    "igmp": 2,
    "ggp": 3,
    "ipencap": 4,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "udp": 17,
    "mux": 18,
    "ipv6": 41,
    "ipv6-route": 43,
    "ipv6-frag": 44,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "mobile": 55,
    "tlsp": 56,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "iso-ip": 80,
    "vines": 83,
    "eigrp": 88,
    "ospf": 89,
    "larp": 91,
    "ax.25": 93,
    "ipip": 94,
    "encap": 98,
    "pnni": 102,
    "pim": 103,
    "ipcomp": 108,
    "ipx-in-ip": 111,
    "vrrp": 112,
    "l2tp": 115,
    "isis": 124,
    "sctp": 132,
    "fc": 133,
}
MARKER = r"^--(START|END) \(\d+\)--$"
JSON_MARKERS = ("purge_init", "purge_close")
TITLE = re.compile(r"[A-Z][A-Z0-9_]*")
MAX_REPORTED = 1000
SOURCE = "pmacct"
CONFIG_SOURCE = "config:collector_sampling"  # as nfcapd and nfdump CSV files name it
EMPTY_ORIGIN = "pmacct"  # the origin of rows without PEER_SRC_IP
TEXT = "_text_"  # prefix of the columns holding a role's text as printed


def _lines_head(data: bytes, limit: int = 1 << 16) -> list[str]:
    return data[:limit].decode("utf-8", errors="replace").splitlines()


def _title_line(data: bytes) -> tuple[int, str] | None:
    """(index, text) of the first line that is neither blank nor a marker, in the file's start."""
    for index, line in enumerate(_lines_head(data)):
        text = line.strip()
        if text and not re.match(MARKER, text):
            return index, text
    return None


def _separator(title: str) -> str | None:
    """The character after the first name of a title line (pmacct's print_output_separator)."""
    first = TITLE.match(title)
    if first is None or first.end() >= len(title):
        return None
    return title[first.end()]


def _titles(title: str) -> list[str] | None:
    """The names of a pmacct CSV title line, or None if it is not one."""
    separator = _separator(title)
    if separator is None:
        return None
    names = [name.strip() for name in title.split(separator)]
    if not all(TITLE.fullmatch(name) for name in names):
        return None
    if not {"SRC_IP", "DST_IP", "BYTES"} <= set(names):
        return None
    return names


def is_pmacct_csv(data: bytes) -> bool:
    """Whether `data` starts like pmacct print-plugin CSV: a title line of upper-case names with
    SRC_IP, DST_IP and BYTES (after blank lines or a `--START (pid)--` marker)."""
    found = _title_line(data)
    return found is not None and _titles(found[1]) is not None


def is_pmacct_json(data: bytes) -> bool:
    """Whether the first non-blank line of `data` is a pmacct print-plugin JSON object: a purge
    (with ip_src and ip_dst) or a purge_init marker."""
    for line in _lines_head(data):
        if not line.strip():
            continue
        try:
            first = json.loads(line)
        except ValueError:
            return False
        if not isinstance(first, dict):
            return False
        event = first.get("event_type")
        return event in ("purge_init", "purge_close") or ("ip_src" in first and "ip_dst" in first)
    return False


def decode_pmacct(
    data: bytes,
    exporter: str,
    source: str,
    collector_sampling: int | None,
    *,
    counts_scaled: bool | None = None,
    timezone: str = "UTC",
) -> tuple[pl.DataFrame, list[InputFormatError]]:
    """FLOW_SCHEMA flows of a pmacct print-plugin file (CSV or JSON, told by content), and the
    lines that could not be read (one problem each, set aside).

    `counts_scaled`: the counts were renormalised by nfacctd (`nfacctd_renormalize: true`) or
    not; None tells row by row from SAMPLING_RATE: above 1, raw counts at that rate; 1, counts
    renormalised by a rate not printed (a 1-in-1 exporter's rows too, which the inferred rate
    then gives back as 1); 0 or no column, counts scaled by `collector_sampling` when one is
    configured, else raw counts of an unknown rate. `collector_sampling`: the 1-in-N rate
    configured at the collector (`nfacctd_ext_sampling_rate`), None if none. `timezone`: the zone
    of timestamps printed without one (nfacctd prints the collector's local time unless
    `timestamps_utc` or `timestamps_rfc3339` is set)."""
    if is_pmacct_json(data):
        text, reasons = _json_rows(data)
        names = JSON_KEYS
    elif is_pmacct_csv(data):
        text, reasons, names, header_problem = _csv_rows(data)
        if header_problem is not None:
            problem = InputFormatError(source, header_problem[0], header_problem[1], len(data), text.height)
            return _empty(), [problem]
    else:
        problem = InputFormatError(source, "line 1", "not pmacct print-plugin CSV or JSON", len(data))
        return _empty(), [problem]
    flows, unread = _derive(text, reasons, names, timezone)
    problems = _problems(unread, source)
    flows = _sampling(flows, collector_sampling, counts_scaled)
    flows = flows.with_columns(exporter=pl.lit(exporter))
    return flows.select(pl.col(name).cast(dtype) for name, dtype in FLOW_SCHEMA.items()), problems


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=FLOW_SCHEMA)


def _split_lines(data: bytes) -> tuple[pl.DataFrame, int | None]:
    """(`line` number (1-based), `text`, `size` in bytes) of every line, and the number of the last
    line if it has no line end (pmacct ends every line: it was cut off)."""
    text = data.decode("utf-8", errors="replace")
    lines = (
        pl.DataFrame({"text": [text]})
        .select(pl.col("text").str.split("\n"))
        .explode("text")
        .with_row_index("line", offset=1)
    )
    if data.endswith(b"\n") or not data:
        lines = lines.head(lines.height - 1)
        cut = None
    else:
        cut = lines.height
    lines = lines.with_columns(size=pl.col("text").str.len_bytes(), text=pl.col("text").str.strip_chars_end("\r"))
    return lines, cut


def _cut_reason(cut: int | None, size: int) -> pl.Expr:
    """A reason for the last line when it was cut off (its last value may read as a smaller number)."""
    if cut is None:
        return pl.lit(None, dtype=pl.String)
    return pl.when(pl.col("line") == cut).then(
        pl.lit(f"truncated: the last line has no line end, the file ends after {size} bytes")
    )


def _csv_rows(
    data: bytes,
) -> tuple[pl.DataFrame, pl.Expr, dict[str, str], tuple[str, str] | None]:
    """(the data lines with a text column per role present, a reason expression for lines that are
    unreadable as a whole, the role names, a problem with the title), of a pmacct CSV file."""
    found = _title_line(data)
    assert found is not None
    title_index, title = found
    names = _titles(title)
    separator = _separator(title)
    assert names is not None and separator is not None
    lines, cut = _split_lines(data)
    body = lines.filter(pl.col("line") > title_index + 1)
    stripped = pl.col("text").str.strip_chars()
    body = body.filter((stripped != "") & ~stripped.str.contains(MARKER) & (stripped != title))
    missing = [CSV_TITLES[role] for role in REQUIRED if CSV_TITLES[role] not in names]
    if missing:
        return body, pl.lit(None), CSV_TITLES, (f"line {title_index + 1}", f"pmacct CSV title lacks {missing}")
    position = {name: index for index, name in enumerate(names)}
    count = pl.col("text").str.count_matches(separator, literal=True) + 1
    reasons = pl.coalesce(
        _cut_reason(cut, len(data)),
        pl.when(count != len(names)).then(
            pl.format("{} fields, the title has {}", count.cast(pl.String), pl.lit(str(len(names))))
        ),
    )
    fields = body.select(pl.col("text").str.split_exact(separator, len(names) - 1)).unnest("text")
    columns = [
        fields.to_series(position[name]).str.strip_chars().alias(TEXT + role)
        for role, name in CSV_TITLES.items()
        if name in position
    ]
    frame = body.select("line", "size", _reason=reasons).with_columns(columns)
    return frame, pl.col("_reason"), CSV_TITLES, None


def _json_rows(data: bytes) -> tuple[pl.DataFrame, pl.Expr]:
    """(the data lines with a text column per role, a reason expression for lines that are unreadable
    as a whole) of a pmacct JSON file."""
    lines, cut = _split_lines(data)
    body = lines.filter(pl.col("text").str.strip_chars() != "")
    is_object = pl.col("text").str.strip_chars().str.starts_with("{")
    body = body.with_columns(_object=is_object)
    keys = {"event_type": "event", **{key: TEXT + role for role, key in JSON_KEYS.items()}}
    values = _json_values(body, keys)
    body = body.with_columns(values)
    body = body.filter(pl.col("event").is_null() | ~pl.col("event").is_in(JSON_MARKERS))
    reasons = pl.coalesce(
        _cut_reason(cut, len(data)),
        pl.when(~pl.col("_object")).then(pl.lit("not a JSON object")),
    )
    frame = body.select("line", "size", pl.col(list(keys.values())[1:]).str.strip_chars(), _reason=reasons)
    return frame, pl.col("_reason")


def _json_values(body: pl.DataFrame, keys: dict[str, str]) -> list[pl.Series]:
    """The text of each key (renamed as `keys` says) of each line's object, null where a line is
    not one; scalars only (a number as its text)."""
    dtype = pl.Struct(dict.fromkeys(keys, pl.String()))
    text = pl.when(pl.col("_object")).then(pl.col("text"))
    try:  # all lines valid: one pass of the JSON parser
        decoded = body.select(text.str.json_decode(dtype)).unnest("text")
    except pl.exceptions.ComputeError:
        # Some line is not JSON (or has an object where a value should be): those lines are found
        # first, and if that is not enough, each key is matched on its own (slower, never fails).
        valid = pl.col("_object") & pl.col("text").str.json_path_match("$").is_not_null()
        body = body.with_columns(_object=valid)
        try:
            decoded = body.select(text.str.json_decode(dtype)).unnest("text")
        except pl.exceptions.ComputeError:
            decoded = body.select(text.str.json_path_match(f"$.{key}").alias(key) for key in keys)
    return [decoded[key].alias(name) for key, name in keys.items()] + [body["_object"]]


EPOCH = r"^\d{1,12}(\.\d*)?$"
ZONED = r"(?:[Zz]|[+-]\d\d:?\d\d)$"


def _epoch(t: pl.Expr) -> pl.Expr:
    """`1717340400.123000` (timestamps_since_epoch)."""
    seconds = t.str.extract(r"^(\d{1,12})(?:\.\d*)?$", 1).cast(pl.Int64, strict=False)
    millis = t.str.extract(r"^\d{1,12}\.(\d{1,3})", 1).str.pad_end(3, "0").cast(pl.Int64, strict=False).fill_null(0)
    return (seconds * 1000 + millis).cast(pl.Datetime("ms", "UTC"))


def _zoned(t: pl.Expr) -> pl.Expr:
    """`2024-06-03T00:00:00.123000+09:00` or `...Z` (timestamps_rfc3339)."""
    return (
        t.str.replace(r"[Zz]$", "+00:00")
        .str.replace(r"^(\d{4}-\d\d-\d\d) ", "${1}T")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="ms")
        .dt.convert_time_zone("UTC")
    )


def _naive(t: pl.Expr) -> pl.Expr:
    """`2024-06-02 15:00:00.123000`: a local time without zone."""
    return t.str.replace(r"^(\d{4}-\d\d-\d\d)T", "${1} ").str.strptime(
        pl.Datetime("ms"), "%Y-%m-%d %H:%M:%S%.f", strict=False
    )


def _timestamps(texts: pl.Series, timezone: str) -> pl.Series:
    """UTC instants of pmacct's timestamp texts: seconds since the epoch, RFC 3339 with a zone, or
    local time in `timezone`; null if none of these.

    The form of the first text is read for all rows (its zone looked up per hour, not per row);
    rows it does not read are tried in every form."""
    t = pl.col("t")
    frame = texts.str.strip_chars().to_frame("t")
    sample = frame["t"].drop_nulls()
    first = sample[0] if sample.len() else ""
    if re.match(EPOCH, first):
        parsed = frame.select(_epoch(t)).to_series()
    elif re.search(ZONED, first):
        parsed = frame.select(_zoned(t)).to_series()
    else:
        parsed = _localise(frame.select(_naive(t)).to_series(), timezone)
    rest = np.flatnonzero((parsed.is_null() & frame["t"].is_not_null() & (frame["t"] != "")).to_numpy())
    if rest.size:
        local = _naive(t).dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        again = frame[rest].select(pl.coalesce(_epoch(t), _zoned(t), local.dt.convert_time_zone("UTC")))
        parsed = parsed.scatter(rest, again.to_series())
    return parsed.alias(texts.name)


def _protocol(text: pl.Expr) -> pl.Expr:
    lowered = text.str.to_lowercase()
    return pl.coalesce(
        lowered.cast(pl.UInt8, strict=False),
        lowered.replace_strict(PROTOCOL_NAMES, default=None, return_dtype=pl.UInt8),
    )


def _derive(
    text: pl.DataFrame, reasons: pl.Expr, names: dict[str, str], timezone: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(flow columns of the readable rows, with `_rate` as printed; line, size and reason of the others)."""
    present = set(text.columns)

    def role(name: str) -> pl.Expr:
        return pl.col(TEXT + name) if TEXT + name in present else pl.lit(None, dtype=pl.String)

    def column(name: str) -> pl.Series:
        return text[TEXT + name] if TEXT + name in present else pl.Series([None] * text.height, dtype=pl.String)

    derived = text.with_columns(
        _address_columns(text[TEXT + "src"].fill_null(""), "src")
        + _address_columns(text[TEXT + "dst"].fill_null(""), "dst")
    ).with_columns(
        src_port=role("sport").cast(pl.UInt16, strict=False),
        dst_port=role("dport").cast(pl.UInt16, strict=False),
        protocol=_protocol(role("proto")),
        first_ts=_timestamps(column("first"), timezone),
        _last=_timestamps(column("last"), timezone),
        packets=role("packets").cast(pl.UInt64, strict=False),
        bytes=role("bytes").cast(pl.UInt64, strict=False),
        _rate=role("rate").cast(pl.UInt32, strict=False),
        domain_id=role("domain").cast(pl.UInt32, strict=False),
        origin=role("origin"),
    )
    checks = [
        ("src", pl.col("src_lo")),
        ("dst", pl.col("dst_lo")),
        ("sport", pl.col("src_port")),
        ("dport", pl.col("dst_port")),
        ("proto", pl.col("protocol")),
        ("first", pl.col("first_ts")),
        ("last", pl.col("_last")),
        ("packets", pl.col("packets")),
        ("bytes", pl.col("bytes")),
        ("rate", pl.col("_rate")),
        ("domain", pl.col("domain_id")),
    ]
    missing = [role(name).is_null() | (role(name) == "") for name, _ in checks if name in REQUIRED]
    unreadable = [role(name).is_not_null() & (role(name) != "") & value.is_null() for name, value in checks]
    why = [reasons]  # the first thing wrong with a line, worked out for the lines set aside only
    for name, value in checks:
        raw = role(name)
        if name in REQUIRED:
            why.append(pl.when(raw.is_null() | (raw == "")).then(pl.lit(f"no {names[name]}")))
        why.append(
            pl.when(raw.is_not_null() & (raw != "") & value.is_null()).then(
                pl.format("unreadable {} '{}'", pl.lit(names[name]), raw.str.slice(0, 60))
            )
        )
    bad = reasons.is_not_null() | pl.any_horizontal(*missing, *unreadable)
    derived = derived.with_columns(_bad=bad)
    unread = derived.filter(pl.col("_bad")).select("line", "size", pl.coalesce(why).alias("_why"))
    flows = derived.filter(~pl.col("_bad")).select(
        origin=pl.when(pl.col("origin").is_null() | (pl.col("origin") == ""))
        .then(pl.lit(EMPTY_ORIGIN))
        .otherwise(pl.col("origin")),
        domain_id=pl.col("domain_id").fill_null(0),
        selector_id=pl.lit(NO_SELECTOR, dtype=pl.UInt64),
        first_ts="first_ts",
        last_ts=pl.col("_last").fill_null(pl.col("first_ts")),
        src_hi="src_hi",
        src_lo="src_lo",
        dst_hi="dst_hi",
        dst_lo="dst_lo",
        src_port="src_port",
        dst_port="dst_port",
        protocol="protocol",
        packets="packets",
        bytes="bytes",
        _rate="_rate",
    )
    return flows, unread


def _problems(unread: pl.DataFrame, source: str) -> list[InputFormatError]:
    """One problem (one record set aside) per unreadable line, the first MAX_REPORTED of them; one
    more standing for the rest."""
    shown = unread.head(MAX_REPORTED)
    problems = [
        InputFormatError(source, f"line {line}", reason, size, records=1) for line, size, reason in shown.iter_rows()
    ]
    rest = unread.slice(MAX_REPORTED)
    if rest.height:
        problems.append(
            InputFormatError(
                source, "lines", f"{rest.height} more unreadable lines", int(rest["size"].sum()), records=rest.height
            )
        )
    return problems


def _sampling(flows: pl.DataFrame, collector_sampling: int | None, counts_scaled: bool | None) -> pl.DataFrame:
    """Sampled counts and their record_rate / record_rate_source, from the printed rate `_rate`."""
    configured = pl.lit(collector_sampling if collector_sampling else None, dtype=pl.UInt32)
    if counts_scaled is None:
        printed = pl.col("_rate").fill_null(0)
        renormalised = (printed == 1) | ((printed == 0) & configured.is_not_null())
        marked = flows.with_row_index("_order").with_columns(_scaled=renormalised)
        parts = [
            _sampling(marked.filter("_scaled").drop("_scaled"), collector_sampling, True),
            _sampling(marked.filter(~pl.col("_scaled")).drop("_scaled"), collector_sampling, False),
        ]
        return pl.concat(parts, how="vertical_relaxed").sort("_order").drop("_order")
    if not counts_scaled:
        printed = pl.col("_rate") > 0
        return flows.with_columns(
            record_rate=pl.when(printed).then(pl.col("_rate")).otherwise(configured),
            record_rate_source=pl.when(printed)
            .then(pl.lit(SOURCE))
            .when(configured.is_not_null())
            .then(pl.lit(CONFIG_SOURCE)),
        ).drop("_rate")
    flows = flows.with_row_index("_row").with_columns(
        record_rate=pl.lit(None, dtype=pl.UInt32), record_rate_source=pl.lit(None, dtype=pl.String)
    )
    # SAMPLING_RATE 0: pmacct knew no rate, so it scaled by nfacctd_ext_sampling_rate or not at all.
    unscaled = (pl.col("_rate") == 0).fill_null(False) & configured.is_null()
    kept = flows.filter(unscaled)
    scaled = flows.filter(~unscaled)
    stated = scaled.select(pl.when(pl.col("_rate") > 1).then(pl.col("_rate")).otherwise(configured)).to_series()
    from_config = scaled.select(~(pl.col("_rate") > 1).fill_null(False)).to_series()
    divided = divide_scaled_counts(scaled.drop("_rate"), stated, SOURCE).with_columns(
        record_rate_source=pl.when(from_config & (pl.col("record_rate_source") == SOURCE))
        .then(pl.lit(CONFIG_SOURCE))
        .otherwise(pl.col("record_rate_source"))
    )
    return pl.concat([divided, kept.drop("_rate")], how="vertical_relaxed").sort("_row").drop("_row")
