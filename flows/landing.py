"""Reading the landing zone: file discovery, decompression, decoding into canonical frames."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io

import polars as pl

from flows import processes
from flows.failures import MissingFeed as MissingFeed  # raised here; defined with the other errors
from flows.flow_files import flow_files_of_days
from flows.storage import AnyPath, entries
from transforms.accounting import subscribers
from transforms.accounting.radius import RECORD_SCHEMA, parse_detail
from transforms.decode.compression import (
    MAX_COMPRESSION_RATIO,
    MAX_DECOMPRESSED_BYTES,
    RATIO_FLOOR_BYTES,
    Limits,
    decompress,
)
from transforms.errors import InputFormatError

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "position": pl.String(),
    "reason": pl.String(),
    "records": pl.Int64(),
    "bytes": pl.Int64(),
    "input_bytes": pl.Int64(),
}


def read_input(
    path: AnyPath,
    *,
    max_ratio: float = MAX_COMPRESSION_RATIO,
    ratio_floor: int = RATIO_FLOOR_BYTES,
    max_bytes: int = MAX_DECOMPRESSED_BYTES,
) -> tuple[bytes, InputFormatError | None]:
    """File content, gunzipped or zstd-decompressed (in bounded chunks) when its magic number says
    so, and the problem of a compressed stream that could only be partly read (cut off, corrupt part
    way, followed by other bytes): the content is then what came before it.

    Raises InputFormatError for the whole file when nothing can be used: a decompression bomb
    (output past `max_ratio` times the compressed bytes once beyond `ratio_floor`, or past
    `max_bytes`: decompression stops there), content compressed twice, or no stream at all.
    """
    data = path.read_bytes()
    try:
        return decompress(data, str(path), Limits(max_ratio, ratio_floor, max_bytes))
    except InputFormatError:
        raise
    except Exception as exc:  # every codec has its own error types; all mean the same here
        raise InputFormatError(str(path), "byte 0", f"cannot decompress: {exc}", len(data)) from exc


def read_bytes(
    path: AnyPath,
    *,
    max_ratio: float = MAX_COMPRESSION_RATIO,
    ratio_floor: int = RATIO_FLOOR_BYTES,
    max_bytes: int = MAX_DECOMPRESSED_BYTES,
) -> bytes:
    """File content as read_input gives it, for whole-file readers (RADIUS detail, the directory):
    a stream that could only be partly read raises too (a cut one from EOFError)."""
    data, problem = read_input(path, max_ratio=max_ratio, ratio_floor=ratio_floor, max_bytes=max_bytes)
    if problem is not None:
        raise problem from problem.__cause__
    return data


def day_dirs(root: AnyPath, days: list[dt.date]) -> list[AnyPath]:
    """Existing `<root>/<YYYY-MM-DD>` folders of the given days, in order."""
    return [root / d.isoformat() for d in days if (root / d.isoformat()).is_dir()]


def list_exporters(landing: AnyPath) -> list[str]:
    """Exporter folders under <landing>/flows."""
    base = landing / "flows"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def line_problems(problems: pl.DataFrame) -> pl.DataFrame:
    """QUARANTINE_SCHEMA rows of (source, line, reason) problems, one record each."""
    return problems.select(
        "source",
        pl.format("line {}", "line").alias("position"),
        "reason",
        pl.lit(1, dtype=pl.Int64).alias("records"),
        pl.lit(0, dtype=pl.Int64).alias("bytes"),
        pl.lit(0, dtype=pl.Int64).alias("input_bytes"),
    )


def _radius_problem(source: str, line: int, reason: str) -> pl.DataFrame:
    return pl.DataFrame({"source": [source], "line": [line], "reason": [reason]}, schema_overrides={"line": pl.Int64})


def ingest_radius(landing: AnyPath, days: list[dt.date], timezone: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All accounting records of every NAS for `days`, and the quarantined lines (file, line, reason:
    never the record's content). A file that cannot be read at all is one problem at line 0."""
    base = landing / "radius"
    frames: list[pl.DataFrame] = []
    problems: list[pl.DataFrame] = []
    seen: set[str] = set()
    nases = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for nas in nases:
        for folder in day_dirs(nas, days):
            for path in entries(folder):
                if not path.is_file() or path.name.startswith("."):
                    continue
                # Reasons name the file and the error's type, never its text: codec and polars
                # messages may quote the record (identities).
                try:
                    data = read_bytes(path)
                except InputFormatError as exc:
                    reason = f"cannot decompress ({type(exc.__cause__ or exc).__name__})"
                    problems.append(_radius_problem(str(path), 0, reason))
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                try:
                    with processes.thread_mapper(min(2, pl.thread_pool_size())) as mapper:
                        records, bad = parse_detail(data, str(path), timezone, mapper)
                except Exception as exc:  # a parser bug or input it never met: the file, not the run
                    problems.append(_radius_problem(str(path), 0, f"unreadable detail file ({type(exc).__name__})"))
                    continue
                frames.append(records)
                problems.append(bad)
    records = pl.concat(frames) if frames else pl.DataFrame(schema=RECORD_SCHEMA)
    quarantine = line_problems(pl.concat(problems)) if problems else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    # Retransmitted records (same session, status and time) count once.
    return records.unique(
        subset=["nas", "session_id", "status", "event_ts"], keep="first", maintain_order=True
    ), quarantine


