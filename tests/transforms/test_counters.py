"""Interface counters to monthly traffic: resets, edges, gaps and unreadable lines, on tiny frames."""

from __future__ import annotations

import polars as pl
import pytest

from transforms.accounting import counters

HOUR = 3600


def _polls(rows: list[tuple[int, str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "time_s": [r[0] for r in rows],
            "device": "r1",
            "interface": [r[1] for r in rows],
            "in_octets": [r[2] for r in rows],
            "out_octets": [r[3] for r in rows],
        },
        schema=counters.POLL_SCHEMA,
    )


def test_a_counter_reset_is_not_counted_and_is_reported() -> None:
    polls = _polls([(0, "a", 1000, 5000), (HOUR, "a", 1100, 6000), (2 * HOUR, "a", 10, 20), (3 * HOUR, "a", 110, 1020)])
    [row] = counters.count_traffic_in_window(polls, 0, 3 * HOUR).to_dicts()
    assert row["in_bytes"] == 100 + 100 and row["out_bytes"] == 1000 + 1000
    assert row["covered_s"] == 2 * HOUR and row["counter_resets"] == 1


def test_an_interval_crossing_the_window_edge_counts_by_its_overlap() -> None:
    polls = _polls([(0, "a", 0, 0), (4 * HOUR, "a", 400, 800)])
    [row] = counters.count_traffic_in_window(polls, HOUR, 2 * HOUR).to_dicts()
    assert row["in_bytes"] == pytest.approx(100) and row["out_bytes"] == pytest.approx(200)
    assert row["covered_s"] == HOUR


def test_average_rate_scales_each_interface_by_its_coverage_and_reports_the_least_covered() -> None:
    polls = _polls(
        [(0, "a", 0, 0), (HOUR, "a", 3600, 7200), (2 * HOUR, "a", 7200, 14400)]  # a: 1 and 2 byte/s, whole window
        + [(0, "b", 0, 0), (HOUR, "b", 36000, 0)]  # b: 10 byte/s IN, polled half the window
    )
    inventory = pl.DataFrame(
        {"device": ["r1", "r1", "r9"], "interface": ["a", "b", "x"], "service": ["bb", "bb", "mob"]}
    )
    traffic = counters.count_traffic_in_window(polls, 0, 2 * HOUR)
    rows = {r["service"]: r for r in counters.average_traffic_by_service(traffic, inventory, 0, 2 * HOUR).to_dicts()}
    assert rows["bb"]["in_bps"] == pytest.approx(8 * (1 + 10)) and rows["bb"]["out_bps"] == pytest.approx(8 * 2)
    assert rows["bb"]["coverage"] == pytest.approx(0.5) and rows["bb"]["interfaces"] == 2
    # An inventory interface never polled: no traffic, and coverage 0 for the audit to refuse.
    assert rows["mob"]["coverage"] == 0 and rows["mob"]["in_bps"] == 0


def test_polls_of_interfaces_outside_the_inventory_are_counted() -> None:
    polls = _polls([(0, "a", 0, 0), (HOUR, "z", 1, 1), (2 * HOUR, "z", 2, 2)])
    inventory = pl.DataFrame({"device": ["r1"], "interface": ["a"], "service": ["bb"]})
    assert counters.unknown_interfaces(polls, inventory).rows() == [("r1", "z", 2)]


def test_unreadable_lines_are_set_aside_with_their_line_and_reason() -> None:
    text = (
        b"time,device,interface,in_octets,out_octets\n"
        b"2024-06-01T00:00:00+09:00,r1,a,1,2\n"
        b"2024-06-01T01:00:00,r1,a,3,4\n"  # no offset: which zone?
        b"1717171200,r1,a,-5,4\n"
        b"2024-05-31T16:00:00Z,r1,,7,8\n"
        b"1717174800,r1,a,9,10\n"
    )
    good, bad = counters.parse_counter_csv(text, "counters/r1/2024-06.csv")
    assert good["time_s"].to_list() == [1717167600, 1717174800]
    assert bad.rows() == [
        ("counters/r1/2024-06.csv", "line 3", "time is neither ISO 8601 with an offset nor epoch seconds"),
        ("counters/r1/2024-06.csv", "line 4", "octet counter is not a non-negative integer"),
        ("counters/r1/2024-06.csv", "line 5", "device or interface missing"),
    ]


def test_a_file_without_the_counter_columns_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"r1.csv: line 1: missing columns \['in_octets', 'out_octets'\]"):
        counters.parse_counter_csv(b"time,device,interface\n1,r1,a\n", "r1.csv")
