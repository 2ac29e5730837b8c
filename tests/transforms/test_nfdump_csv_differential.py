"""The nfdump CSV decoder (bytes straight into polars, numbers typed, text only where needed) against
a straightforward reader: the decoder as it was before (split into Python lines, every column read as
text), on generated files with the quirks real files and damaged ones have."""

from __future__ import annotations

import io
import random

import polars as pl
import pytest

from transforms.decode import nfdump_csv
from transforms.decode._records import FLOW_FIELDS, NO_SELECTOR
from transforms.decode.nfdump_csv import LEGACY, MODERN, _addresses, _timestamp, decode_nfdump_csv
from transforms.errors import InputFormatError

LEGACY_HEADER = (
    "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,dvln,"
    "ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr"
)
# The 33 columns after obyt as nfdump 1.7.1 prints them for a plain NetFlow record.
LEGACY_TAIL = (
    "0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
    "00:00:00:00:00:00," + ",".join(["0-0-0"] * 10) + ",    0.000,    0.000,    0.000,0.0.0.0,17/1,0,"
    "2026-12-07 09:05:59.411"
)
MODERN_HEADER = "firstSeen,duration,proto,srcAddr,srcPort,dstAddr,dstPort,packets,bytes,flows"
SHORT_HEADER = "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt"
SUMMARY = "Summary\nflows,bytes,packets,avg_bps,avg_pps,avg_bpp\n3,291600,600,117108,30,486\n"


def reference_decode(
    data: bytes, exporter: str, source: str, timezone: str
) -> tuple[pl.DataFrame, list[InputFormatError]]:
    """The decoder before it read bytes directly (kept as the reference): Python lines, text columns.

    Two deliberate differences from that code, which the new one has too: problems name the file's
    own line number (blank lines were not counted before), and a double quote is an ordinary
    character (nfdump never quotes; a stray quote used to join lines).
    """
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    end = next((i for i, line in enumerate(lines) if line.strip() in ("Summary", "No matching flows")), len(lines))
    problems: list[InputFormatError] = []
    if end == len(lines) > 1 and lines[-1]:
        start = data.rindex(b"\n") + 1
        reason = f"truncated: the line at byte {start} has no line end, the file ends after {len(data)}"
        problems.append(InputFormatError(source, f"line {len(lines)}", reason, len(data) - start))
        end -= 1
    kept = [(i + 1, line) for i, line in enumerate(lines[:end]) if line.strip()]
    body = "\n".join(line for _, line in kept)
    frame = pl.read_csv(io.StringIO(body), infer_schema=False, truncate_ragged_lines=True, quote_char=None)
    frame = frame.with_columns(_line=pl.Series([n for n, _ in kept[1:]], dtype=pl.Int64))
    names = LEGACY if "ts" in frame.columns else MODERN
    missing = [
        c
        for key, c in names.items()
        if key not in ("rpackets", "rbytes", "duration", "last") and c not in frame.columns
    ]
    if missing:
        raise InputFormatError(source, "line 1", f"nfdump CSV header lacks {missing}")
    proto_text = pl.col(names["proto"]).str.strip_chars().str.to_uppercase()
    frame = frame.with_columns(
        first_ts=_timestamp(names["first"], timezone),
        protocol=pl.coalesce(
            proto_text.cast(pl.UInt8, strict=False),
            proto_text.replace_strict(nfdump_csv.PROTOCOL_NAMES, default=None, return_dtype=pl.UInt8),
        ),
        src_port=pl.col(names["sport"]).str.strip_chars().cast(pl.Float64, strict=False).cast(pl.UInt16, strict=False),
        dst_port=pl.col(names["dport"]).str.strip_chars().cast(pl.Float64, strict=False).cast(pl.UInt16, strict=False),
        packets=pl.col(names["packets"]).str.strip_chars().cast(pl.UInt64, strict=False),
        bytes=pl.col(names["bytes"]).str.strip_chars().cast(pl.UInt64, strict=False),
    )
    if names is LEGACY:
        frame = frame.with_columns(last_ts=_timestamp("te", timezone))
    else:
        seconds = pl.col("duration").str.strip_chars().cast(pl.Float64, strict=False).fill_null(0)
        duration_ms = (seconds * 1000).cast(pl.Int64, strict=False)
        frame = frame.with_columns(last_ts=pl.col("first_ts") + pl.duration(milliseconds=duration_ms))
    frame = _addresses(_addresses(frame, names["src"], "src"), names["dst"], "dst").sort("_line")
    required = ["first_ts", "protocol", "src_port", "dst_port", "packets", "bytes", "src_lo", "dst_lo"]
    bad = frame.filter(pl.any_horizontal(pl.col(c).is_null() for c in required))
    for row in bad.head(1000).iter_rows(named=True):
        column = next(c for c in required if row[c] is None)
        problems.append(InputFormatError(source, f"line {row['_line']}", f"unreadable {column}"))
    if bad.height > 1000:
        problems.append(InputFormatError(source, "lines", f"{bad.height - 1000} more unreadable lines"))
    good = frame.join(bad.select("_line"), on="_line", how="anti", maintain_order="left")
    parts = [good.select("first_ts", "last_ts", *FLOW_FIELDS)]
    if names is LEGACY and "obyt" in good.columns:
        reverse = good.with_columns(
            rp=pl.col("opkt").str.strip_chars().cast(pl.UInt64, strict=False).fill_null(0),
            rb=pl.col("obyt").str.strip_chars().cast(pl.UInt64, strict=False).fill_null(0),
        ).filter(pl.col("rb") > 0)
        parts.append(
            reverse.select(
                "first_ts",
                "last_ts",
                pl.col("dst_hi").alias("src_hi"),
                pl.col("dst_lo").alias("src_lo"),
                pl.col("src_hi").alias("dst_hi"),
                pl.col("src_lo").alias("dst_lo"),
                pl.col("dst_port").alias("src_port"),
                pl.col("src_port").alias("dst_port"),
                "protocol",
                pl.col("rp").alias("packets"),
                pl.col("rb").alias("bytes"),
            )
        )
    flows = pl.concat(parts).select(
        pl.lit(exporter).alias("exporter"),
        pl.lit("nfdump").alias("origin"),
        pl.lit(0, dtype=pl.UInt32).alias("domain_id"),
        pl.lit(NO_SELECTOR, dtype=pl.UInt64).alias("selector_id"),
        pl.lit(1, dtype=pl.UInt32).alias("record_rate"),
        pl.lit("nfdump").alias("record_rate_source"),
        pl.col("first_ts").dt.cast_time_unit("ms"),
        pl.col("last_ts").dt.cast_time_unit("ms"),
        *FLOW_FIELDS,
    )
    return flows, problems


