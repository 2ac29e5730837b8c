"""Reading staged flow files in row-group chunks (flows.attribute)."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.attribute import FLOW_COLUMNS, _ReadAhead, keeping_freed_memory, plan_chunks, read_ahead_window, read_chunk


def _staged(path: Path, rows: int, group_rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(11)
    frame = pl.DataFrame(
        {
            "first_ts": pl.from_epoch(pl.Series(1_717_340_400_000 + np.arange(rows)), time_unit="ms"),
            "src_hi": np.zeros(rows, dtype=np.uint64),
            "src_lo": rng.integers(0, 1 << 48, rows).astype(np.uint64),
            "dst_hi": np.zeros(rows, dtype=np.uint64),
            "dst_lo": rng.integers(0, 1 << 48, rows).astype(np.uint64),
            "protocol": np.full(rows, 6, dtype=np.uint8),
            "src_port": rng.integers(0, 65536, rows).astype(np.uint16),
            "dst_port": rng.integers(0, 65536, rows).astype(np.uint16),
            "est_bytes": rng.integers(1, 10**9, rows).astype(np.uint64),
            "exporter": "r1",  # a column attribution does not read
        }
    )
    frame.write_parquet(path, compression="lz4", row_group_size=group_rows)
    return frame


def _unchanged(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame


def test_chunks_are_whole_row_groups_and_read_back_exactly_their_rows(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    frame = _staged(path, rows=50_000, group_rows=10_000)
    chunks = plan_chunks([path], chunk_rows=25_000)
    assert [(c.offset, c.rows) for c in chunks] == [(0, 20_000), (20_000, 20_000), (40_000, 10_000)]
    # The byte spans follow one another inside the file without overlapping.
    spans = [(c.byte_start, c.byte_stop) for c in chunks]
    assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:], strict=False))
    assert spans[-1][1] <= path.stat().st_size
    read = pl.concat([read_chunk(c, _unchanged) for c in chunks])
    assert read.columns == list(FLOW_COLUMNS)
    assert read.equals(frame.select(FLOW_COLUMNS))


def _cached_bytes_of(path: Path) -> Callable[[], int]:
    """How much of the file the page cache holds, as util-linux's fincore reports it."""

    def cached_bytes() -> int:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], check=True, capture_output=True
        )
        return int(out.stdout.decode().strip())

    return cached_bytes


def _eventually(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_reading_ahead_stays_within_its_budget_of_chunks_not_yet_consumed(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    _staged(path, rows=400_000, group_rows=50_000)
    cached_bytes = _cached_bytes_of(path)
    _forget_file(path)
    assert cached_bytes() < path.stat().st_size // 10
    chunks = plan_chunks([path], chunk_rows=50_000)
    sizes = [c.byte_size for c in chunks]
    assert len(chunks) == 8

    with _ReadAhead(chunks, budget=sizes[0] + sizes[1]) as ahead:
        assert _eventually(lambda: cached_bytes() >= sizes[0] + sizes[1])
        time.sleep(0.3)  # time enough to overrun, were it going to
        assert cached_bytes() < sum(sizes[:3])
        ahead.consumed(chunks[0])
        ahead.consumed(chunks[1])
        assert _eventually(lambda: cached_bytes() >= sum(sizes[:4]))
        time.sleep(0.3)
        assert cached_bytes() < sum(sizes[:5])


def test_a_chunk_bigger_than_the_devices_read_ahead_window_is_read_ahead_whole(tmp_path: Path) -> None:
    # One posix_fadvise(WILLNEED) reads at most the device's read-ahead window (8 MiB here).
    path = tmp_path / "part.parquet"
    window = read_ahead_window(tmp_path)
    group_rows = 2 * window // 30  # ~37 bytes a row: about two windows a chunk
    _staged(path, rows=3 * group_rows, group_rows=group_rows)
    cached_bytes = _cached_bytes_of(path)
    _forget_file(path)
    assert cached_bytes() < path.stat().st_size // 10
    chunks = plan_chunks([path], chunk_rows=group_rows)
    sizes = [c.byte_size for c in chunks]
    assert len(chunks) == 3 and sizes[0] > 1.5 * window

    with _ReadAhead(chunks, budget=sizes[0]):
        assert _eventually(lambda: cached_bytes() >= sizes[0])
        time.sleep(0.3)
        assert cached_bytes() < sizes[0] + sizes[1]


def _forget_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages would stay cached
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_chunk_read_with_forget_leaves_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    _staged(path, rows=400_000, group_rows=100_000)
    cached_bytes = _cached_bytes_of(path)

    path.read_bytes()  # the whole file into the page cache
    before = cached_bytes()
    assert before >= path.stat().st_size // 2
    chunks = plan_chunks([path], chunk_rows=200_000)
    read_chunk(chunks[0], _unchanged)
    assert cached_bytes() == before  # kept by default
    for chunk in chunks:
        read_chunk(chunk, _unchanged, forget=True)
    # Only the footer (metadata) may stay.
    assert cached_bytes() < before // 10


def _page_faults_of_chunk_sized_temporaries(rounds: int = 10) -> int:
    """Minor page faults of this thread while it makes and frees arrays of a chunk's length (three of
    16 MB: with glibc's defaults, the free heap top they leave is trimmed back to the kernel every
    round, 14,000-29,000 faults here)."""
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(rounds):
        column = np.ones(2_000_000)
        doubled = column * 2
        summed = doubled + column
        del column, doubled, summed
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's allocator only")
def test_chunk_temporaries_reuse_freed_memory_inside_and_it_is_given_back_after() -> None:
    with keeping_freed_memory():
        with keeping_freed_memory():  # another exporter's, leaving first
            pass
        _page_faults_of_chunk_sized_temporaries(rounds=1)  # the first round maps the memory
        faults_inside = _page_faults_of_chunk_sized_temporaries()
        held = [np.ones(1_000_000) for _ in range(40)]  # 320 MB
        del held
        resident_inside = _resident_mb()
    resident_after = _resident_mb()
    faults_after = _page_faults_of_chunk_sized_temporaries()

    assert faults_inside < 50
    assert faults_after > 10 * max(faults_inside, 10)
    assert resident_inside - resident_after > 250


def test_reading_ahead_stops_quietly_at_a_file_that_is_gone(tmp_path: Path) -> None:
    # pytest turns an exception left in a thread into an error: the read-ahead must not leave one.
    path = tmp_path / "part.parquet"
    _staged(path, rows=40_000, group_rows=10_000)
    chunks = plan_chunks([path], chunk_rows=10_000)
    path.unlink()
    with _ReadAhead(chunks, budget=1 << 30) as ahead:
        assert _eventually(lambda: not ahead._thread.is_alive())
