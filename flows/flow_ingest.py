"""An exporter's flow files of a week, decoded and staged as parquet parts with their sampling resolved.

Files are decoded in groups (all of them in one group on one machine; a day's on a cluster, each
group in a task of its own). Every group starts from the state the exporter had when the run
began; chaining the groups in order then gives what decoding every file one after the other would
have: a group whose entry reads (transforms.decode._trace) differ from the state the groups
before it leave, or that read a file an earlier group read already, is decoded again from that
state. Sequence numbers are counted while chaining, and the week's sampling announcements decide
every part's rate at the end (parts whose rate changed are written again).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from flows import processes, progress, storage
from flows.flow_files import ExporterInputs, flow_files_of_days
from flows.landing import QUARANTINE_SCHEMA, read_input
from flows.storage import AnyPath
from transforms.decode import ExporterState
from transforms.decode._trace import GroupTrace
from transforms.decode.exports import decode_flow_file
from transforms.decode.sampling import (
    SAMPLING_KEY,
    announcements_frame,
    keys_needing_announcements,
    rates_of_keys,
    resolve_sampling,
)
from transforms.errors import InputFormatError


@dataclass
class ExporterIngest:
    """Where one exporter's flows of the week were staged (one parquet part per input file), and
    what was set aside or counted on the way."""

    parts: list[AnyPath]
    unrated: list[AnyPath]
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
    # Staged flows per local day (the report's zone) of their first packet.
    records_per_day: dict[str, int] = field(default_factory=dict)
    # Parts written again because the exporter announced another rate after they were staged.
    revisited_parts: int = 0
    # Groups decoded again while chaining (their start state was not the one they assumed).
    redecoded_groups: int = 0

    def flows(self) -> pl.DataFrame:
        """All staged flows (for tests and small weeks: a big week is read in chunks instead)."""
        return pl.concat([storage.read_parquet(p) for p in self.parts]) if self.parts else pl.DataFrame()


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


@dataclass
class StagedPart:
    """One input file's flows as staged: sampled flows with a known rate, and those without one."""

    part: AnyPath
    unrated: AnyPath
    # The rate each (origin, domain, selector) got when the part was written.
    rates: pl.DataFrame
    records: int = 0
    raw_bytes: int = 0
    sampling: dict[tuple[str, int], int] = field(default_factory=dict)
    records_per_day: dict[str, int] = field(default_factory=dict)
    unrated_records: int = 0
    unrated_bytes: int = 0
    unrated_reason: str = ""


@dataclass
class FileGroup:
    """One group of an exporter's files decoded from a given state: its staged parts, what it
    counted, and the trace that chains it after the groups before it."""

    index: int
    paths: list[str]
    staged: list[StagedPart]
    trace: GroupTrace
    # SHA-256 of every distinct file content read, in order (a file delivered again on a later
    # day is read once in the week).
    read_digests: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[dict[str, object]] = field(default_factory=list)
    input_bytes: int = 0
    messages: int = 0
    outside_window: int = 0
    duplicate_files: int = 0
    formats: dict[str, int] = field(default_factory=dict)
    digests: list[tuple[str, str]] = field(default_factory=list)
    record_sets: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class IngestWindow:
    """What every group of one exporter's week is read with."""

    exporter: str
    start: dt.datetime
    end: dt.datetime
    inputs: ExporterInputs


