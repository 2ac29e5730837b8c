"""nfcapd files as Debian's nfcapd 1.7.1 wrote them (tests/data/nfcapd), read without nfdump."""

from __future__ import annotations

import struct
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.decode import ExporterState, decode_flow_file
from transforms.decode._nfcapd_walk import lzo1x_decompress
from transforms.decode.nfcapd import FILE_HEADER, decode_nfcapd, is_nfcapd
from transforms.decode.sampling import announcements_frame, resolve_sampling
from transforms.errors import InputFormatError

DATA = Path(__file__).resolve().parents[1] / "data" / "nfcapd"
VARIANTS = ("plain", "lz4", "lzo", "bz2")
IDENTITY = ["first_ts", "last_ts", "src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "protocol"]


def _file(variant: str) -> bytes:
    return (DATA / f"nfcapd-{variant}").read_bytes()


def _estimated(flows: pl.DataFrame, rate: str) -> pl.DataFrame:
    scaled = pl.col(rate).cast(pl.UInt64)
    return flows.select(
        *IDENTITY, (pl.col("packets") * scaled).alias("est_packets"), (pl.col("bytes") * scaled).alias("est_bytes")
    ).sort(IDENTITY)


def _sent() -> pl.DataFrame:
    """The IPFIX messages that were sent to nfcapd, decoded and resolved as the pipeline does."""
    frames = []
    for path in sorted(DATA.glob("*.ipfix")):
        state = ExporterState()
        flows = decode_flow_file(path.read_bytes(), path.stem, str(path), state).flows
        known, unknown = resolve_sampling(flows, announcements_frame(state.sampling), None)
        assert unknown.is_empty()
        frames.append(_estimated(known, "sampling_rate"))
    return pl.concat(frames).sort(IDENTITY)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_compression_gives_the_records_that_were_sent_with_their_rates(variant: str) -> None:
    data = _file(variant)
    assert is_nfcapd(data)
    result = decode_nfcapd(data, "collector", f"nfcapd-{variant}")
    assert result.problems == []
    assert result.compression == {"plain": "none"}.get(variant, variant)
    flows = result.flows
    assert flows.height == 233 and int((flows["src_hi"] != 0).sum()) == 77  # IPv6 too
    assert _estimated(flows, "record_rate").equals(_sent())
    # nfcapd's exporter records: each exporter's address and observation domains, its rate.
    by_exporter = flows.group_by("origin").agg(pl.col("record_rate").unique(), pl.col("domain_id").unique().sort())
    assert {r["origin"]: (r["record_rate"], r["domain_id"]) for r in by_exporter.iter_rows(named=True)} == {
        "127.0.0.2": ([2048], [32, 33]),
        "127.0.0.3": ([4096], [16, 17]),
        "127.0.0.4": ([1024], [48, 49]),
    }
    assert set(flows["record_rate_source"]) == {"nfcapd"}
    assert set(flows["exporter"]) == {"collector"}


def test_decode_flow_file_tells_nfcapd_by_content() -> None:
    result = decode_flow_file(_file("lzo"), "collector", "any-name.bin", ExporterState())
    assert result.problems == [] and result.flows.height == 233
    assert result.formats == {"nfcapd_lzo": 1}


def _records_block(data: bytes | bytearray) -> tuple[int, int]:
    """(offset, size) of the plain file's first data block."""
    offset = FILE_HEADER.size
    _, size, _, _ = struct.unpack_from("<IIHH", data, offset)
    return offset, size


def test_a_file_cut_inside_a_block_keeps_the_blocks_before_and_says_where() -> None:
    data = _file("lz4")
    offset, size = _records_block(data)
    cut = decode_nfcapd(data[: offset + 12 + size // 2], "c", "cut")
    assert cut.flows.height == 0
    [problem] = cut.problems
    assert problem.position == f"byte {offset}" and "cut short" in problem.reason


def test_a_damaged_record_is_set_aside_and_the_others_read() -> None:
    data = bytearray(_file("plain"))
    offset, _ = _records_block(data)
    # Find the first V3 record (type 11) and break its first element's length.
    at = offset + 12
    while struct.unpack_from("<H", data, at)[0] != 11:
        at += struct.unpack_from("<H", data, at + 2)[0]
    struct.pack_into("<H", data, at + 12 + 2, 3)  # an element length below its header's 4 bytes
    result = decode_nfcapd(bytes(data), "c", "damaged")
    assert result.flows.height == 232
    [problem] = result.problems
    assert problem.records == 1 and problem.position.startswith(f"byte {offset} (a block)")
    assert "element runs past the record" in problem.reason


@pytest.mark.parametrize("claimed", [0, 1, 2**31])
def test_a_block_header_that_lies_about_its_record_count_changes_nothing(claimed: int) -> None:
    data = bytearray(_file("plain"))
    offset, _ = _records_block(data)
    struct.pack_into("<I", data, offset, claimed)
    result = decode_nfcapd(bytes(data), "c", "lying")
    assert result.problems == [] and result.flows.height == 233


def test_a_corrupt_lzo_block_is_one_problem() -> None:
    data = bytearray(_file("lzo"))
    offset, size = _records_block(data)
    data[offset + 12 : offset + 12 + size] = bytes(size)  # zeros: an LZO stream that never ends
    result = decode_nfcapd(bytes(data), "c", "lzo")
    assert result.flows.height < 233
    assert [p.position for p in result.problems] == [f"byte {offset}"]
    assert result.problems[0].reason.startswith("lzo block of")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"\x0c\xa5\x01\x00" + bytes(60), "nfdump 1.6 file (layout 1): convert it with nfdump 1.7"),
        (b"\xa5\x0c\x00\x02" + bytes(60), "big-endian"),
        (b"\x0c\xa5\x02\x00" + bytes(12) + b"\x09" + bytes(40), "unknown nfdump block compression 9"),
        (b"\x0c\xa5\x02\x00" + bytes(10), "cut short"),
    ],
)
def test_files_that_cannot_be_read_are_refused_in_one_line(header: bytes, reason: str) -> None:
    result = decode_nfcapd(header, "c", "old.nfcapd")
    assert result.flows.height == 0
    [problem] = result.problems
    assert reason in problem.reason and "\n" not in problem.reason


def test_lzo_decoder_reads_what_nfcapd_compressed_and_refuses_overruns() -> None:
    data = _file("lzo")
    offset, size = _records_block(data)
    block = data[offset + 12 : offset + 12 + size]
    plain = lzo1x_decompress(block, 16 << 20)
    assert isinstance(plain, bytes) and len(plain) > size
    assert lzo1x_decompress(block, len(plain) - 1) == "the data decompresses beyond the block size limit"
    assert isinstance(lzo1x_decompress(block[: size // 2], 16 << 20), str)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.sampled_from(VARIANTS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=12),
    st.integers(0, 10**6),
)
def test_mutated_nfcapd_files_decode_or_report(variant: str, mutations: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_file(variant))
    for position, value in mutations:
        data[position % len(data)] = value
    for candidate in (bytes(data), bytes(data[: cut % (len(data) + 1)])):
        result = decode_flow_file(candidate, "x", "fuzz", ExporterState())
        for problem in result.problems:
            assert isinstance(problem, InputFormatError) and problem.source == "fuzz"
            assert problem.position.startswith(("byte ", "line "))
