"""Reading staged flow files in row-group chunks (flows.attribute)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import polars as pl

from flows.attribute import FLOW_COLUMNS, plan_chunks, read_chunk


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


def test_a_chunk_read_with_forget_leaves_the_page_cache(tmp_path: Path) -> None:
    # util-linux's fincore reports how much of a file the page cache holds.
    path = tmp_path / "part.parquet"
    _staged(path, rows=400_000, group_rows=100_000)

    def cached_bytes() -> int:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], check=True, capture_output=True
        )
        return int(out.stdout.decode().strip())

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