def decode_file_group(
    paths: Sequence[AnyPath],
    index: int,
    window: IngestWindow,
    entry: ExporterState,
    stage: Path,
    seen: set[str] | None = None,
) -> FileGroup:
    """Decodes `paths` in order from a copy of `entry` into parts `stage/part-<index>-<n>.parquet`
    (flows starting in the window, rate resolved with what is known so far); `seen` holds digests
    of files read before (skipped as duplicates)."""
    state = copy.deepcopy(entry)
    state.trace = GroupTrace()
    group = FileGroup(index, [str(p) for p in paths], [], state.trace)
    seen = set(seen or ())
    stage.mkdir(parents=True, exist_ok=True)
    lo = pl.lit(window.start).cast(pl.Datetime("ms", "UTC"))
    hi = pl.lit(window.end).cast(pl.Datetime("ms", "UTC"))
    in_window = (pl.col("first_ts") >= lo) & (pl.col("first_ts") < hi)
    inputs = window.inputs
    for done, path in enumerate(paths, start=1):
        progress.report("ingest", window.exporter, done, len(paths))
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            data, damage = read_input(path)
        except InputFormatError as exc:
            group.problems.append(_problem_row(exc))
            group.input_bytes += exc.length
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            group.duplicate_files += 1
            continue
        seen.add(digest)
        group.read_digests.append(digest)
        if damage is not None:  # a cut or corrupt compressed stream: what came before it is decoded
            group.problems.append(_problem_row(damage))
            group.input_bytes += damage.length
        group.files.append(str(path))
        group.input_bytes += len(data)
        with processes.thread_mapper(inputs.threads) as mapper:
            decoded = decode_flow_file(
                data,
                window.exporter,
                str(path),
                state,
                inputs.collector_timezone,
                mapper,
                inputs.collector_sampling,
                inputs.pmacct_renormalized,
            )
        del data
        state.trace.record_announcements(decoded.sampling)
        flows = decoded.flows
        group.messages += decoded.messages
        for kind, count in decoded.formats.items():
            group.formats[kind] = group.formats.get(kind, 0) + count
        group.problems.extend(_problem_row(p, p.records) for p in decoded.problems)
        if flows.height:
            # Only files with records: two idle exporters' empty files are not one delivered twice.
            group.digests.append((str(path), digest))
            group.record_sets.append((str(path), flows.height, record_set_fingerprint(flows)))
        group.outside_window += flows.filter(~in_window).height
        # Written once, with the rates known so far; the few parts whose rates a later
        # announcement changes are rewritten when the groups are chained.
        announcements = announcements_frame(state.sampling)
        name = f"{index:03d}-{len(group.staged):05d}"
        staged = StagedPart(
            stage / f"part-{name}.parquet",
            stage / f"unrated-{name}.parquet",
            rates_of_keys(keys_needing_announcements(flows), announcements, inputs.default_rate, inputs.override_rate),
        )
        stage_flows(flows.filter(in_window), staged, announcements, inputs)
        group.staged.append(staged)
    state.trace = None
    return group


Redecode = Callable[[FileGroup, ExporterState, set[str]], FileGroup]
Restage = Callable[[StagedPart, pl.DataFrame, ExporterInputs], None]


