"""Cut-off, doubly compressed and over-compressed files in the landing zone (issue 16, items 9 and 10):
the bytes that could not be read are counted where the audit sees them, the records before the cut
are kept, and a decompression bomb is set aside without being inflated."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard

from flows import flow_ingest, landing
from tests.flows.test_landing_hostile import END, START, _announcement, _data, _records, _write_day
from transforms.decode import ipfix, pcap
from transforms.decode._records import ExporterState
from transforms.decode.exports import decode_flow_file
from transforms.decode.nfdump_csv import decode_nfdump_csv
from transforms.errors import InputFormatError

DAY = dt.date(2024, 6, 3)
MONDAY_MS = 1_717_340_400_000


def _week_file() -> tuple[bytes, int]:
    """An IPFIX file of a sampling announcement and 20,000 flow records in 17 messages; its records."""
    announce, sequence = _announcement(8)
    flows, _ = _data(20_000, MONDAY_MS, sequence)
    return announce + flows, 20_000


def _message_ends(data: bytes) -> list[int]:
    """Where each whole IPFIX message of `data` ends (messages read by their own length field)."""
    ends, pos = [], 0
    while pos + 16 <= len(data):
        length = struct.unpack_from("!H", data, pos + 2)[0]
        if pos + length > len(data):
            break
        pos += length
        ends.append(pos)
    return ends


def _records_before(data: bytes, end: int) -> int:
    """Flow records in the whole messages before byte `end` (the first message holds no flows)."""
    decoded = ipfix.decode_ipfix(data[:end], "r1", "oracle", ExporterState())
    assert decoded.problems == []
    return decoded.flows.height


def test_a_cut_ipfix_message_is_named_with_its_declared_length_and_its_unread_bytes_counted() -> None:
    content, _ = _week_file()
    cut = content[: len(content) - 150_000]
    last_good = _message_ends(cut)[-1]
    result = decode_flow_file(cut, "r1", "cut.ipfix", ExporterState())
    assert result.flows.height == _records_before(content, last_good) > 0
    [problem] = result.problems
    declared = struct.unpack_from("!H", cut, last_good + 2)[0]
    assert problem.position == f"byte {last_good}"
    assert problem.reason.startswith(
        f"truncated: message at byte {last_good} declares {declared} bytes, the data ends after {len(cut) - last_good}"
    )
    assert problem.length == len(cut) - last_good


@pytest.mark.parametrize("codec", ["plain", "gzip", "zstd"])
def test_ingest_keeps_the_records_before_the_cut_and_counts_the_unread_bytes(tmp_path: Path, codec: str) -> None:
    content, _ = _week_file()
    if codec == "plain":
        stored, available = content[: len(content) - 150_000], content[: len(content) - 150_000]
    elif codec == "gzip":
        compressed = gzip.compress(content)
        stored = compressed[: len(compressed) * 3 // 4]
        available = zlib.decompressobj(wbits=31).decompress(stored)  # what can be read of the cut stream
    else:
        compressed = zstandard.ZstdCompressor().compress(content)  # declares its content size
        stored = compressed[: len(compressed) * 3 // 4]
        available = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    assert 0 < len(available) < len(content)
    suffix = {"plain": "", "gzip": ".gz", "zstd": ".zst"}[codec]
    path = _write_day(tmp_path, "r1", DAY, f"week.ipfix{suffix}", stored)
    last_good = _message_ends(available)[-1]

    result = flow_ingest.ingest_exporter(
        tmp_path, "r1", [DAY], START, END, flow_ingest.ExporterInputs(), tmp_path / "state", tmp_path / "stage"
    )

    assert len(available) > last_good  # the cut falls inside a message
    assert result.records == _records_before(content, last_good) > 10_000
    assert result.quarantine["source"].to_list() == [str(path)] * result.quarantine.height
    assert result.quarantine["records"].sum() == 0
    reasons = " | ".join(result.quarantine["reason"])
    assert f"truncated: message at byte {last_good} declares" in reasons
    unread = int(result.quarantine["input_bytes"].sum())
    if codec == "plain":
        assert unread == len(available) - last_good
        assert result.input_bytes == len(stored)
    elif codec == "gzip":
        # What followed the cut is unknowable in a gzip stream (its size is in the lost trailer).
        assert f"truncated gzip stream: the compressed file ends after {len(stored)} bytes" in reasons
        assert unread == len(available) - last_good
        assert result.input_bytes == len(available)
    else:
        # The zstd frame declared its size: everything after the last whole message is counted.
        assert "truncated zstd frame" in reasons and f"the frame declares {len(content)} bytes" in reasons
        assert unread == len(content) - last_good
        assert result.input_bytes == len(content)
    assert unread / result.input_bytes > 0.001  # enough for the default max_quarantined_share gate to fail


def _pcapng(frames: list[bytes]) -> tuple[bytes, list[int]]:
    """A little-endian pcapng capture (section header, one Ethernet interface, enhanced packet
    blocks) of `frames`, and the offset where each packet block ends."""

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", pcap.LINK_ETHERNET, 0, 65535))
    ends = []
    for frame in frames:
        out += block(6, struct.pack("<IIIII", 0, 0, 0, len(frame), len(frame)) + frame)
        ends.append(len(out))
    return out, ends


def _export_frames(count: int) -> list[bytes]:
    """Ethernet frames of UDP datagrams each carrying one IPFIX message with its template and 20 flows."""
    frames = []
    for index in range(count):
        records = ipfix.pack_records(ipfix.FLOW_TEMPLATE_V4, _records(20, MONDAY_MS + index * 60_000))
        header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4])
        message, _ = ipfix.encode_messages(1, 0, index * 20, header, ipfix.FLOW_TEMPLATE_V4, records)
        frames.append(pcap.ethernet_ipv4_frame("192.0.2.1", "192.0.2.9", 17, pcap.udp_segment(4739, 4739, message)))
    return frames


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_cut_capture_keeps_its_whole_packets_and_counts_the_bytes_after_them(kind: str) -> None:
    frames = _export_frames(4)
    if kind == "pcap":
        data = pcap.write_pcap([(1.0 + i, f) for i, f in enumerate(frames)])
        ends = [24 + sum(16 + len(f) for f in frames[: i + 1]) for i in range(len(frames))]
    else:
        data, ends = _pcapng(frames)
    for cut in (ends[2] + 7, ends[2] + 40):  # inside the next record's header, inside its packet
        result = decode_flow_file(data[:cut], "r1", f"cut.{kind}", ExporterState())
        assert result.flows.height == 3 * 20
        [problem] = result.problems
        assert problem.position == f"byte {ends[2]}"
        assert problem.reason.startswith("truncated: ")
        assert problem.length == cut - ends[2]


def test_a_capture_cut_inside_its_file_header_is_a_problem_not_a_crash() -> None:
    data = pcap.write_pcap([(1.0, _export_frames(1)[0])])[:20]
    result = decode_flow_file(data, "r1", "stub.pcap", ExporterState())
    assert result.flows.height == 0
    [problem] = result.problems
    assert (problem.position, problem.length) == ("byte 0", 20)
    assert problem.reason == "truncated: the pcap file header needs 24 bytes, the file ends after 20"


NFDUMP_CSV = (
    b"firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows\n"
    b"2024-06-03 09:00:00.250,1.500,TCP,192.0.2.5,51000,198.51.100.1,443,10,12000,1\n"
    b"2024-06-03 09:00:01.000,0.000,UDP,192.0.2.6,53000,198.51.100.2,53,3,4500,1\n"
    b"2024-06-03 09:00:02.000,0.000,TCP,192.0.2.7,52000,198.51.100.3,443,7,98765,1\n"
)


def test_an_nfdump_csv_cut_inside_its_last_line_sets_that_line_aside() -> None:
    cut = NFDUMP_CSV[: NFDUMP_CSV.rindex(b"98765") + 2]  # the last flow would read as 98 bytes
    line_start = cut.rindex(b"\n") + 1
    flows, problems = decode_nfdump_csv(cut, "r1", "cut.csv", "UTC")
    assert flows["bytes"].to_list() == [12000, 4500]
    [problem] = problems
    assert problem.position == "line 4"
    assert problem.reason == f"truncated: the line at byte {line_start} has no line end, the file ends after {len(cut)}"
    assert problem.length == len(cut) - line_start
    # A whole file (ending in a line end) has no such problem, with or without nfdump's Summary trailer.
    assert decode_nfdump_csv(NFDUMP_CSV, "r1", "whole.csv", "UTC")[1] == []


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_cut_gzip_or_zstd_file_read_whole_is_refused_as_truncated(tmp_path: Path) -> None:
    detail = b"".join(
        b"Mon Jun  3 09:00:%02d 2024\n\tAcct-Status-Type = Interim-Update\n\n" % (i % 60) for i in range(4000)
    )
    gz = gzip.compress(detail)
    zst = zstandard.ZstdCompressor().compress(detail)
    with pytest.raises(InputFormatError, match="truncated gzip stream") as gz_error:
        landing.read_bytes(_write(tmp_path, "detail.gz", gz[:-100]))
    assert isinstance(gz_error.value.__cause__, EOFError)  # what the RADIUS reader names
    with pytest.raises(InputFormatError, match="truncated zstd frame"):
        landing.read_bytes(_write(tmp_path, "detail.zst", zst[:-100]))
    # Whole, they read as before.
    assert landing.read_bytes(_write(tmp_path, "whole.gz", gz)) == detail
    assert landing.read_bytes(_write(tmp_path, "whole.zst", zst)) == detail


def test_concatenated_gzip_members_and_zstd_frames_are_all_read(tmp_path: Path) -> None:
    first, second = b"first part\n" * 1000, b"second part\n" * 1000
    gz = gzip.compress(first) + gzip.compress(second)
    zst = zstandard.ZstdCompressor().compress(first) + zstandard.ZstdCompressor().compress(second)
    assert landing.read_bytes(_write(tmp_path, "two.gz", gz)) == first + second
    assert landing.read_bytes(_write(tmp_path, "two.zst", zst)) == first + second


@pytest.mark.parametrize(
    ("outer", "inner", "reason"),
    [
        ("gzip", "gzip", "still compressed after gunzip (compressed twice?)"),
        ("gzip", "zstd", "still compressed after gunzip (compressed twice?)"),
        ("zstd", "gzip", "still compressed after zstd decompression (compressed twice?)"),
    ],
)
def test_a_file_compressed_twice_is_one_problem_for_the_whole_file(
    tmp_path: Path, outer: str, inner: str, reason: str
) -> None:
    content, _ = _week_file()

    def compress(codec: str, data: bytes) -> bytes:
        return gzip.compress(data) if codec == "gzip" else zstandard.ZstdCompressor().compress(data)

    once = compress(inner, content)
    path = _write_day(tmp_path, "r1", DAY, "twice.ipfix.gz", compress(outer, once))
    with pytest.raises(InputFormatError) as error:
        landing.read_bytes(path)
    assert (error.value.source, error.value.position, error.value.reason) == (str(path), "byte 0", reason)
    result = flow_ingest.ingest_exporter(
        tmp_path, "r1", [DAY], START, END, flow_ingest.ExporterInputs(), tmp_path / "state", tmp_path / "stage"
    )
    assert result.records == 0
    assert result.quarantine.select("reason", "input_bytes").rows() == [(reason, len(once))]


def test_the_limits_are_parameters_and_a_small_repetitive_file_passes_the_defaults(tmp_path: Path) -> None:
    zeros = _write(tmp_path, "zeros.gz", gzip.compress(bytes(8 << 20)))  # 8 MiB at about 1000:1
    assert landing.read_bytes(zeros) == bytes(8 << 20)  # below the ratio floor: harmless
    with pytest.raises(InputFormatError, match=r"compression ratio over 100:1") as error:
        landing.read_bytes(zeros, max_ratio=100, ratio_floor=1 << 20)
    assert error.value.length == zeros.stat().st_size  # the whole file is set aside
    text = _write(tmp_path, "text.zst", zstandard.ZstdCompressor().compress(bytes(range(256)) * 8192))  # 2 MiB
    with pytest.raises(InputFormatError, match=r"decompresses to more than 1048576 bytes"):
        landing.read_bytes(text, max_bytes=1 << 20)


BOMB_CHECK = """
import json, resource, sys
from pathlib import Path
from flows import flow_ingest, landing
from transforms.errors import InputFormatError
out = {}
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        landing.read_bytes(Path(path))
        out[path] = ["read", 0]
    except InputFormatError as exc:
        out[path] = [exc.reason, exc.length]
    out[path].append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
