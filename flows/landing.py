"""Reading the landing zone: file discovery, decompression, decoding into canonical frames."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from transforms import ipfix
from transforms.radius import RECORD_SCHEMA, parse_detail
from transforms.sampling import ANNOUNCEMENT_SCHEMA, resolve_sampling

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "position": pl.String(),
    "reason": pl.String(),
    "records": pl.Int64(),
    "bytes": pl.Int64(),
}


def read_bytes(path: Path) -> bytes:
    """File content, gunzipped or zstd-decompressed when its magic number says so."""
    data = path.read_bytes()
    if data.startswith(GZIP_MAGIC):
        return gzip.decompress(data)
    if data.startswith(ZSTD_MAGIC):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def day_dirs(root: Path, days: list[dt.date]) -> list[Path]:
    """Existing `<root>/<YYYY-MM-DD>` folders of the given days, in order."""
    return [root / d.isoformat() for d in days if (root / d.isoformat()).is_dir()]


def list_exporters(landing: Path) -> list[str]:
    """Exporter folders under <landing>/flows."""
    base = landing / "flows"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


@dataclass
class ExporterIngest:
    """Flows of one exporter for the week and what was set aside."""

    flows: pl.DataFrame
    quarantine: pl.DataFrame
    files: list[str] = field(default_factory=list)
    messages: int = 0
    lost_records: int = 0
    outside_window: int = 0
    duplicate_files: int = 0


def ingest_exporter(
    landing: Path, exporter: str, days: list[dt.date], start: dt.datetime, end: dt.datetime, default_rate: int | None
) -> ExporterIngest:
    """Decodes every IPFIX file of one exporter for `days`, keeps flows starting in [start, end)."""
    cache = ipfix.TemplateCache()
    frames: list[pl.DataFrame] = []
    announcements: list[dict[str, object]] = []
    problems: list[dict[str, object]] = []
    result = ExporterIngest(pl.DataFrame(), pl.DataFrame(schema=QUARANTINE_SCHEMA))
    seen: set[str] = set()
    for folder in day_dirs(landing / "flows" / exporter, days):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            data = read_bytes(path)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                result.duplicate_files += 1
                continue
            seen.add(digest)
            decoded = ipfix.decode_ipfix(data, exporter, str(path), cache)
            result.files.append(str(path))
            result.messages += decoded.messages
            result.lost_records += decoded.lost_records
            frames.append(decoded.flows)
            for a in decoded.sampling:
                announcements.append(
                    {
                        "domain_id": a.domain_id,
                        "selector_id": a.selector_id if a.selector_id is not None else (1 << 64) - 1,
                        "rate": a.rate,
                        "source": a.source,
                    }
                )
            for p in decoded.problems:
                problems.append(
                    {"source": p.source, "position": p.position, "reason": p.reason, "records": 0, "bytes": 0}
                )
    flows = pl.concat(frames) if frames else pl.DataFrame(schema=ipfix.FLOW_SCHEMA)
    lo = pl.lit(start).cast(pl.Datetime("ms", "UTC"))
    hi = pl.lit(end).cast(pl.Datetime("ms", "UTC"))
    in_window = (pl.col("first_ts") >= lo) & (pl.col("first_ts") < hi)
    result.outside_window = flows.filter(~in_window).height
    flows = flows.filter(in_window)
    known, unknown = resolve_sampling(flows, pl.DataFrame(announcements, schema=ANNOUNCEMENT_SCHEMA), default_rate)
    if unknown.height:
        problems.append(
            {
                "source": f"flows/{exporter}",
                "position": f"{unknown.height} records",
                "reason": "no sampling rate known for this exporter/domain/selector",
                "records": unknown.height,
                "bytes": int(unknown["bytes"].sum()),
            }
        )
    result.flows = known
    result.quarantine = pl.DataFrame(problems, schema=QUARANTINE_SCHEMA)
    return result


def ingest_radius(landing: Path, days: list[dt.date], timezone: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All accounting records of every NAS for `days`, and the quarantined lines."""
    base = landing / "radius"
    frames: list[pl.DataFrame] = []
    problems: list[pl.DataFrame] = []
    seen: set[str] = set()
    nases = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for nas in nases:
        for folder in day_dirs(nas, days):
            for path in sorted(folder.iterdir()):
                if not path.is_file() or path.name.startswith("."):
                    continue
                data = read_bytes(path)
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                records, bad = parse_detail(data.decode("utf-8", errors="replace"), str(path), timezone)
                frames.append(records)
                problems.append(bad)
    records = pl.concat(frames) if frames else pl.DataFrame(schema=RECORD_SCHEMA)
    quarantine = (
        pl.concat(problems).select(
            "source",
            pl.format("line {}", "line").alias("position"),
            "reason",
            pl.lit(1, dtype=pl.Int64).alias("records"),
            pl.lit(0, dtype=pl.Int64).alias("bytes"),
        )
        if problems
        else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    )
    # Retransmitted records (same session, status and time) count once.
    return records.unique(
        subset=["nas", "session_id", "status", "event_ts"], keep="first", maintain_order=True
    ), quarantine


def read_directory(landing: Path) -> pl.DataFrame:
    """The subscriber directory: subscription_id, service, customer_type, login, phone_numbers."""
    path = landing / "directory" / "subscribers.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: subscriber directory missing")
    frame = pl.read_csv(
        path, schema_overrides={"subscription_id": pl.String, "login": pl.String, "phone_numbers": pl.String}
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


def check_feeds(landing: Path, exporters: list[str], days: list[dt.date]) -> None:
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
