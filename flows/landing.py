"""Reading the landing zone: file discovery, decompression, decoding into canonical frames."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from flows import progress
from flows.storage import AnyPath, entries
from transforms._records import FLOW_SCHEMA, ExporterState
from transforms.errors import InputFormatError
from transforms.exports import decode_flow_file
from transforms.nfdump_csv import decode_nfdump_csv, is_nfdump_csv
from transforms.radius import RECORD_SCHEMA, parse_detail
from transforms.sampling import announcements_frame, resolve_sampling

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "position": pl.String(),
    "reason": pl.String(),
    "records": pl.Int64(),
    "bytes": pl.Int64(),
    "input_bytes": pl.Int64(),
}


def read_bytes(path: AnyPath) -> bytes:
    """File content, gunzipped or zstd-decompressed when its magic number says so."""
    data = path.read_bytes()
    try:
        if data.startswith(GZIP_MAGIC):
            return gzip.decompress(data)
        if data.startswith(ZSTD_MAGIC):
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except Exception as exc:  # every codec has its own error types; all mean the same here
        raise InputFormatError(str(path), "byte 0", f"cannot decompress: {exc}", len(data)) from exc
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

    def flows(self) -> pl.DataFrame:
        """All staged flows (for tests and small weeks: a big week is read in chunks instead)."""
        return pl.read_parquet(self.parts) if self.parts else pl.DataFrame()


def _state_file(state_dir: Path, exporter: str) -> Path:
    return state_dir / "exporters" / f"{exporter}.json"


def load_exporter_state(state_dir: Path, exporter: str) -> ExporterState:
    """Templates and sampling an exporter announced in earlier runs (empty when none)."""
    path = _state_file(state_dir, exporter)
    return ExporterState.from_json(path.read_text()) if path.exists() else ExporterState()


def save_exporter_state(state_dir: Path, exporter: str, state: ExporterState) -> None:
    path = _state_file(state_dir, exporter)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(path)


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
    default_rate: int | None,
    override_rate: int | None,
    nfdump_timezone: str,
    state_dir: Path,
    stage: Path,
) -> ExporterIngest:
    """Decodes every flow file of one exporter for `days` (IPFIX, captures of v5/v9/IPFIX, nfdump CSV),
    keeps flows starting in [start, end), resolves their sampling rate, and sets aside the rest.

    One file is in memory at a time: a first pass decodes each file to a raw part (templates and
    sampling announcements accumulate in the exporter state), a second pass resolves the rate of
    each part with everything the exporter announced, wherever in the week it did.
    """
    state = load_exporter_state(state_dir, exporter)
    problems: list[dict[str, object]] = []
    result = ExporterIngest([], [], pl.DataFrame(schema=QUARANTINE_SCHEMA))
    stage.mkdir(parents=True, exist_ok=True)
    lo = pl.lit(start).cast(pl.Datetime("ms", "UTC"))
    hi = pl.lit(end).cast(pl.Datetime("ms", "UTC"))
    in_window = (pl.col("first_ts") >= lo) & (pl.col("first_ts") < hi)
    raw_parts: list[Path] = []
    seen: set[str] = set()
    candidates = [path for folder in day_dirs(landing / "flows" / exporter, days) for path in entries(folder)]
    for done, path in enumerate(candidates, start=1):
        progress.report("ingest", exporter, done, len(candidates))
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            data = read_bytes(path)
        except InputFormatError as exc:
            problems.append(_problem_row(exc))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            result.duplicate_files += 1
            continue
        seen.add(digest)
        result.files.append(str(path))
        result.input_bytes += len(data)
        if is_nfdump_csv(data):
            try:
                flows, csv_problems = decode_nfdump_csv(data, exporter, str(path), nfdump_timezone)
            except InputFormatError as exc:
                flows, csv_problems = pl.DataFrame(schema=FLOW_SCHEMA), [exc]
            problems.extend(_problem_row(p, 1) for p in csv_problems)
            result.formats["nfdump_csv"] = result.formats.get("nfdump_csv", 0) + 1
        else:
            decoded = decode_flow_file(data, exporter, str(path), state)
            flows = decoded.flows
            result.messages += decoded.messages
            result.lost_records += decoded.lost_records
            result.lost_datagrams += decoded.lost_datagrams
            for kind, count in decoded.formats.items():
                result.formats[kind] = result.formats.get(kind, 0) + count
            problems.extend(_problem_row(p) for p in decoded.problems)
        del data
        result.outside_window += flows.filter(~in_window).height
        raw = stage / f"raw-{len(raw_parts):05d}.parquet"
        flows.filter(in_window).write_parquet(raw)
        raw_parts.append(raw)
    save_exporter_state(state_dir, exporter, state)
    announcements = announcements_frame(state.sampling)
    unknown_records = unknown_bytes = 0
    reason = ""
    for index, raw in enumerate(raw_parts):
        known, unknown = resolve_sampling(pl.read_parquet(raw), announcements, default_rate, override_rate)
        raw.unlink()
        part = stage / f"part-{index:05d}.parquet"
        # Staged for attribution: LZ4 decodes fastest, and row groups of 1 M rows are its chunks.
        known.write_parquet(part, compression="lz4", row_group_size=1_000_000)
        result.parts.append(part)
        result.records += known.height
        result.raw_bytes += int(known["bytes"].sum() or 0)
        for source, rate, count in known.group_by("sampling_source", "sampling_rate").len().iter_rows():
            result.sampling[(str(source), int(rate))] = result.sampling.get((str(source), int(rate)), 0) + int(count)
        if unknown.height:
            unrated = stage / f"unrated-{index:05d}.parquet"
            unknown.write_parquet(unrated)
            result.unrated.append(unrated)
            unknown_records += unknown.height
            unknown_bytes += int(unknown["bytes"].sum() or 0)
            reason = str(unknown["reason"][0])
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


def ingest_radius(landing: AnyPath, days: list[dt.date], timezone: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All accounting records of every NAS for `days`, and the quarantined lines."""
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
                try:
                    data = read_bytes(path)
                except InputFormatError as exc:
                    problems.append(pl.DataFrame({"source": [exc.source], "line": [0], "reason": [exc.reason]}))
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                records, bad = parse_detail(data.decode("utf-8", errors="replace"), str(path), timezone)
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
    """The subscriber directory as of a day: subscription_id, service, customer_type, login, phone_numbers."""
    path = directory_file(landing, as_of)
    frame = pl.read_csv(
        io.BytesIO(read_bytes(path)),
        schema_overrides={"subscription_id": pl.String, "login": pl.String, "phone_numbers": pl.String},
    )
    required = {"subscription_id", "service", "customer_type"}
    missing = required - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: line 1: missing columns {sorted(missing)}")
    for optional in ("login", "phone_numbers"):
        if optional not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(optional))
    return frame


class MissingFeed(FileNotFoundError):
    """A source delivered no files for some day of the week: the week cannot be complete yet."""


def check_feeds(landing: AnyPath, exporters: list[str], days: list[dt.date]) -> None:
    """Raises MissingFeed naming every exporter and day without flow files, and a week without RADIUS."""
    gaps = []
    for exporter in exporters:
        present = {
            p.name for p in day_dirs(landing / "flows" / exporter, days) if any(f.is_file() for f in p.iterdir())
        }
        missing = [d.isoformat() for d in days if d.isoformat() not in present]
        if missing:
            gaps.append(f"flows/{exporter}: no files for {', '.join(missing)}")
    radius_root = landing / "radius"
    nases = [p for p in radius_root.iterdir() if p.is_dir()] if radius_root.is_dir() else []
    if not any(day_dirs(nas, days) for nas in nases):
        gaps.append("radius: no accounting files for any day of the week")
    if gaps:
        raise MissingFeed("feed late or missing, nothing published: " + "; ".join(gaps))