print(json.dumps(out))
"""


def _gzip_of_zeros(path: Path, gib: float) -> int:
    """A valid single-member gzip file of `gib` GiB of zeros, written without compressing them all:
    after a full flush, deflating the same 16 MiB again gives the same bytes."""
    piece = bytes(16 << 20)
    pieces = int(gib * 64)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = deflate.compress(piece) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(pieces):
        crc = zlib.crc32(piece, crc)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        for _ in range(pieces):
            out.write(unit)
        out.write(deflate.flush())
        out.write(struct.pack("<II", crc, (pieces * len(piece)) & 0xFFFFFFFF))
    return pieces * len(piece)


def test_gzip_and_zstd_bombs_are_set_aside_without_being_inflated(tmp_path: Path) -> None:
    gz = tmp_path / "bomb.ipfix.gz"
    size = _gzip_of_zeros(gz, 1.5)
    assert gz.stat().st_size < 2_000_000 and size == 1_610_612_736
    zst = tmp_path / "bomb.ipfix.zst"
    with zst.open("wb") as out:
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
        for _ in range(96):
            out.write(compressor.compress(bytes(16 << 20)))
        out.write(compressor.flush())
    run = subprocess.run(
        [sys.executable, "-c", BOMB_CHECK, str(gz), str(zst)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    for path in (gz, zst):
        reason, length, growth_mb = result[str(path)]
        assert reason.startswith("compression ratio over 100:1"), reason
        assert length == path.stat().st_size
        assert growth_mb < 300, f"{path.name}: peak RSS grew by {growth_mb} MB"
