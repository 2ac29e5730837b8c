"""Hostile and unusual input in the landing zone: nothing lost silently, nothing fatal, all counted."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard

from flows import flow_ingest, storage
from flows.settings import Settings
from flows.storage import local_path
from flows.weekly import AuditFailed, weekly_report
from tests.conftest import WEEK
from transforms.decode import ipfix

START = dt.datetime(2024, 6, 2, 15, tzinfo=dt.UTC)
END = START + dt.timedelta(days=7)


def _records(n: int, start_ms: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(n)
    return {
        ipfix.IE_START_MS: start_ms + np.arange(n, dtype=np.uint64) * 1000,
        ipfix.IE_END_MS: start_ms + np.arange(n, dtype=np.uint64) * 1000,
        ipfix.IE_SRC_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_DST_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_SRC_PORT: rng.integers(0, 65536, n),
        ipfix.IE_DST_PORT: rng.integers(0, 65536, n),
        ipfix.IE_PROTOCOL: np.full(n, 6),
        ipfix.IE_PACKETS: np.full(n, 2, dtype=np.uint64),
        ipfix.IE_OCTETS: np.full(n, 3000, dtype=np.uint64),
    }


def _write_day(root: Path, exporter: str, day: dt.date, name: str, data: bytes) -> Path:
    path = root / "flows" / exporter / day.isoformat() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _announcement(rate: int) -> tuple[bytes, int]:
    """A message with the flow and options templates and a 1-in-`rate` (IE 34) announcement."""
    options = ipfix.sampling_options_template("interval")
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, options])
    values = {ipfix.IE_SELECTOR_ID: np.array([1]), ipfix.IE_SAMPLING_INTERVAL: np.array([rate])}
    return ipfix.encode_messages(1, 0, 0, header, options, ipfix.pack_records(options, values))


def _data(n: int, start_ms: int, sequence: int) -> tuple[bytes, int]:
    """Messages of n flow records for template 256 (no templates in them)."""
    records = ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, _records(n, start_ms))
    return ipfix.encode_messages(1, 0, sequence, b"", ipfix.FLOW_TEMPLATE_V4, records)


def test_templates_and_sampling_from_an_earlier_run_decode_a_later_file(tmp_path: Path) -> None:
    announce, seq = _announcement(64)
    day1, _ = _data(10, 1_717_340_400_000, seq)
    day2, _ = _data(7, 1_717_426_800_000, 0)
    _write_day(tmp_path, "r1", dt.date(2024, 6, 3), "a.ipfix", announce + day1)
    _write_day(tmp_path, "r1", dt.date(2024, 6, 4), "b.ipfix", day2)
    state = tmp_path / "state"
    first = flow_ingest.ingest_exporter(
        tmp_path, "r1", [dt.date(2024, 6, 3)], START, END, flow_ingest.ExporterInputs(), state, tmp_path / "stage1"
    )
    assert first.records == 10
    # A later run reads only day 2, which has no templates and no options: the state supplies both.
    second = flow_ingest.ingest_exporter(
        tmp_path, "r1", [dt.date(2024, 6, 4)], START, END, flow_ingest.ExporterInputs(), state, tmp_path / "stage2"
    )
    assert second.records == 7
    assert second.quarantine.height == 0
    assert second.flows()["sampling_rate"].to_list() == [64] * 7
    assert set(second.flows()["sampling_source"].to_list()) == {"ipfix:34"}
    # Without the state the same file can be read by nobody: its data sets are reported, not dropped silently.
    fresh = flow_ingest.ingest_exporter(
        tmp_path,
        "r1",
        [dt.date(2024, 6, 4)],
        START,
        END,
        flow_ingest.ExporterInputs(),
        tmp_path / "empty",
        tmp_path / "stage3",
    )
    assert fresh.records == 0
    assert "unknown template 256" in fresh.quarantine["reason"][0]


def test_compressed_duplicate_and_outside_window_records_are_counted(tmp_path: Path) -> None:
    announce, seq = _announcement(8)
    inside, seq = _data(5, 1_717_340_400_000, seq)
    outside, _ = _data(3, 1_700_000_000_000, seq)
    content = announce + inside + outside
    day = dt.date(2024, 6, 3)
    _write_day(tmp_path, "r1", day, "a.ipfix", content)
    _write_day(tmp_path, "r1", day, "a.ipfix.gz", gzip.compress(content))  # the same file delivered twice
    _write_day(tmp_path, "r1", day, "c.ipfix.zst", zstandard.ZstdCompressor().compress(content[:-10]))  # truncated copy
    result = flow_ingest.ingest_exporter(
        tmp_path, "r1", [day], START, END, flow_ingest.ExporterInputs(), tmp_path / "state", tmp_path / "stage"
    )
    assert result.duplicate_files == 1
    assert result.outside_window == 3  # the truncated copy lost its last message (the outside one)
    assert result.records == 5 + 5
    reasons = result.quarantine["reason"].to_list()
    assert any("runs past the end" in r for r in reasons)
    assert result.quarantine["source"].str.ends_with("c.ipfix.zst").any()


@pytest.fixture()
def hostile_landing(tmp_path: Path, small_landing: Path) -> Path:
    landing_copy = tmp_path / "landing"
    shutil.copytree(small_landing, landing_copy)
    day_dir = landing_copy / "flows" / "bb-tokyo-1" / "2024-06-04"
    original = next(day_dir.iterdir())
    data = original.read_bytes()
    (day_dir / "late-copy.ipfix").write_bytes(data)  # the same file delivered twice
    (day_dir / "noise.bin").write_bytes(np.random.default_rng(1).bytes(512))  # random bytes
    # The day's real file arrived cut off in the middle of a message.
    original.unlink()
    (day_dir / "partial.ipfix").write_bytes(data[: len(data) * 2 // 3])
    (day_dir / "late-copy.ipfix").write_bytes(data[: len(data) * 2 // 3])
    return landing_copy


def test_hostile_files_are_quarantined_with_reasons_and_the_week_still_publishes(
    hostile_landing: Path, small_settings: Settings, prefect_server: str
) -> None:
    settings = small_settings.model_copy(update={"landing": hostile_landing, "max_quarantined_share": 0.01})
    run = weekly_report(WEEK, settings)
    assert run.ingest is not None
    tokyo = next(e for e in run.ingest.exporters if e.exporter == "bb-tokyo-1")
    assert tokyo.duplicate_files == 1
    assert tokyo.unreadable_input_bytes >= 512
    problems = " | ".join(tokyo.problems)
    assert "noise.bin: byte 0: not an IPFIX stream" in problems
    # The cut-off file and its duplicate: one is decoded (its complete messages kept), one skipped.
    assert "late-copy.ipfix: byte" in problems and "runs past the end" in problems
    assert "partial.ipfix" not in problems
    quarantine = local_path(settings.quarantine_path) / f"week={WEEK}"
    files = list(quarantine.rglob("flows.bb-tokyo-1.problems.parquet"))
    assert len(files) == 1
    assert pl.read_parquet(files[0])["reason"].str.contains("not an IPFIX stream").any()


def test_the_audit_fails_the_week_when_too_much_input_is_unreadable(
    hostile_landing: Path, small_settings: Settings, prefect_server: str
) -> None:
    settings = small_settings.model_copy(update={"landing": hostile_landing, "max_quarantined_share": 0.0})
    with pytest.raises(AuditFailed, match="could not be decoded"):
        weekly_report(WEEK, settings)
    assert not (settings.warehouse / "_manifest.json").exists()


def _templates_only() -> bytes:
    """A message with the flow template and no sampling announcement."""
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4])
    return ipfix.HEADER.pack(ipfix.IPFIX_VERSION, ipfix.HEADER.size + len(header), 0, 0, 1) + header


def test_parts_are_written_once_and_revisited_only_when_a_later_announcement_changes_their_rate(
    tmp_path: Path,
) -> None:
    # Day 1 has data before any announcement (a default rate applies for now); day 2 announces
    # 1-in-64; day 3 has data after it. Day 1's part must end with the week's announced rate.
    days = [dt.date(2024, 6, 3), dt.date(2024, 6, 4), dt.date(2024, 6, 5)]
    day1, seq = _data(10, 1_717_340_400_000, 0)
    announce, _ = _announcement(64)
    day3, _ = _data(4, 1_717_513_200_000, seq)
    _write_day(tmp_path, "r1", days[0], "a.ipfix", _templates_only() + day1)
    _write_day(tmp_path, "r1", days[1], "b.ipfix", announce)
    _write_day(tmp_path, "r1", days[2], "c.ipfix", day3)
    result = flow_ingest.ingest_exporter(
        tmp_path,
        "r1",
        days,
        START,
        END,
        flow_ingest.ExporterInputs(default_rate=1000),
        tmp_path / "state",
        tmp_path / "stage",
    )
    assert result.revisited_parts == 1  # day 1 only: day 3 was written with the announced rate already
    flows = result.flows()
    assert flows.height == 14
    assert flows["sampling_rate"].to_list() == [64] * 14
    assert set(flows["sampling_source"].to_list()) == {"ipfix:34"}
    assert result.sampling == {("ipfix:34", 64): 14}
    assert result.unrated == []

    # Without a default, day 1's flows wait in the unrated file, then join their part.
    again = flow_ingest.ingest_exporter(
        tmp_path, "r1", days, START, END, flow_ingest.ExporterInputs(), tmp_path / "state2", tmp_path / "stage2"
    )
    assert again.revisited_parts == 1
    assert again.records == 14 and again.unrated == [] and again.quarantine.height == 0
    # The restaged part took them in; the group's own unrated file stays for a retried chaining.
    assert not list((tmp_path / "stage2").glob("unrated-*.restaged.parquet"))
    assert [storage.local_path(p).name for p in again.parts].count("part-000-00000.restaged.parquet") == 1


def test_a_part_whose_rate_nobody_ever_announces_stays_unrated_and_is_not_rewritten(tmp_path: Path) -> None:
    day1, _ = _data(6, 1_717_340_400_000, 0)
    _write_day(tmp_path, "r1", dt.date(2024, 6, 3), "a.ipfix", _templates_only() + day1)
    result = flow_ingest.ingest_exporter(
        tmp_path,
        "r1",
        [dt.date(2024, 6, 3)],
        START,
        END,
        flow_ingest.ExporterInputs(),
        tmp_path / "state",
        tmp_path / "s",
    )
    assert result.revisited_parts == 0
    assert result.records == 0
    assert [storage.read_parquet(p).height for p in result.unrated] == [6]
    assert result.quarantine["records"].to_list() == [6]