def _pick(rng: random.Random, usual: str, *odd: str) -> str:
    return rng.choice(odd) if odd and rng.random() < 0.08 else usual


def _time(rng: random.Random) -> str:
    # Around Berlin's 2024 changes too: 02:30 on 31 March does not exist, on 27 October it happens twice.
    day = rng.choice(["2024-06-03", "2024-03-31", "2024-10-27"])
    text = f"{day} {rng.choice([0, 1, 2, 3, 23]):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
    if rng.random() < 0.2:
        text += f".{rng.randrange(1000):03d}"
    return _pick(rng, text, f" {text} ", "2024-06-03T00:00:00", "2024-13-01 00:00:00", "", "x", "2024-06-03")


def _address(rng: random.Random) -> str:
    v4 = ".".join(str(rng.randrange(256)) for _ in range(4))
    v6 = f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
    odd = (" 10.0.0.1", "010.0.0.1", "256.1.1.1", "1.2.3", "1.2.3.4.5", "::ffff:10.0.0.1", "fe80::1", "a.b.c.d", "")
    return rng.choice([v6, v6.upper()]) if rng.random() < 0.15 else _pick(rng, v4, *odd)


def _port(rng: random.Random) -> str:
    port = str(rng.choice([443, 80, 53, rng.randrange(65536)]))
    return _pick(rng, port, f"{port}.0", "443.5", " 443", "443 ", "70000", "-1", "1e2", "inf", "nan", "", "x")


def _count(rng: random.Random) -> str:
    return _pick(rng, str(rng.randrange(1, 10**7)), "12.0", " 100", "100 ", "-5", "", "x", "18446744073709551616")


def _protocol(rng: random.Random) -> str:
    return _pick(
        rng, rng.choice(["TCP", "UDP", "TCP", "UDP", "ICMP"]), "tcp", " UDP", "6", "17", "ESP", "47", "XYZ", ""
    )


def _legacy_row(rng: random.Random) -> str:
    reverse = rng.random() < 0.2
    fields = [
        _time(rng),
        _time(rng),
        "1.500",
        _address(rng),
        _address(rng),
        _port(rng),
        _port(rng),
        _protocol(rng),
        "...AP...",
        "0",
        "0",
        _count(rng),
        _count(rng),
        _count(rng) if reverse else "0",
        _count(rng) if reverse else "0",
        LEGACY_TAIL,
    ]
    return ",".join(fields)


def _modern_row(rng: random.Random) -> str:
    duration = _pick(rng, f"{rng.randrange(100000) / 1000:.3f}", "", "x", " 1.5", "1e1")
    fields = [_time(rng), duration, _protocol(rng), _address(rng), _port(rng), _address(rng), _port(rng)]
    return ",".join([*fields, _count(rng), _count(rng), "1"])


def _junk(rng: random.Random) -> str:
    return rng.choice(["", "   ", "\r", "garbage", "1,2,3", "Summary,", "\t", ",,,,", "2024-06-03 00:00:00"])


