"""Flows vs RADIUS counters: week volumes from counters at the records nearest the week's edges."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from transforms.accounting.radius import RECORD_SCHEMA
from transforms.tables.reconcile import compare_flows_to_radius, radius_week_volumes

START = dt.datetime(2024, 6, 2, 15, tzinfo=dt.UTC)  # 2024-06-03 00:00 JST
END = START + dt.timedelta(days=7)


def _record(session: str, status: str, at: dt.datetime, in_octets: int | None, out_octets: int | None) -> dict:
    row: dict[str, object] = dict.fromkeys(RECORD_SCHEMA)
    row |= {"nas": "bras-1", "session_id": session, "status": status, "event_ts": at}
    row |= {"in_octets": in_octets, "out_octets": out_octets, "session_time_s": None}
    return row


def _records(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


SESSIONS = pl.DataFrame(
    {
        "nas": ["bras-1", "bras-1", "bras-1"],
        "session_id": ["a", "b", "c"],
        "user_key": ["alice", "alice", "bob"],
        "service": ["broadband_pppoe", "broadband_pppoe", "broadband_ipoe"],
        "known": [True, True, True],
    }
)


def test_week_volume_is_the_counter_difference_across_the_week() -> None:
    hour = dt.timedelta(hours=1)
    records = _records(
        [
            # alice's first session: began before the week, interim 1 h before it, stopped inside.
            _record("a", "Start", START - 10 * hour, 0, 0),
            _record("a", "Interim-Update", START - hour, 100, 1_000),
            _record("a", "Stop", START + 24 * hour, 600, 6_000),
            # alice's second session: began inside, last interim 2 h before the week's end.
            _record("b", "Start", START + 30 * hour, None, None),
            _record("b", "Interim-Update", END - 2 * hour, 50, 500),
            _record("b", "Interim-Update", END + hour, 70, 700),
            # bob: starts after the week: nothing of his is in it.
            _record("c", "Start", END + 3 * hour, 0, 0),
        ]
    )
    volumes = radius_week_volumes(records, SESSIONS, START, END)
    assert volumes.to_dicts() == [
        {
            "user_key": "alice",
            "service": "broadband_pppoe",
            "radius_in_bytes": 500.0 + 50.0,
            "radius_out_bytes": 5_000.0 + 500.0,
            "sessions": 2,
            # 1 h before the week counted, 2 h at its end not yet counted, over 24 h + 138 h in the week.
            "edge_share": pytest.approx(3 / (24 + 138)),
        }
    ]


def test_tolerance_shrinks_with_sampled_packets() -> None:
    radius = pl.DataFrame(
        {
            "user_key": ["few", "many", "silent"],
            "service": ["broadband_ipoe"] * 3,
            "radius_in_bytes": [1e9, 1e9, 1e9],
            "radius_out_bytes": [1e9, 1e9, 1e9],
            "sessions": [1, 1, 1],
            "edge_share": [0.0, 0.0, 0.0],
        }
    )
    flows = pl.DataFrame(
        {
            "user_key": ["few", "many"],
            "service": ["broadband_ipoe"] * 2,
            "in_bytes": [1.2e9, 1.2e9],
            "out_bytes": [1.0e9, 1.0e9],
            "in_packets": [100, 100],
            "out_packets": [100, 100],
        }
    )
    # 2.4e9 bytes on 200 sampled packets: 1e9 counted bytes should give about 83 samples.
    coarse = {r["user_key"]: r for r in compare_flows_to_radius(flows, radius, z=4.0, floor=0.03).iter_rows(named=True)}
    assert coarse["few"]["in_tolerance"] == pytest.approx(0.03 + 4 / (1e9 * 200 / 2.4e9) ** 0.5)
    assert coarse["few"]["in_within"] and coarse["few"]["out_within"]  # 20% off, on so few samples
    # The same 20% on a million times more samples (finer sampling) is a real disagreement.
    fine = compare_flows_to_radius(
        flows.with_columns(pl.col("in_packets", "out_packets") * 1_000_000), radius, z=4.0, floor=0.03
    )
    by_user = {r["user_key"]: r for r in fine.iter_rows(named=True)}
    assert not by_user["many"]["in_within"] and by_user["many"]["out_within"]
    # A user the counters saw but the flows never did is 100% off.
    assert by_user["silent"]["in_error"] == pytest.approx(1.0) and not by_user["silent"]["in_within"]
