"""The week's flow ingest as Prefect tasks: one per exporter on one machine; on a Dask cluster, one
per (exporter, day) group of files, then one per exporter that chains its groups (flows.flow_ingest)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import flow_ingest, processes, storage
from flows.flow_files import ExporterInputs, flow_files_of_days
from flows.flow_ingest import ExporterIngest, FileGroup, IngestWindow, StagedPart
from flows.settings import Settings
from flows.staging import StageLayout, task_scratch
from flows.storage import AnyPath, storage_path
from transforms.decode import ExporterState
from transforms.run_records import ExporterIngestResult, ExporterSummary, SamplingSource


def ingest_days(week: dt.date) -> list[dt.date]:
    """The week's days and the next one: flows starting late on the last day can sit in its files."""
    return [week + dt.timedelta(days=i) for i in range(8)]


def _call(function: Any, *args: Any) -> Any:
    return function(*args)


@task(cache_policy=NO_CACHE)
def ingest_flows_of_exporter(
    settings: Settings, week: dt.date, start: dt.datetime, end: dt.datetime, exporter: str, layout: StageLayout
) -> ExporterIngestResult:
    """Decoded, sampling-resolved flows of one exporter for the week, staged as parquet."""
    with task_scratch() as scratch:
        staged_dir = layout.exporter_flows(exporter)
        # Staging in object storage: parts are written on this machine's disk, then uploaded.
        parts_dir = storage.local_path(staged_dir) if storage.is_local(staged_dir) else scratch / "parts"
        # Each exporter in a process of its own (when running locally): decoding is CPU-bound.
        run: Any = processes.run_in_process if processes.processes_allowed() and not settings.dask_address else _call
        result = run(
            flow_ingest.ingest_exporter,
            settings.landing,
            exporter,
            ingest_days(week),
            start,
            end,
            settings.exporter_inputs(exporter),
            settings.state_path,
            parts_dir,
            layout.exporter_state,
        )
        return _exporter_result(settings, week, exporter, layout, result, scratch)


def plan_file_groups(settings: Settings, week: dt.date, exporter: str, layout: StageLayout) -> int:
    """Writes the groups (one per local day) an exporter's files of the week are decoded in;
    returns how many there are."""
    inputs = settings.exporter_inputs(exporter)
    found = flow_files_of_days(
        settings.landing / "flows" / exporter, ingest_days(week), inputs.timezone, inputs.collector_timezone
    )
    # Consecutive files of one day, in the order file-by-file ingest reads them (a late file in a
    # later day's folder stays where that order puts it).
    groups: list[list[str]] = []
    for previous, file in zip([None, *found], found, strict=False):
        if previous is None or previous.day != file.day:
            groups.append([])
        groups[-1].append(str(file.path))
    groups = groups or [[]]
    storage.write_bytes(layout.file_groups(exporter), json.dumps(groups).encode())
    return len(groups)


@task(cache_policy=NO_CACHE)
def ingest_file_group(
    settings: Settings, start: dt.datetime, end: dt.datetime, exporter: str, index: int, layout: StageLayout
) -> tuple[int, str]:
    """One group of an exporter's files decoded from the state the run started from, its parts
    staged and the group (counts, trace) saved beside them; returns (flow records, SHA-256 of the
    saved group)."""
    window = IngestWindow(exporter, start, end, settings.exporter_inputs(exporter))
    paths = json.loads(layout.file_groups(exporter).read_text())[index]
    entry = flow_ingest.load_exporter_state(settings.state_path, exporter)
    with task_scratch() as scratch:
        group = _decode_group(window, layout, index, paths, entry, scratch, set())
    data = pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL)
    storage.write_bytes(layout.file_group(exporter, index), data)
    return sum(s.records for s in group.staged), hashlib.sha256(data).hexdigest()


def _decode_group(
    window: IngestWindow,
    layout: StageLayout,
    index: int,
    paths: list[str],
    entry: ExporterState,
    scratch: Path,
    seen: set[str],
) -> FileGroup:
    """decode_file_group into the run's staging: straight into a local staging folder, else through
    this worker's scratch and an upload of each part."""
    staged_dir = layout.exporter_flows(window.exporter)
    local = storage.is_local(staged_dir)
    stage = storage.local_path(staged_dir) if local else scratch / f"group-{index}"
    group = flow_ingest.decode_file_group([storage_path(p) for p in paths], index, window, entry, stage, seen)
    if not local:
        for staged in group.staged:
            _upload_part(staged, staged_dir)
    return group


def _upload_part(staged: StagedPart, staged_dir: AnyPath) -> None:
    """Moves a part staged on this worker's disk (and its unrated flows) to `staged_dir`."""
    part, unrated = storage.local_path(staged.part), storage.local_path(staged.unrated)
    staged.part, staged.unrated = staged_dir / part.name, staged_dir / unrated.name
    storage.put_file(part, staged.part)
    if staged.unrated_records:
        storage.put_file(unrated, staged.unrated)


