"""RADIUS detail files through the landing zone: line ends, bytes that are not UTF-8, unreadable files."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import polars as pl
import pytest

from flows import landing
from tests.transforms.test_radius import DETAIL, TZ

DAY = dt.date(2024, 6, 3)


def _write(root: Path, nas: str, name: str, data: bytes) -> Path:
    path = root / "radius" / nas / DAY.isoformat() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _cells(quarantine: pl.DataFrame) -> str:
    return " ".join(str(v) for row in quarantine.iter_rows() for v in row)


def test_a_crlf_file_is_read_and_a_latin1_record_is_set_aside_by_line_without_its_identity(tmp_path: Path) -> None:
    _write(tmp_path, "bras-a", "detail-20240603", DETAIL.replace("\n", "\r\n").encode())
    other = DETAIL.replace('"bras-a"', '"bras-b"').replace('"S1"', '"T1"').replace('"S2"', '"T2"')
    latin1 = _write(
        tmp_path,
        "bras-b",
        "detail-20240603",
        other.replace('"u2@bb.example.jp"', '"josé@bb.example.jp"').encode("latin-1"),
    )
    records, quarantine = landing.ingest_radius(tmp_path, [DAY], TZ)
    assert sorted(records["session_id"].to_list()) == ["S1", "S1", "S2", "T1", "T1"]
    assert records.filter(pl.col("session_id") == "S2")["user_name"].to_list() == ["u2@bb.example.jp"]
    assert quarantine.select("source", "position", "reason", "records").rows() == [
        (str(latin1), "line 30", "bytes that are not UTF-8", 1)
    ]
    assert "jos" not in _cells(quarantine) and "bb.example" not in _cells(quarantine)


def test_a_file_the_parser_cannot_read_is_one_problem_without_the_error_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _write(tmp_path, "bras-a", "detail-20240603", DETAIL.encode())
    corrupt = _write(tmp_path, "bras-b", "detail-20240603.gz", gzip.compress(DETAIL.encode())[:40])

    def parse_detail(detail: bytes, source: str, timezone: str, mapper: object = map) -> None:
        # polars messages quote the data they choke on
        raise pl.exceptions.ComputeError('could not parse "u2@bb.example.jp" as dtype i64')

    monkeypatch.setattr(landing, "parse_detail", parse_detail)
    records, quarantine = landing.ingest_radius(tmp_path, [DAY], TZ)
    assert records.height == 0
    assert sorted(quarantine.select("source", "position", "reason").rows()) == [
        (str(broken), "line 0", "unreadable detail file (ComputeError)"),
        (str(corrupt), "line 0", "cannot decompress (EOFError)"),
    ]
    assert "u2@" not in _cells(quarantine)
