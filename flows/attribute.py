"""Reading staged flow files in chunks and attributing them on worker threads.

The weekly flow and the attribution benchmark both run this, so the benchmark measures what the
pipeline does. Chunks are whole row groups (a file's own boundaries: polars reads them without
decoding a row group twice, and their columns come out contiguous), at most `chunk_rows` rows unless
one row group is larger. Only the columns attribution needs are decoded.

A thread asks the kernel to read the chunks' bytes ahead, in order, up to READ_AHEAD_BYTES past the
chunks being worked on: read cold, a chunk asked for only as it was queued was often still on its
way from disk when a worker took it (at 10^9 flows, reading 1 GiB ahead took the attribution from
83 s to 72 s). One WILLNEED reads at most the device's read-ahead window (8 MiB here), so a chunk
is asked for in pieces of it. When the files are bigger than a quarter of memory, each chunk's
bytes are also dropped from the page cache once read: a staged part is read once, and such a week
otherwise fills the cache, leaving the kernel to reclaim it page by page on the readers' time
(measured at 10^9 flows: 52 s of system CPU, 24 s without). Smaller weeks keep their parts
cached, as the landing step just wrote them.

Building the lookup and attributing run inside `keeping_freed_memory`: every chunk allocates and
frees the same few dozen arrays of a chunk's length, and glibc's defaults give many of them back to
the kernel (memory maps of their own, or a trimmed heap), so the next chunk's arrays fault in fresh
pages the kernel must zero first (at 10^9 flows: ~15 s of user and ~10 s of system CPU of ~180 s).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from transforms import attribution

CHUNK_ROWS = 1_000_000
# How far reading runs ahead of attributing, at most a sixteenth of memory: 64 chunks of 1 M flows.
READ_AHEAD_BYTES = 1 << 30
THREADS = 2
FLOW_COLUMNS = (
    "first_ts",
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "protocol",
    "src_port",
    "dst_port",
    "est_bytes",
)


@dataclass(frozen=True)
class Chunk:
    """Rows [offset, offset + rows) of one parquet file, on row-group boundaries, stored in its
    bytes [byte_start, byte_stop)."""

    path: Path
    offset: int
    rows: int
    byte_start: int
    byte_stop: int

    @property
    def byte_size(self) -> int:
        return self.byte_stop - self.byte_start


def group_parts(parts: list[str], records: list[int], per_task: int | None) -> list[list[str]]:
    """An exporter's staged parts cut into consecutive groups of about `per_task` records (at least
    one part each), one attribution task per group; all in one group when `per_task` is None or the
    records per part are unknown (one empty group for no parts: the exporter's partials are empty)."""
    if per_task is None or len(records) != len(parts) or not parts:
        return [parts]
    groups: list[list[str]] = []
    current: list[str] = []
    held = 0
    for part, count in zip(parts, records, strict=True):
        if current and held + count > per_task:
            groups.append(current)
            current, held = [], 0
        current.append(part)
        held += count
    if current:
        groups.append(current)
    return groups


def plan_chunks(paths: list[Path], chunk_rows: int = CHUNK_ROWS) -> list[Chunk]:
    """Consecutive row groups of each file gathered into chunks of at most chunk_rows rows."""
    chunks: list[Chunk] = []
    for path in paths:
        meta = pq.read_metadata(path)
        groups: list[pq.RowGroupMetaData] = []
        offset = rows = 0
        for index in range(meta.num_row_groups):
            group = meta.row_group(index)
            if rows and rows + group.num_rows > chunk_rows:
                chunks.append(Chunk(path, offset, rows, *_byte_span(groups)))
                offset, rows, groups = offset + rows, 0, []
            rows += group.num_rows
            groups.append(group)
        if rows:
            chunks.append(Chunk(path, offset, rows, *_byte_span(groups)))
    return chunks


def _byte_span(groups: list[pq.RowGroupMetaData]) -> tuple[int, int]:
    """[first byte, last byte + 1) of the row groups' column chunks."""
    columns = [group.column(c) for group in groups for c in range(group.num_columns)]
    starts = [min(c.data_page_offset, c.dictionary_page_offset or c.data_page_offset) for c in columns]
    return min(starts), max(start + c.total_compressed_size for start, c in zip(starts, columns, strict=True))


def read_chunk(chunk: Chunk, prepare: Callable[[pl.LazyFrame], pl.LazyFrame], forget: bool = False) -> pl.DataFrame:
    """The chunk's rows with FLOW_COLUMNS (plus packets when the file has them), after `prepare`;
    with `forget`, its bytes are then dropped from the page cache."""
    frame = prepare(pl.scan_parquet(chunk.path).slice(chunk.offset, chunk.rows))
    names = frame.collect_schema().names()
    columns = [*FLOW_COLUMNS, *(["packets"] if "packets" in names else [])]
    rows = frame.select(columns).collect()
    if forget:
        _advise(chunk, "POSIX_FADV_DONTNEED")
    return rows


def _advise(chunk: Chunk, advice: str, step: int | None = None) -> None:
    """posix_fadvise over the chunk's bytes, where the system has it; in calls of at most `step`
    bytes if given."""
    if not hasattr(os, advice):
        return
    step = step or max(chunk.byte_size, 1)
    fd = os.open(chunk.path, os.O_RDONLY)
    try:
        for offset in range(chunk.byte_start, chunk.byte_stop, step):
            os.posix_fadvise(fd, offset, min(step, chunk.byte_stop - offset), getattr(os, advice))
    finally:
        os.close(fd)


def read_ahead_window(path: Path) -> int:
    """Bytes one POSIX_FADV_WILLNEED reads at most on the file's device: Linux stops at its
    read-ahead size (queue/read_ahead_kb; 128 KiB where it cannot be found), so a bigger chunk is
    asked for in pieces of this size."""
    device = os.stat(path).st_dev
    base = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    for queue in (base / "queue", base / ".." / "queue"):  # a disk, or a partition of one
        try:
            kib = int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
        return max(kib, 128) * 1024
    return 128 * 1024


def _memory_bytes() -> int | None:
    """The machine's physical memory, where the system tells."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _bigger_than_a_quarter_of_memory(paths: list[Path]) -> bool:
    memory = _memory_bytes()
    return memory is not None and sum(path.stat().st_size for path in paths) > memory // 4


# mallopt(3) parameters and glibc's defaults for them.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 * 1024
# The largest mmap threshold glibc accepts on 64-bit systems: a chunk's arrays are 1-16 MB.
_HEAP_BELOW = 32 * 1024 * 1024
_NEVER_TRIM = 2**31 - 1


_holders = 0
_holders_lock = threading.Lock()


@contextmanager
def keeping_freed_memory() -> Iterator[None]:
    """Within it, glibc serves allocations under 32 MB from its heaps and keeps what is freed for
    the next; when the last of any concurrent users (exporters attributed side by side) leaves,
    its defaults return and the free memory goes back to the kernel."""
    global _holders
    if platform.libc_ver()[0] != "glibc":
        yield
        return
    libc = ctypes.CDLL(None)
    with _holders_lock:
        _holders += 1
        if _holders == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_BELOW)
            libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
    try:
        yield
    finally:
        with _holders_lock:
            _holders -= 1
            if _holders == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
                libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
                libc.malloc_trim(0)


def _unchanged(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame


def attribute_files(
    paths: list[Path],
    lookup: attribution.AssignmentLookup,
    prepare: Callable[[pl.LazyFrame], pl.LazyFrame] = _unchanged,
    threads: int = THREADS,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[int, int], None] | None = None,
) -> attribution.Totals:
    """Totals of every flow in the files: chunks read and attributed on `threads` threads, folded in
    as they finish so only the chunks in flight are held. `on_chunk(rows done, rows)` after each."""
    chunks = plan_chunks(paths, chunk_rows)
    total_rows = sum(c.rows for c in chunks)
    totals = attribution.Totals.empty(lookup)
    forget = _bigger_than_a_quarter_of_memory(paths)

    def one(chunk: Chunk) -> attribution.ChunkTotals:
        return attribution.attribute_chunk(read_chunk(chunk, prepare, forget), lookup)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, _ReadAhead(chunks, _read_ahead_bytes()) as ahead:
        done = 0
        for chunk, part in zip(chunks, _bounded_map(pool, one, chunks, 2 * max(1, threads)), strict=True):
            ahead.consumed(chunk)
            attribution.accumulate(totals, part)
            done += chunk.rows
            if on_chunk is not None:
                on_chunk(done, total_rows)
    return totals


def _read_ahead_bytes() -> int:
    memory = _memory_bytes()
    return READ_AHEAD_BYTES if memory is None else min(READ_AHEAD_BYTES, memory // 16)


class _ReadAhead:
    """A thread that advises the kernel to read the chunks, in order, while the chunks advised and
    not yet consumed take at most `budget` bytes (always at least one chunk)."""

    def __init__(self, chunks: list[Chunk], budget: int) -> None:
        self._chunks = chunks
        self._budget = budget
        self._outstanding = 0
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    def __enter__(self) -> _ReadAhead:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join()

    def consumed(self, chunk: Chunk) -> None:
        with self._changed:
            self._outstanding -= chunk.byte_size
            self._changed.notify()

    def _run(self) -> None:
        windows: dict[Path, int] = {}
        for chunk in self._chunks:
            size = chunk.byte_size
            with self._changed:
                while not self._stopped and self._outstanding > 0 and self._outstanding + size > self._budget:
                    self._changed.wait()
                if self._stopped:
                    return
                self._outstanding += size
            try:
                if chunk.path not in windows:
                    windows[chunk.path] = read_ahead_window(chunk.path)
                _advise(chunk, "POSIX_FADV_WILLNEED", step=windows[chunk.path])
            except OSError:
                return  # only advice: reading the chunk reports what is wrong with its file


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[Chunk], attribution.ChunkTotals], items: list[Chunk], ahead: int
) -> Iterator[attribution.ChunkTotals]:
    """pool.map with at most `ahead` items submitted and not yet consumed (pool.map submits all at once)."""
    pending: list[Future[attribution.ChunkTotals]] = []
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()
