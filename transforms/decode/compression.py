"""gzip and zstd content of landing-zone files, decompressed in bounded chunks.

A file is told compressed by its magic number, whatever its name. Decompression stops, and the
whole file is set aside, as soon as the output grows past a ratio or size limit (a "bomb": a few
MB inflating to GBs). A stream that is cut off, corrupt part way or followed by other bytes still
gives what came before, with the problem; the reasons name offsets and sizes, never content.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import IO, cast

import zstandard

from transforms.errors import InputFormatError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Real inputs compress far less than 100:1: generated IPFIX 2.5:1 (gzip -9) to 2.8:1 (zstd -19),
# RADIUS detail text 12:1 to 17:1, the subscriber directory 7:1 to 11:1. Only long runs of the same
# bytes (zeros, one record repeated) go beyond: nothing a router or a RADIUS server writes.
MAX_COMPRESSION_RATIO = 100
# The ratio is judged only past this much output: small, very repetitive files (test fixtures, a
# quiet hour) may compress better, and 64 MiB is harmless.
RATIO_FLOOR_BYTES = 64 << 20
# Whatever the ratio: decoding holds about 3x a file (bench/README.md), so a file beyond 8 GiB
# would need all of the 24 GiB machine. It is set aside rather than killed for lack of memory.
MAX_DECOMPRESSED_BYTES = 8 << 30
INPUT_PIECE = 1 << 20  # compressed bytes handed to the codec at a time
OUTPUT_CHUNK = 16 << 20  # decompressed bytes asked of the codec at a time
ZSTD_FRAME_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)
ZSTD_DICTIONARY_ID_BYTES = (0, 1, 2, 4)
ZSTD_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


@dataclass(frozen=True)
class Limits:
    """When decompression stops and the file is set aside."""

    max_ratio: float = MAX_COMPRESSION_RATIO
    ratio_floor: int = RATIO_FLOOR_BYTES
    max_bytes: int = MAX_DECOMPRESSED_BYTES


def codec_of(data: bytes) -> str | None:
    """'gzip' or 'zstd' when the content starts with that magic number, else None."""
    if data.startswith(GZIP_MAGIC):
        return "gzip"
    if data.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


class _Output:
    """Decompressed chunks of one file, checked against the limits as they come."""

    def __init__(self, source: str, compressed: int, limits: Limits) -> None:
        self.source = source
        self.compressed = compressed
        self.limits = limits
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes, consumed: int) -> None:
        """Keeps `chunk`; raises (the whole file set aside) once the output passes a limit, judged
        against the `consumed` compressed bytes that gave it."""
        self.chunks.append(chunk)
        self.size += len(chunk)
        limits = self.limits
        if self.size > limits.max_bytes:
            self.chunks = []
            raise InputFormatError(
                self.source,
                "byte 0",
                f"decompresses to more than {limits.max_bytes} bytes (the limit per file); set aside unread",
                self.compressed,
            )
        if self.size > limits.ratio_floor and self.size > limits.max_ratio * max(consumed, 1):
            self.chunks = []
            raise InputFormatError(
                self.source,
                "byte 0",
                f"compression ratio over {limits.max_ratio:g}:1 ({self.size // max(consumed, 1)}:1 for the first "
                f"{consumed} compressed bytes): a decompression bomb? set aside without inflating it",
                self.compressed,
            )

    def join(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks = []
        return data


def _damage(source: str, position: int, reason: str, length: int, cause: BaseException) -> InputFormatError:
    """A problem of a stream that was partly read; `cause` is what a strict reader raises it from."""
    problem = InputFormatError(source, f"byte {position}", reason, length)
    problem.__cause__ = cause
    return problem


def _gunzip(data: bytes, out: _Output) -> InputFormatError | None:
    """Every member of a gzip file into `out`; the problem when the stream is cut, corrupt or followed by junk."""
    view = memoryview(data)
    start = 0
    while True:  # one gzip member per round: `cat a.gz b.gz` is a gzip file too
        inflate = zlib.decompressobj(wbits=31)
        fed = consumed = start
        try:
            while fed < len(view) and not inflate.eof:
                pending: bytes | memoryview = view[fed : fed + INPUT_PIECE]
                fed += len(pending)
                while pending and not inflate.eof:
                    chunk = inflate.decompress(pending, OUTPUT_CHUNK)
                    pending = inflate.unconsumed_tail
                    consumed = fed - len(pending)
                    out.add(chunk, consumed)
            while not inflate.eof:  # output the codec still holds (a call stops at OUTPUT_CHUNK)
                chunk = inflate.decompress(b"", OUTPUT_CHUNK)
                if not chunk:
                    break
                out.add(chunk, fed)
        except zlib.error as exc:
            return _damage(
                out.source,
                out.size,
                f"corrupt gzip stream ({exc}) within compressed bytes {consumed}-{fed}; the rest of the file "
                f"({len(view) - consumed} compressed bytes from there) is unread",
                len(view) - consumed,
                exc,
            )
        if not inflate.eof:
            reason = (
                f"truncated gzip stream: the compressed file ends after {len(view)} bytes without the stream's "
                "end; the data stops here and what followed is unknown"
            )
            return _damage(out.source, out.size, reason, 0, EOFError(reason))
        end = fed - len(inflate.unused_data)
        rest = view[end:]
        if not rest:
            return None
        if bytes(rest[:2]) == GZIP_MAGIC:
            start = end
            continue
        if not bytes(rest).strip(b"\0"):  # zero padding (tape blocks) is allowed by gzip(1)
            return None
        reason = f"{len(rest)} bytes after the gzip stream's end (compressed byte {end}) are not gzip; not read"
        return _damage(out.source, out.size, reason, len(rest), ValueError(reason))


def _zstd_frame_end(view: memoryview, pos: int) -> tuple[int, int, str]:
    """(end, declared content size or -1, '') of the zstd frame at `pos`, found from its block
    headers; when the frame is cut off, (len(view), size, what is missing)."""
    n = len(view)
    magic = int.from_bytes(view[pos : pos + 4], "little")
    if magic in ZSTD_SKIPPABLE:
        if pos + 8 > n:
            return n, 0, f"skippable frame header at compressed byte {pos} needs 8 bytes"
        end = pos + 8 + int.from_bytes(view[pos + 4 : pos + 8], "little")
        return (end, 0, "") if end <= n else (n, 0, f"skippable frame at compressed byte {pos} declares {end - pos}")
    if pos + 5 > n:
        return n, -1, f"frame header at compressed byte {pos} is cut off"
    descriptor = view[pos + 4]
    single_segment = (descriptor >> 5) & 1
    size_bytes = ZSTD_CONTENT_SIZE_BYTES[descriptor >> 6] or single_segment
    header = 5 + (1 - single_segment) + ZSTD_DICTIONARY_ID_BYTES[descriptor & 3] + size_bytes
    if pos + header > n:
        return n, -1, f"frame header at compressed byte {pos} is cut off"
    content = -1
    if size_bytes:
        content = int.from_bytes(view[pos + header - size_bytes : pos + header], "little")
        content += 256 if size_bytes == 2 else 0
    block = pos + header
    while True:
        if block + 3 > n:
            return n, content, f"block header at compressed byte {block} is cut off"
        head = view[block] | view[block + 1] << 8 | view[block + 2] << 16
        body = 1 if (head >> 1) & 3 == 1 else head >> 3  # an RLE block holds its one byte
        if block + 3 + body > n:
            return n, content, f"block at compressed byte {block} declares {body} bytes, {n - block - 3} are left"
        block += 3 + body
        if head & 1:
            break
    if descriptor & 4:  # content checksum
        block += 4
        if block > n:
            return n, content, "its checksum is cut off"
    return block, content, ""


class _FrameReader:
    """The compressed bytes of one zstd frame, read by the codec; tells how many it has taken.

    Bounded to the frame: python-zstandard's reader goes on into the next frame when its input
    holds one, even with read_across_frames=False.
    """

    def __init__(self, frame: memoryview) -> None:
        self.frame = frame
        self.pos = 0

    def read(self, size: int = -1) -> bytes:
        piece = bytes(self.frame[self.pos :] if size < 0 else self.frame[self.pos : self.pos + size])
        self.pos += len(piece)
        return piece


def _unzstd(data: bytes, out: _Output) -> InputFormatError | None:
    """Every frame of a zstd file into `out`; the problem when a frame is cut, corrupt or followed by junk.

    python-zstandard says nothing when a frame is cut off (it returns what it could decode), so each
    frame's end is found first from its block headers.
    """
    view = memoryview(data)
    pos = 0
    decompressor = zstandard.ZstdDecompressor()
    while pos < len(view):
        magic = int.from_bytes(view[pos : pos + 4], "little")
        if magic != ZSTD_FRAME_MAGIC and magic not in ZSTD_SKIPPABLE:
            if not bytes(view[pos:]).strip(b"\0"):
                return None
            reason = f"{len(view) - pos} bytes after the last zstd frame (compressed byte {pos}) are not zstd; not read"
            return _damage(out.source, out.size, reason, len(view) - pos, ValueError(reason))
        end, content, missing = _zstd_frame_end(view, pos)
        frame_start = out.size
        if magic == ZSTD_FRAME_MAGIC:
            frame = _FrameReader(view[pos:end])
            try:
                # stream_reader only calls read(size) on its source
                with decompressor.stream_reader(cast(IO[bytes], frame), read_across_frames=False) as reader:
                    while chunk := reader.read(OUTPUT_CHUNK):
                        out.add(chunk, pos + frame.pos)
            except zstandard.ZstdError as exc:
                return _damage(
                    out.source,
                    out.size,
                    f"corrupt zstd frame at compressed byte {pos} ({exc}); the rest of the file "
                    f"({len(view) - pos} compressed bytes from there) is unread",
                    len(view) - pos,
                    exc,
                )
        if missing:
            read = out.size - frame_start
            if content >= 0:
                known = f"the frame declares {content} bytes, {read} were read"
                lost = max(content - read, 0)
            else:
                known, lost = "the frame does not declare its size: what followed is unknown", 0
            reason = (
                f"truncated zstd frame: {missing}, the compressed file ends after {len(view)} bytes; "
                f"{known}; the data stops here"
            )
            return _damage(out.source, out.size, reason, lost, EOFError(reason))
        pos = end
    return None


def decompress(data: bytes, source: str, limits: Limits | None = None) -> tuple[bytes, InputFormatError | None]:
    """Content of a gzip or zstd file (all members / frames), and what was wrong with a stream that
    could still be partly read (cut off, corrupt part way, followed by other bytes): the content is
    then what came before, and the problem's `length` counts the bytes known to be lost.

    Raises InputFormatError (the whole file set aside, `length` its size) when nothing is usable,
    when the output passes a limit (decompression stops there), or when the content is compressed
    again (a file gzip'd twice would otherwise decode as garbage).
    """
    codec = codec_of(data)
    if codec is None:
        return data, None
    out = _Output(source, len(data), limits or Limits())
    problem = _gunzip(data, out) if codec == "gzip" else _unzstd(data, out)
    content = out.join()
    if problem is not None and not content:
        raise InputFormatError(source, "byte 0", problem.reason, len(data)) from problem.__cause__
    inner = codec_of(content)
    if inner is not None:
        after = "gunzip" if codec == "gzip" else "zstd decompression"
        raise InputFormatError(source, "byte 0", f"still compressed after {after} (compressed twice?)", len(content))
    return content, problem