def make_csv(seed: int) -> bytes:
    """A generated nfdump CSV export: legacy or modern header, quirky values, blank and junk lines,
    and an end that is whole, a Summary or `No matching flows` trailer, or a cut last line."""
    rng = random.Random(seed)
    legacy = rng.random() < 0.7
    lines = ["" for _ in range(rng.choice([0, 0, 0, 1, 2]))]
    header = LEGACY_HEADER if legacy else MODERN_HEADER
    lines.append(header)
    for _ in range(rng.randrange(0, 60)):
        lines.append(_junk(rng) if rng.random() < 0.06 else (_legacy_row(rng) if legacy else _modern_row(rng)))
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.1:
        text = text.replace("\n", "\r\n")
    ending = rng.choice(["whole", "summary", "summary", "none", "cut", "unended", "middle"])
    if ending == "summary":
        text += SUMMARY
    elif ending == "none":
        text += "No matching flows\n"
    elif ending == "middle":  # a trailer line inside: what follows it is not read
        at = rng.randrange(lines.index(header) + 1, len(lines) + 1)
        text = "\n".join(lines[:at] + [" Summary "] + lines[at:]) + "\n"
    data = text.encode()
    if ending == "cut" and not text.endswith(header + "\n"):  # cut inside the last row
        data = data[: len(data) - rng.randrange(1, 40)]
    elif ending == "unended":
        data = data.rstrip(b"\n")
    if rng.random() < 0.05:
        data = data.replace(b"garbage", b"garb\xff\xfeage")  # not UTF-8
    return data


def _outcome(decode: object, data: bytes, timezone: str) -> tuple[pl.DataFrame | None, list[tuple[str, str, int]]]:
    try:
        flows, problems = decode(data, "r1", "gen.csv", timezone)  # type: ignore[operator]
    except InputFormatError as exc:
        return None, [(exc.position, exc.reason, exc.length)]
    return flows, [(p.position, p.reason, p.length) for p in problems]


def _assert_same(data: bytes, timezone: str, label: object) -> None:
    new_flows, new_problems = _outcome(decode_nfdump_csv, data, timezone)
    old_flows, old_problems = _outcome(reference_decode, data, timezone)
    assert new_problems == old_problems, label
    if old_flows is None:
        assert new_flows is None, label
    else:
        assert new_flows is not None and new_flows.equals(old_flows), label


@pytest.mark.parametrize("timezone", ["Asia/Tokyo", "Europe/Berlin", "UTC"])
def test_decoder_agrees_with_the_reference_on_generated_files(timezone: str) -> None:
    for seed in range(20):
        _assert_same(make_csv(seed), timezone, seed)


def test_rows_far_from_the_end_are_located_by_a_pass_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # The usual damaged lines sit at the end (the trailer); others are found by scanning the file.
    monkeypatch.setattr(nfdump_csv, "TAIL_LINES", 2)
    for seed in range(30, 45):
        _assert_same(make_csv(seed), "Europe/Berlin", seed)


@pytest.mark.parametrize("chunk_bytes", [300, 3000])
def test_files_read_in_chunks_give_the_same(monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    # Big files go through the reader a chunk at a time: line numbers, trailers and cuts carry over.
    monkeypatch.setattr(nfdump_csv, "CHUNK_BYTES", chunk_bytes)
    for seed in range(50, 60):
        _assert_same(make_csv(seed), "Asia/Tokyo", seed)


def test_problems_name_the_files_own_line_numbers_past_blank_lines() -> None:
    row = "2024-06-03 00:00:00,2024-06-03 00:00:05,5.000,10.0.0.1,10.0.0.2,1000,443,TCP,......,0,0,2,100,0,0"
    data = f"\n{SHORT_HEADER}\n{row}\n\n   \n{row.replace('10.0.0.2', 'x')}\n{SUMMARY}".encode()
    flows, problems = decode_nfdump_csv(data, "r", "x.csv", "UTC")
    assert flows.height == 1
    assert [(p.position, p.reason) for p in problems] == [("line 6", "unreadable dst_lo")]


def test_thousands_of_bad_lines_are_summed_up_after_the_first_thousand() -> None:
    row = "2024-06-03 00:00:00,2024-06-03 00:00:05,5.000,10.0.0.1,10.0.0.2,1000,443,TCP,......,0,0,2,100,0,0"
    data = (SHORT_HEADER + "\n" + "\n".join([row, "junk"] * 1500) + "\n").encode()
    flows, problems = decode_nfdump_csv(data, "r", "x.csv", "UTC")
    assert flows.height == 1500
    assert [(p.position, p.reason) for p in problems[:2]] == [
        ("line 3", "unreadable first_ts"),
        ("line 5", "unreadable first_ts"),
    ]
    assert (problems[-1].position, problems[-1].reason) == ("lines", "500 more unreadable lines")
    _assert_same(data, "UTC", "many bad lines")
