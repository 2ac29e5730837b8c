"""Reading the landing zone: file discovery, decompression, decoding into canonical frames."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from flows import processes, progress, storage
from flows.failures import MissingFeed as MissingFeed  # raised here; defined with the other errors
from flows.flow_files import ExporterInputs, flow_files_of_days
from flows.storage import AnyPath, entries
from transforms.accounting import subscribers
from transforms.accounting.radius import RECORD_SCHEMA, parse_detail
from transforms.decode import ExporterState
from transforms.decode.compression import (
    MAX_COMPRESSION_RATIO,
    MAX_DECOMPRESSED_BYTES,
    RATIO_FLOOR_BYTES,
    Limits,
    decompress,
)
from transforms.decode.exports import decode_flow_file
from transforms.decode.sampling import (
    SAMPLING_KEY,
    announcements_frame,
    keys_needing_announcements,
    rates_of_keys,
    resolve_sampling,
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


@dataclass
class ExporterIngest:
    """Where one exporter's flows of the week were staged (one parquet part per input file), and
    what was set aside or counted on the way."""

    parts: list[Path]
    unrated: list[Path]
    quarantine: pl.DataFrame
    files: list[str] = field(default_factory=list)
    part_records: list[int] = field(default_factory=list)
    input_bytes: int = 0
    messages: int = 0
    lost_records: int = 0
    lost_datagrams: int = 0
    outside_window: int = 0
    duplicate_files: int = 0
    records: int = 0
    raw_bytes: int = 0
    # Flow records per (where the sampling rate came from, rate): the data-quality section shows them.
    sampling: dict[tuple[str, int], int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    # (file, SHA-256 of its decompressed content) and (file, records, record-set fingerprint) of
    # every file read: the weekly flow compares them across exporters.
    digests: list[tuple[str, str]] = field(default_factory=list)
    record_sets: list[tuple[str, int, int]] = field(default_factory=list)
    # Parts written again because the exporter announced another rate after they were staged.
    revisited_parts: int = 0

    def flows(self) -> pl.DataFrame:
        """All staged flows (for tests and small weeks: a big week is read in chunks instead)."""
        return pl.read_parquet(self.parts) if self.parts else pl.DataFrame()


def _state_file(state_dir: AnyPath, exporter: str) -> AnyPath:
    return state_dir / "exporters" / f"{exporter}.json"


def load_exporter_state(state_dir: AnyPath, exporter: str) -> ExporterState:
    """Templates and sampling an exporter announced in earlier runs (empty when none)."""
    path = _state_file(state_dir, exporter)
    return ExporterState.from_json(path.read_text()) if path.exists() else ExporterState()


def save_exporter_state(state_dir: AnyPath, exporter: str, state: ExporterState) -> None:
    path = _state_file(state_dir, exporter)
    if not storage.is_local(path):
        storage.write_bytes(path, state.to_json().encode())  # an object is replaced whole
        return
    path = storage.local_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = storage.scratch_name(path)  # unique: two weeks of a backfill may commit one exporter at once
    tmp.write_text(state.to_json())
    tmp.replace(path)


def commit_exporter_states(staged: AnyPath, state_dir: AnyPath, exporters: list[str]) -> None:
    """Copies the exporters' states a run's ingest saved in its staging folder to `state_dir`."""
    for exporter in exporters:
        path = _state_file(staged, exporter)
        if path.exists():
            save_exporter_state(state_dir, exporter, ExporterState.from_json(path.read_text()))


def _problem_row(p: InputFormatError, records: int = 0, flow_bytes: int = 0) -> dict[str, object]:
    return {
        "source": p.source,
        "position": p.position,
        "reason": p.reason,
        "records": records,
        "bytes": flow_bytes,
        "input_bytes": p.length,
    }


def ingest_exporter(
    landing: AnyPath,
    exporter: str,
    days: list[dt.date],
    start: dt.datetime,
    end: dt.datetime,
    inputs: ExporterInputs,
    state_dir: AnyPath,
    stage: Path,
    saved_state: AnyPath | None = None,
) -> ExporterIngest:
    """Decodes every flow file of one exporter for `days` (IPFIX, captures of v5/v9/IPFIX, nfcapd
    files, nfdump CSV; in the landing zone's day folders or a collector's own layout), keeps flows
    starting in [start, end), resolves their sampling rate, and sets aside the rest.

    One file is in memory at a time: a first pass decodes each file to a raw part (templates and
    sampling announcements accumulate in the exporter state), a second pass resolves the rate of
    each part with everything the exporter announced, wherever in the week it did. The state at
    the end is saved in `saved_state` (default `state_dir`): a run saves it in its staging folder,
    so that a retried task starts again from the same state.
    """
    state = load_exporter_state(state_dir, exporter)
    problems: list[dict[str, object]] = []
    result = ExporterIngest([], [], pl.DataFrame(schema=QUARANTINE_SCHEMA))
    stage.mkdir(parents=True, exist_ok=True)
    lo = pl.lit(start).cast(pl.Datetime("ms", "UTC"))
    hi = pl.lit(end).cast(pl.Datetime("ms", "UTC"))
    in_window = (pl.col("first_ts") >= lo) & (pl.col("first_ts") < hi)
    written: list[_StagedPart] = []
    seen: set[str] = set()
    default_rate, override_rate = inputs.default_rate, inputs.override_rate
    found = flow_files_of_days(landing / "flows" / exporter, days, inputs.timezone, inputs.collector_timezone)
    candidates = [f.path for f in found]
    for done, path in enumerate(candidates, start=1):
        progress.report("ingest", exporter, done, len(candidates))
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            data, damage = read_input(path)
        except InputFormatError as exc:
            problems.append(_problem_row(exc))
            result.input_bytes += exc.length
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            result.duplicate_files += 1
            continue
        seen.add(digest)
        if damage is not None:  # a cut or corrupt compressed stream: what came before it is decoded
            problems.append(_problem_row(damage))
            result.input_bytes += damage.length
        result.files.append(str(path))
        result.input_bytes += len(data)
        with processes.thread_mapper(2) as mapper:
            decoded = decode_flow_file(
                data,
                exporter,
                str(path),
                state,
                inputs.collector_timezone,
                mapper,
                inputs.collector_sampling,
                inputs.pmacct_renormalized,
            )
        flows = decoded.flows
        result.messages += decoded.messages
        result.lost_records += decoded.lost_records
        result.lost_datagrams += decoded.lost_datagrams
        for kind, count in decoded.formats.items():
            result.formats[kind] = result.formats.get(kind, 0) + count
        problems.extend(_problem_row(p, p.records) for p in decoded.problems)
        del data
        if flows.height:
            # Only files with records: two idle exporters' empty files are not one delivered twice.
            result.digests.append((str(path), digest))
            result.record_sets.append((str(path), flows.height, record_set_fingerprint(flows)))
        result.outside_window += flows.filter(~in_window).height
        # Written once, with the rates known so far; the few parts whose rates a later
        # announcement changes are rewritten below.
        announcements = announcements_frame(state.sampling)
        keys = keys_needing_announcements(flows)
        index = len(written)
        staged = _StagedPart(
            stage / f"part-{index:05d}.parquet",
            stage / f"unrated-{index:05d}.parquet",
            rates_of_keys(keys, announcements, default_rate, override_rate),
        )
        _stage_flows(flows.filter(in_window), staged, announcements, default_rate, override_rate)
        written.append(staged)
    save_exporter_state(state_dir if saved_state is None else saved_state, exporter, state)
    announcements = announcements_frame(state.sampling)
    used = [staged.rates.select(SAMPLING_KEY) for staged in written]
    final_rates = rates_of_keys(pl.concat(used).unique(), announcements, default_rate, override_rate) if used else None
    unknown_records = unknown_bytes = 0
    reason = ""
    for staged in written:
        if final_rates is not None and not staged.rates.equals(
            staged.rates.select(SAMPLING_KEY).join(
                final_rates, on=list(SAMPLING_KEY), how="left", nulls_equal=True, maintain_order="left"
            )
        ):
            result.revisited_parts += 1
            _restage(staged, announcements, default_rate, override_rate)
        result.parts.append(staged.part)
        result.part_records.append(staged.records)
        result.records += staged.records
        result.raw_bytes += staged.raw_bytes
        for key, count in staged.sampling.items():
            result.sampling[key] = result.sampling.get(key, 0) + count
        if staged.unrated_records:
            result.unrated.append(staged.unrated)
            unknown_records += staged.unrated_records
            unknown_bytes += staged.unrated_bytes
            reason = staged.unrated_reason
    if unknown_records:
        problems.append(
            {
                "source": f"flows/{exporter}",
                "position": f"{unknown_records} records",
                "reason": reason,
                "records": unknown_records,
                "bytes": unknown_bytes,
                "input_bytes": 0,
            }
        )
    result.quarantine = pl.DataFrame(problems, schema=QUARANTINE_SCHEMA)
    return result


@dataclass
class _StagedPart:
    """One input file's flows as staged: sampled flows with a known rate, and those without one."""

    part: Path
    unrated: Path
    # The rate each (origin, domain, selector) got when the part was written.
    rates: pl.DataFrame
    records: int = 0
    raw_bytes: int = 0
    sampling: dict[tuple[str, int], int] = field(default_factory=dict)
    unrated_records: int = 0
    unrated_bytes: int = 0
    unrated_reason: str = ""


