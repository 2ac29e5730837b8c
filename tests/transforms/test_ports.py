import polars as pl
import pytest

from transforms.tables.ports import BROADBAND_CATEGORIES, classify_port, share_by_category


def test_lower_port_decides_the_category() -> None:
    flows = pl.LazyFrame({"protocol": [6, 17, 50], "src_port": [443, 51000, 0], "dst_port": [50123, 443, 0]})
    out = classify_port(flows).collect()
    assert out["port"].to_list() == [443, 443, None]


def _usage(rows: list[tuple[str, int, int | None, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"service": pl.String, "protocol": pl.UInt8, "port": pl.Int32, "bytes": pl.Float64}, orient="row"
    )


def test_protocol_rows_and_port_rows_share_the_bytes() -> None:
    usage = _usage(
        [
            ("broadband", 6, 443, 50.0),
            ("broadband", 6, 8080, 10.0),
            ("broadband", 17, 443, 20.0),
            ("broadband", 50, None, 15.0),
            ("broadband", 47, None, 4.0),
            ("broadband", 1, None, 1.0),
        ]
    )
    shares = share_by_category(usage).filter(pl.col("service") == "broadband")
    share = dict(zip(shares["category"], shares["share_pct"]))
    assert share["TCP"] == pytest.approx(60.0)
    assert share["TCP <1024"] == pytest.approx(50.0)
    assert share["TCP >=1024"] == pytest.approx(10.0)
    assert share["TCP 8080"] == pytest.approx(10.0)
    assert share["UDP 443 (https/quic)"] == pytest.approx(20.0)
    assert share["ESP"] == pytest.approx(15.0)
    assert share["GRE"] == pytest.approx(4.0)
    assert share["ICMP"] == pytest.approx(1.0)
    assert share["Other"] == pytest.approx(0.0)
    assert shares["category"].to_list()[: len(BROADBAND_CATEGORIES)] == list(BROADBAND_CATEGORIES)


def test_unlisted_protocols_go_to_other_so_protocol_totals_sum_to_100() -> None:
    usage = _usage([("mobile", 6, 443, 70.0), ("mobile", 132, None, 30.0)])
    shares = share_by_category(usage).filter(pl.col("service") == "mobile")
    totals = shares.filter(pl.col("is_protocol_total"))
    assert totals["share_pct"].sum() == pytest.approx(100.0)
    assert dict(zip(shares["category"], shares["share_pct"]))["Other"] == pytest.approx(30.0)
