"""A generated week sent as IPFIX over UDP to Debian's nfcapd and pmacct's nfacctd, read back from
nfcapd's own files (every compression this nfdump writes), from `nfdump -o csv` of them and from
nfacctd's print plugin (renormalised counts): the same records as the IPFIX files, the same counts
as nfdump itself reads, and the same published tables with the audit passing."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from tests.tools.conftest import require
from tests.tools.replay import (
    collect_with_nfacctd,
    collect_with_nfcapd,
    exporter_sources,
    landing_with_flows,
    records_of,
)
from transforms.decode import ExporterState, decode_flow_file
from transforms.decode.sampling import announcements_frame, resolve_sampling

WEEK = dt.date(2024, 6, 3)
VARIANTS = {"plain": [], "lz4": ["-y"], "lzo": ["-z"], "bz2": ["-j"]}
IDENTITY = ["first_ts", "last_ts", "src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "protocol"]
# Tables that describe the input files themselves (formats, messages) and so differ by design.
ABOUT_THE_FILES = {"ingest_quality"}


@dataclass(frozen=True)
class Replayed:
    generated: Path
    nfcapd: dict[str, Path]
    root: Path


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    require("nfcapd", "nfdump")
    from flows.generate import generate_to

    root = tmp_path_factory.mktemp("collectors")
    generate_to(root / "generated", WEEK, broadband_users=100, mobile_phones=100, seed=19)
    folders = collect_with_nfcapd(root / "generated", root / "nfcapd", VARIANTS)
    return Replayed(root / "generated", folders, root)


def _ipfix_flows(landing: Path, exporter: str) -> pl.DataFrame:
    """The exporter's IPFIX week decoded and resolved as the pipeline does: estimated counts."""
    state = ExporterState()
    frames = [
        decode_flow_file(p.read_bytes(), exporter, str(p), state).flows
        for p in sorted((landing / "flows" / exporter).rglob("*.ipfix"))
    ]
    known, unknown = resolve_sampling(pl.concat(frames), announcements_frame(state.sampling), None)
    assert unknown.is_empty()
    return known


def _estimated(flows: pl.DataFrame, rate: str) -> pl.DataFrame:
    return flows.select(
        *IDENTITY,
        (pl.col("packets") * pl.col(rate).cast(pl.UInt64)).alias("est_packets"),
        (pl.col("bytes") * pl.col(rate).cast(pl.UInt64)).alias("est_bytes"),
        pl.col(rate).cast(pl.UInt64).alias("rate"),
    ).sort([*IDENTITY, "est_bytes"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nfcapd_files_hold_the_ipfix_records_with_their_rate(replayed: Replayed, variant: str) -> None:
    for exporter in exporter_sources(replayed.generated):
        expected = _estimated(_ipfix_flows(replayed.generated, exporter), "sampling_rate")
        flows = records_of(replayed.nfcapd[variant] / exporter)
        # nfcapd stored counts times the rate; they come back as sampled counts and that rate.
        assert set(flows["record_rate_source"]) == {"nfcapd"}, exporter
        got = _estimated(flows, "record_rate")
        assert got.height == expected.height > 1000, exporter
        assert got.equals(expected), exporter


def test_nfdump_reads_the_same_records_counts_and_bytes_as_the_project(replayed: Replayed) -> None:
    for variant, folder in replayed.nfcapd.items():
        for exporter in exporter_sources(replayed.generated):
            lines = subprocess.run(
                ["nfdump", "-R", str(folder / exporter), "-N", "-q", "-o", "fmt:%ipkt %ibyt"],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout.split()
            packets, octets = (sum(int(v) for v in lines[i::2]) for i in (0, 1))
            flows = records_of(folder / exporter)
            rate = pl.col("record_rate").cast(pl.UInt64)
            assert len(lines) // 2 == flows.height, (variant, exporter)
            assert packets == flows.select((pl.col("packets") * rate).sum()).item(), (variant, exporter)
            assert octets == flows.select((pl.col("bytes") * rate).sum()).item(), (variant, exporter)


def _nfdump_csv_tree(nfcapd: Path, out: Path) -> Path:
    """`nfdump -r F -o csv` of every nfcapd file, at the same place in a tree of CSV files."""
    for path in sorted(nfcapd.rglob("nfcapd.*")):
        target = out / path.relative_to(nfcapd).with_name(path.name + ".csv")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as csv:
            subprocess.run(
                ["nfdump", "-r", str(path), "-o", "csv"],
                check=True,
                stdout=csv,
                env={**os.environ, "TZ": "Asia/Tokyo"},
                timeout=120,
            )
    return out


def _publish(landing: Path, root: Path) -> dict[tuple[str, str], str]:
    """SHA-256 of each published table's rows (sorted, as CSV), but the tables about the files."""
    from flows.publish import read_manifest, read_published
    from flows.settings import load_settings
    from flows.weekly import weekly_report

    settings = load_settings(landing=landing, warehouse=root / "warehouse", staging=root / "staging")
    run = weekly_report(WEEK, settings)
    assert run.published and run.audit_passed, run.audit
    manifest = read_manifest(settings.warehouse)
    tables = {}
    for table, parts in manifest["tables"].items():
        for key in parts:
            if table not in ABOUT_THE_FILES:
                frame = read_published(settings.warehouse, manifest, table, key)
                canonical = frame.sort(frame.columns, nulls_last=True).write_csv()
                tables[(table, key)] = hashlib.sha256(canonical.encode()).hexdigest()
    return tables


@pytest.fixture(scope="module")
def ipfix_tables(replayed: Replayed, prefect_server: str) -> dict[tuple[str, str], str]:
    """Checksums of the tables the week's own IPFIX files publish."""
    tables = _publish(replayed.generated, replayed.root / "ipfix")
    assert len(tables) >= 8
    return tables


def test_the_week_through_nfcapd_and_nfdump_csv_publishes_the_ipfix_tables(
    replayed: Replayed, ipfix_tables: dict[tuple[str, str], str]
) -> None:
    root = replayed.root
    expected = ipfix_tables
    nfcapd = landing_with_flows(replayed.generated, replayed.nfcapd["lz4"], root / "landing-nfcapd")
    assert _publish(nfcapd, root / "via-nfcapd") == expected
    # nfdump's CSV has counts times the rate and no rate: before the rate was inferred, the
    # reconciliation took them for sampled counts and failed the audit on most users.
    csv = _nfdump_csv_tree(replayed.nfcapd["plain"], root / "csv")
    via_csv = landing_with_flows(replayed.generated, csv, root / "landing-csv")
    assert _publish(via_csv, root / "via-csv") == expected


def test_the_week_through_pmacct_renormalised_publishes_the_ipfix_tables(
    replayed: Replayed, ipfix_tables: dict[tuple[str, str], str]
) -> None:
    require("nfacctd")
    root = replayed.root
    expected = ipfix_tables
    # nfacctd_renormalize: true prints SAMPLING_RATE 1 and counts times the rate, in hourly files
    # named by flow start, one folder per exporter address.
    collected = collect_with_nfacctd(replayed.generated, root / "nfacctd", renormalize=True)
    via_pmacct = landing_with_flows(replayed.generated, collected, root / "landing-pmacct")
    assert _publish(via_pmacct, root / "via-pmacct") == expected