# The rate a decoder read from the record or header, kept in the staged part so that a part can
# be resolved again when the exporter announces another rate later in the week.
RECORD_RATE_KEPT = {"record_rate": "decoded_rate", "record_rate_source": "decoded_rate_source"}


def _stage_flows(
    flows: pl.DataFrame, staged: _StagedPart, announcements: pl.DataFrame, default: int | None, override: int | None
) -> None:
    kept = flows.with_columns(pl.col(name).alias(alias) for name, alias in RECORD_RATE_KEPT.items())
    known, unknown = resolve_sampling(kept, announcements, default, override)
    # Staged for attribution: LZ4 decodes fastest, and row groups of 1 M rows are its chunks.
    known.write_parquet(staged.part, compression="lz4", row_group_size=1_000_000, statistics=False)
    staged.records = known.height
    staged.raw_bytes = int(known["bytes"].sum() or 0)
    staged.sampling = {
        (str(source), int(rate)): int(count)
        for source, rate, count in known.group_by("sampling_source", "sampling_rate").len().iter_rows()
    }
    staged.unrated_records = unknown.height
    if unknown.height:
        unknown.write_parquet(staged.unrated)
        staged.unrated_bytes = int(unknown["bytes"].sum() or 0)
        staged.unrated_reason = str(unknown["reason"][0])
    else:
        staged.unrated.unlink(missing_ok=True)
        staged.unrated_bytes, staged.unrated_reason = 0, ""