def directory_file(landing: AnyPath, as_of: dt.date) -> AnyPath:
    """The directory snapshot for a week ending `as_of`: the latest `directory/<YYYY-MM-DD>/subscribers.csv`
    dated on or before it, or the undated `directory/subscribers.csv` when there are no dated ones."""
    root = landing / "directory"
    dated = []
    if root.is_dir():
        for folder in root.iterdir():
            try:
                day = dt.date.fromisoformat(folder.name)
            except ValueError:
                continue
            if (folder / "subscribers.csv").exists():
                dated.append((day, folder / "subscribers.csv"))
    if dated:
        usable = [(day, path) for day, path in sorted(dated) if day <= as_of]
        if not usable:
            raise FileNotFoundError(
                f"{root}: no directory snapshot dated on or before {as_of} (earliest is {min(dated)[0]})"
            )
        return usable[-1][1]
    path = root / "subscribers.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: subscriber directory missing (nor any dated snapshot folder)")
    return path


def read_directory(landing: AnyPath, as_of: dt.date) -> pl.DataFrame:
    """The subscriber directory as of a day: subscription_id, service, customer_type, login, phone_numbers.
    InputFormatError (file, line, reason; never a cell: cells are identities) when it cannot be used."""
    path = directory_file(landing, as_of)
    return parse_directory(read_bytes(path), str(path))


def parse_directory(data: bytes, source: str) -> pl.DataFrame:
    """The directory's rows from the bytes of its CSV file, checked (subscribers.check_directory)."""
    if not data.strip():
        raise InputFormatError(source, "line 1", "empty file: no header, no subscriptions")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputFormatError(source, f"line {line}", "bytes that are not UTF-8") from None
    # Checked with the csv module first: parser messages quote the rest of the file (identities),
    # and a row with too few fields would be filled with nulls silently.
    line, reason = _csv_structure_problem(text)
    if line:
        raise InputFormatError(source, f"line {line}", reason)
    try:
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)  # all text: ids and phones are not numbers
    except Exception as exc:
        raise InputFormatError(source, "line ?", f"unreadable CSV ({type(exc).__name__})") from None
    missing = [c for c in subscribers.DIRECTORY_COLUMNS if c not in frame.columns]
    if missing:
        expected = ", ".join(subscribers.DIRECTORY_COLUMNS)
        raise InputFormatError(source, "line 1", f"missing columns {', '.join(missing)} (expected {expected})")
    # Blank lines (a trailing one is common) are no rows; the others keep their line in the file.
    frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
    if frame.height == 0:
        raise InputFormatError(source, "line 2", "no subscriptions: header only")
    lines = [number for number, line in enumerate(text.splitlines(), start=1) if number > 1 and line.strip()]
    if len(lines) == frame.height:  # else a quoted field spans lines: rows are numbered as lines
        frame = frame.with_columns(line=pl.Series(lines, dtype=pl.Int64))
    problems = subscribers.check_directory(frame)
    if problems.height:
        first = problems.row(0, named=True)
        more = f" ({problems.height - 1} more problems)" if problems.height > 1 else ""
        raise InputFormatError(source, f"line {first['line']}", f"{first['reason']}{more}")
    return frame.select(subscribers.DIRECTORY_COLUMNS)


def _csv_structure_problem(text: str) -> tuple[int, str]:
    """(line, reason) of the first row whose field count differs from the header's, or of a quote
    never closed; (0, "") when the CSV's structure is sound. Reasons name counts, never cells."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return 1, "unreadable header"
    line = reader.line_num
    try:
        for row in reader:
            if row and len(row) != len(header):
                return line + 1, f"{len(row)} fields, the header has {len(header)}"
            line = reader.line_num
    except csv.Error:
        return line + 1, "a quoted field is never closed (or a stray quote inside a field)"
    return 0, ""


def check_feeds(
    landing: AnyPath, exporters: list[str], days: list[dt.date], timezone: str = "UTC", collector_timezone: str = "UTC"
) -> None:
    """Raises MissingFeed naming every exporter and day without flow files, and a week without RADIUS."""
    gaps = []
    for exporter in exporters:
        present = {f.day for f in flow_files_of_days(landing / "flows" / exporter, days, timezone, collector_timezone)}
        missing = [d.isoformat() for d in days if d not in present]
        if missing:
            gaps.append(f"flows/{exporter}: no files for {', '.join(missing)}")
    radius_root = landing / "radius"
    nases = [p for p in radius_root.iterdir() if p.is_dir()] if radius_root.is_dir() else []
    if not any(day_dirs(nas, days) for nas in nases):
        gaps.append("radius: no accounting files for any day of the week")
    if gaps:
        raise MissingFeed("feed late or missing, nothing published: " + "; ".join(gaps))