def chain_file_groups(
    window: IngestWindow,
    groups: Sequence[FileGroup],
    state: ExporterState,
    redecode: Redecode,
    restage: Restage | None = None,
) -> ExporterIngest:
    """The week's ingest of one exporter from its groups in order, `state` (the state the run
    started from) brought to the week's end; `redecode(group, entry, seen)` decodes a group again
    from its true entry state, `restage` resolves a part again with the week's announcements."""
    restage = restage or restage_part
    exporter = window.exporter
    result = ExporterIngest([], [], pl.DataFrame(schema=QUARANTINE_SCHEMA))
    problems: list[dict[str, object]] = []
    seen: set[str] = set()
    chained: list[FileGroup] = []
    for group in sorted(groups, key=lambda g: g.index):
        if not group.trace.holds_for(state) or seen.intersection(group.read_digests):
            group = redecode(group, copy.deepcopy(state), set(seen))  # noqa: PLW2901 - the true decode replaces the guess
            result.redecoded_groups += 1
        seen.update(group.read_digests)
        lost_records, lost_datagrams = group.trace.apply(state, exporter)
        result.lost_records += lost_records
        result.lost_datagrams += lost_datagrams
        result.files += group.files
        result.input_bytes += group.input_bytes
        result.messages += group.messages
        result.outside_window += group.outside_window
        result.duplicate_files += group.duplicate_files
        for kind, count in group.formats.items():
            result.formats[kind] = result.formats.get(kind, 0) + count
        result.digests += group.digests
        result.record_sets += group.record_sets
        problems += group.problems
        chained.append(group)

    inputs = window.inputs
    announcements = announcements_frame(state.sampling)
    written = [staged for group in chained for staged in group.staged]
    used = [staged.rates.select(SAMPLING_KEY) for staged in written]
    final_rates = (
        rates_of_keys(pl.concat(used).unique(), announcements, inputs.default_rate, inputs.override_rate)
        if used
        else None
    )
    unknown_records = unknown_bytes = 0
    reason = ""
    for staged in written:
        if final_rates is not None and not staged.rates.equals(
            staged.rates.select(SAMPLING_KEY).join(
                final_rates, on=list(SAMPLING_KEY), how="left", nulls_equal=True, maintain_order="left"
            )
        ):
            result.revisited_parts += 1
            restage(staged, announcements, inputs)
        result.parts.append(staged.part)
        result.part_records.append(staged.records)
        result.records += staged.records
        result.raw_bytes += staged.raw_bytes
        for key, count in staged.sampling.items():
            result.sampling[key] = result.sampling.get(key, 0) + count
        for day, count in staged.records_per_day.items():
            result.records_per_day[day] = result.records_per_day.get(day, 0) + count
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
    files, nfdump CSV, pmacct; in the landing zone's day folders or a collector's own layout), keeps
    flows starting in [start, end), resolves their sampling rate, and sets aside the rest.

    One file is in memory at a time, decoded in one group from the saved state; its parts' rates
    are resolved again with everything the exporter announced, wherever in the week it did. The
    state at the end is saved in `saved_state` (default `state_dir`): a run saves it in its
    staging folder, so that a retried task starts again from the same state.
    """
    window = IngestWindow(exporter, start, end, inputs)
    paths = [
        f.path
        for f in flow_files_of_days(landing / "flows" / exporter, days, inputs.timezone, inputs.collector_timezone)
    ]
    state = load_exporter_state(state_dir, exporter)

    def redecode(group: FileGroup, entry: ExporterState, seen: set[str]) -> FileGroup:
        return decode_file_group(paths, group.index, window, entry, stage, seen)

    group = decode_file_group(paths, 0, window, state, stage)
    result = chain_file_groups(window, [group], state, redecode)
    save_exporter_state(state_dir if saved_state is None else saved_state, exporter, state)
    return result


# The rate a decoder read from the record or header, kept in the staged part so that a part can
# be resolved again when the exporter announces another rate later in the week.
RECORD_RATE_KEPT = {"record_rate": "decoded_rate", "record_rate_source": "decoded_rate_source"}


def stage_flows(flows: pl.DataFrame, staged: StagedPart, announcements: pl.DataFrame, inputs: ExporterInputs) -> None:
    """Writes `flows` with their rate resolved into the part's local files (sampled flows with a
    rate; unrated ones apart) and notes what the part holds."""
    kept = flows.with_columns(pl.col(name).alias(alias) for name, alias in RECORD_RATE_KEPT.items())
    known, unknown = resolve_sampling(kept, announcements, inputs.default_rate, inputs.override_rate)
    part, unrated = storage.local_path(staged.part), storage.local_path(staged.unrated)
    # Staged for attribution: LZ4 decodes fastest, and row groups of 1 M rows are its chunks.
    known.write_parquet(part, compression="lz4", row_group_size=1_000_000, statistics=False)
    staged.records = known.height
    staged.raw_bytes = int(known["bytes"].sum() or 0)
    staged.sampling = {
        (str(source), int(rate)): int(count)
        for source, rate, count in known.group_by("sampling_source", "sampling_rate").len().iter_rows()
    }
    local_day = pl.col("first_ts").dt.convert_time_zone(inputs.timezone).dt.date().cast(pl.String)
    staged.records_per_day = {
        str(day): int(count) for day, count in known.group_by(local_day.alias("day")).len().iter_rows()
    }
    staged.unrated_records = unknown.height
    if unknown.height:
        unknown.write_parquet(unrated)
        staged.unrated_bytes = int(unknown["bytes"].sum() or 0)
        staged.unrated_reason = str(unknown["reason"][0])
    else:
        unrated.unlink(missing_ok=True)
        staged.unrated_bytes, staged.unrated_reason = 0, ""


def restage_part(staged: StagedPart, announcements: pl.DataFrame, inputs: ExporterInputs) -> None:
    """Resolves a locally staged part (and its unrated flows) again with the week's announcements,
    into new files beside them (`*.restaged.parquet`): the files a group's decode wrote stay as
    they are, so a retried chaining task reads what the first attempt read."""
    part, unrated = storage.local_path(staged.part), storage.local_path(staged.unrated)
    frames = [pl.read_parquet(part).drop("sampling_rate", "sampling_source")]
    if staged.unrated_records:
        frames.append(pl.read_parquet(unrated).drop("sampling_rate", "sampling_source", "reason"))
    flows = (
        pl.concat(frames, how="vertical_relaxed")
        .with_columns(pl.col(alias).alias(name) for name, alias in RECORD_RATE_KEPT.items())
        .drop(list(RECORD_RATE_KEPT.values()))
    )
    staged.part = part.with_name(part.name.removesuffix(".parquet") + RESTAGED)
    staged.unrated = unrated.with_name(unrated.name.removesuffix(".parquet") + RESTAGED)
    stage_flows(flows, staged, announcements, inputs)


RESTAGED = ".restaged.parquet"


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
