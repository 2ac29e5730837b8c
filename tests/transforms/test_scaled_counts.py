"""Counts a collector already multiplied by its sampling rate come back as sampled counts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from expectations.audit import inferred_rate_note, reconciliation_checks
from tests.records import exporter_summary
from transforms.decode.sampling import divide_scaled_counts
from transforms.run_records import ReconciliationSummary, SamplingSource


def _scaled(packets: list[int], octets: list[int], rate: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "packets": [p * rate for p in packets],
            "bytes": [b * rate for b in octets],
            "record_rate": [None] * len(packets),
            "record_rate_source": [None] * len(packets),
        },
        schema={"packets": pl.UInt64, "bytes": pl.UInt64, "record_rate": pl.UInt32, "record_rate_source": pl.String},
    )


def test_a_stated_rate_gives_back_the_sampled_counts() -> None:
    flows = _scaled([1, 3, 2], [1500, 4500, 100], 1000)
    out = divide_scaled_counts(flows, pl.Series([1000, 1000, 1000]), "nfcapd")
    assert out["packets"].to_list() == [1, 3, 2]
    assert out["bytes"].to_list() == [1500, 4500, 100]
    assert out["record_rate"].to_list() == [1000] * 3
    assert out["record_rate_source"].to_list() == ["nfcapd"] * 3
    assert flows["packets"].to_list() == [1000, 3000, 2000]  # the input is not changed


def test_a_stated_rate_that_does_not_divide_the_counts_is_not_believed() -> None:
    flows = _scaled([1, 3, 2], [1500, 4500, 100], 1000)
    out = divide_scaled_counts(flows, pl.Series([1000, 7, None]), "config:collector_sampling")
    assert out["record_rate_source"].to_list() == [
        "config:collector_sampling",
        "config:collector_sampling:inferred",
        "config:collector_sampling:inferred",
    ]
    # Volumes never change, whatever rate is used.
    volumes = (out["bytes"].cast(pl.Int64) * out["record_rate"].cast(pl.Int64)).to_list()
    assert volumes == [1_500_000, 4_500_000, 100_000]


@pytest.mark.parametrize("rate", [1, 2, 100, 1000, 4096])
def test_an_inferred_rate_never_claims_more_samples_than_were_taken(rate: int) -> None:
    rng = np.random.default_rng(rate)
    packets = rng.integers(1, 5, 200).tolist()
    octets = [p * int(rng.integers(40, 1500)) for p in packets]
    out = divide_scaled_counts(_scaled(packets, octets, rate), None, "nfdump")
    inferred = int(out["record_rate"][0])
    assert inferred % rate == 0  # the true rate divides the inferred one
    assert int(out["packets"].sum()) <= sum(packets)
    assert set(out["record_rate_source"]) == {"nfdump:inferred"}
    volumes = out["bytes"].cast(pl.Int64) * out["record_rate"].cast(pl.Int64)
    assert volumes.to_list() == [b * rate for b in octets]


def test_the_reconciliation_says_when_a_rate_was_inferred() -> None:
    summary = ReconciliationSummary(100, 1, 0.01, 0.02)
    clean = exporter_summary(sampling=(SamplingSource("nfcapd", 1000, 50),))
    inferred = exporter_summary(exporter="bb-csv", sampling=(SamplingSource("nfdump:inferred", 2048, 70),))
    assert inferred_rate_note((clean,)) == ""
    [check] = reconciliation_checks(summary, 0.02, inferred_rate_note((clean, inferred)))
    assert check.success
    assert "bb-csv (70 records, 1 in 2048)" in check.detail
    assert "collector_sampling" in check.detail


def test_each_exporter_in_a_file_gets_its_own_inferred_rate() -> None:
    flows = pl.concat([_scaled([1, 2, 3], [100, 300, 700], 4096), _scaled([1, 5, 2], [90, 500, 250], 2048)])
    flows = flows.with_columns(origin=pl.Series(["tokyo"] * 3 + ["osaka"] * 3), domain_id=pl.lit(0, pl.UInt32))
    out = divide_scaled_counts(flows, None, "pmacct")
    assert out["record_rate"].to_list() == [4096] * 3 + [2048] * 3
    assert out["packets"].to_list() == [1, 2, 3, 1, 5, 2]