def _load_group(path: AnyPath, digest: str) -> FileGroup:
    data = path.read_bytes()
    # Unpickled only once it is known to be the file the group's task wrote.
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{path}: not the file its ingest task wrote (SHA-256 differs)")
    group: FileGroup = pickle.loads(data)  # noqa: S301 - checked against the digest the task returned
    return group


@task(cache_policy=NO_CACHE)
def finish_exporter_ingest(
    settings: Settings,
    week: dt.date,
    start: dt.datetime,
    end: dt.datetime,
    exporter: str,
    digests: list[str],
    layout: StageLayout,
) -> ExporterIngestResult:
    """An exporter's groups chained in order (a group whose start state differed decoded again),
    parts whose rate the week's announcements changed written again, the exporter's state saved
    in the run's staging: the same staged flows and counts as decoding the files one by one."""
    window = IngestWindow(exporter, start, end, settings.exporter_inputs(exporter))
    groups = [_load_group(layout.file_group(exporter, index), digest) for index, digest in enumerate(digests)]
    state = flow_ingest.load_exporter_state(settings.state_path, exporter)
    with task_scratch() as scratch:

        def redecode(group: FileGroup, entry: ExporterState, seen: set[str]) -> FileGroup:
            return _decode_group(window, layout, group.index, group.paths, entry, scratch, seen)

        def restage(staged: StagedPart, announcements: pl.DataFrame, inputs: ExporterInputs) -> None:
            if storage.is_local(staged.part):
                flow_ingest.restage_part(staged, announcements, inputs)
                return
            # Restaged on this worker's disk, uploaded under new names beside the group's files.
            folder = staged.part.parent
            staged.part = storage.fetch(staged.part, scratch)
            staged.unrated = (
                storage.fetch(staged.unrated, scratch) if staged.unrated_records else scratch / staged.unrated.name
            )
            flow_ingest.restage_part(staged, announcements, inputs)
            part, unrated = storage.local_path(staged.part), storage.local_path(staged.unrated)
            staged.part, staged.unrated = folder / part.name, folder / unrated.name
            storage.put_file(part, staged.part)
            if staged.unrated_records:
                storage.put_file(unrated, staged.unrated)

        result = flow_ingest.chain_file_groups(window, groups, state, redecode, restage)
        flow_ingest.save_exporter_state(layout.exporter_state, exporter, state)
        return _exporter_result(settings, week, exporter, layout, result, scratch)


def _exporter_result(
    settings: Settings, week: dt.date, exporter: str, layout: StageLayout, result: ExporterIngest, scratch: Path
) -> ExporterIngestResult:
    """The exporter's summary for the run (and the quarantine files of what was set aside)."""
    storage.write_parquet(layout.quarantine(f"flows.{exporter}.problems.parquet"), result.quarantine)
    unrated_records = 0
    for unrated in result.unrated:
        local = storage.local_path(unrated) if storage.is_local(unrated) else storage.fetch(unrated, scratch)
        unrated_records += pl.scan_parquet(local).select(pl.len()).collect().item()
        name = Path(str(unrated)).name.split(".")[0]
        # Copied, not moved: a retried task reads the staged file again.
        copy = scratch / "quarantine" / f"{name}.parquet"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, copy)
        storage.put_file(copy, layout.quarantine(f"flows.{exporter}.no_sampling_rate.{name}.parquet"))
    days = [str(week + dt.timedelta(days=i)) for i in range(7)]
    per_day = {day: result.records_per_day.get(day, 0) for day in days}
    staged_dir = layout.exporter_flows(exporter)
    parts = []
    for part in result.parts:
        if storage.is_local(part) and not storage.is_local(staged_dir):
            target = staged_dir / Path(str(part)).name
            storage.put_file(storage.local_path(part), target)
            parts.append(str(target))
        else:
            parts.append(str(part))
    summary = ExporterSummary(
        exporter=exporter,
        service=settings.service_of(exporter),
        parts=tuple(parts),
        files=len(result.files),
        formats=dict(result.formats),
        records=result.records,
        messages=result.messages,
        lost_records=result.lost_records,
        lost_datagrams=result.lost_datagrams,
        outside_window=result.outside_window,
        duplicate_files=result.duplicate_files,
        input_bytes=result.input_bytes,
        unreadable_input_bytes=int(result.quarantine["input_bytes"].sum() or 0),
        quarantined_records=int(result.quarantine["records"].sum() or 0),
        quarantined_bytes=int(result.quarantine["bytes"].sum() or 0),
        problems=problem_lines(result.quarantine),
        sampling=tuple(
            SamplingSource(source, rate, count) for (source, rate), count in sorted(result.sampling.items())
        ),
        raw_bytes=result.raw_bytes,
        records_per_day=per_day,
        unrated_records=unrated_records,
        part_records=tuple(result.part_records),
    )
    return ExporterIngestResult(summary, tuple(result.digests), tuple(result.record_sets))


def problem_lines(quarantine: pl.DataFrame, first: int = 20) -> tuple[str, ...]:
    """The first quarantine rows as "source: position: reason" (never a record's content)."""
    return tuple(f"{p['source']}: {p['position']}: {p['reason']}" for p in quarantine.head(first).to_dicts())