def _restage(staged: _StagedPart, announcements: pl.DataFrame, default: int | None, override: int | None) -> None:
    """Resolves a staged part (and its unrated flows) again with the week's final announcements."""
    frames = [pl.read_parquet(staged.part).drop("sampling_rate", "sampling_source")]
    if staged.unrated_records:
        frames.append(pl.read_parquet(staged.unrated).drop("sampling_rate", "sampling_source", "reason"))
    flows = (
        pl.concat(frames, how="vertical_relaxed")
        .with_columns(pl.col(alias).alias(name) for name, alias in RECORD_RATE_KEPT.items())
        .drop(list(RECORD_RATE_KEPT.values()))
    )
    _stage_flows(flows, staged, announcements, default, override)


# What identifies a flow record whatever exporter name, message framing or encoding carried it.
RECORD_IDENTITY = (
    "first_ts",
    "last_ts",
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "src_port",
    "dst_port",
    "protocol",
    "packets",
    "bytes",
)


def record_set_fingerprint(flows: pl.DataFrame) -> int:
    """An order-independent 64-bit fingerprint of a file's flow records (the wrapped sum of their
    row hashes): the same records re-framed, re-encoded or recompressed give the same number."""
    hashes = flows.select(RECORD_IDENTITY).hash_rows(seed=0).to_numpy()
    return int(hashes.sum(dtype=np.uint64))


def duplicate_inputs(exporters: list[tuple[str, list[tuple[str, str]], list[tuple[str, int, int]]]]) -> list[str]:
    """One line per file whose content (same digest) or records (same fingerprint and count) were
    already read from another exporter: a copied folder or a file dropped into two folders would
    otherwise count its traffic twice. Input: (exporter, digests, record sets) per exporter."""
    by_digest: dict[str, tuple[str, str]] = {}
    by_records: dict[tuple[int, int], tuple[str, str]] = {}
    found: dict[str, str] = {}  # file -> why, the first reason only
    for exporter, digests, record_sets in exporters:
        for path, digest in digests:
            first = by_digest.setdefault(digest, (exporter, path))
            if first[0] != exporter:
                found.setdefault(path, f"{path}: same content as {first[1]} (exporter {first[0]})")
        for path, records, fingerprint in record_sets:
            first = by_records.setdefault((records, fingerprint), (exporter, path))
            if first[0] != exporter:
                found.setdefault(path, f"{path}: the same {records} flow records as {first[1]} (exporter {first[0]})")
    return list(found.values())


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
