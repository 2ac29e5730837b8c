"""RADIUS accounting records (Start / Interim-Update / Stop) for the synthetic sessions."""

from __future__ import annotations

import ipaddress
from typing import Protocol

import numpy as np
import polars as pl

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class SessionsLike(Protocol):
    user: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    addr_hi: np.ndarray
    addr_lo: np.ndarray
    prefix_len: np.ndarray


def _cumulative(hourly: np.ndarray, users: np.ndarray, t: np.ndarray, t0: int) -> np.ndarray:
    """True bytes a user moved from the week's start to t (negative before it), linear in each hour."""
    per_hour = hourly.reshape(hourly.shape[0], -1)  # (n, 168)
    knots = np.concatenate([np.zeros((per_hour.shape[0], 1)), np.cumsum(per_hour, axis=1)], axis=1)
    hours = per_hour.shape[1]
    rate = knots[:, -1] / hours  # outside the week: the week's average hourly rate
    x = (t - t0) / HOUR_MS
    inside = np.clip(x, 0, hours)
    k = np.minimum(np.floor(inside).astype(np.int64), hours - 1)
    value = knots[users, k] + (inside - k) * per_hour[users, k]
    value += np.where(x < 0, x * rate[users], 0.0) + np.where(x > hours, (x - hours) * rate[users], 0.0)
    return np.asarray(value)


def _records(
    rng: np.random.Generator,
    sessions: SessionsLike,
    hourly: dict[str, np.ndarray],
    t0: int,
    t1: int,
    interim_ms: int,
) -> pl.DataFrame:
    """One row per accounting record of every session, in the window [t0 - 1 day, t1 + 1 day)."""
    lo, hi = t0 - DAY_MS, t1 + DAY_MS
    n = sessions.user.size
    phase = rng.integers(0, interim_ms, size=n)
    rows_session, rows_ts, rows_status = [], [], []
    for i in range(n):
        start, end = int(sessions.start_ms[i]), int(sessions.end_ms[i])
        if end <= lo or start >= hi:
            continue
        if start >= lo:
            rows_session.append(i)
            rows_ts.append(start)
            rows_status.append("Start")
        first = start + interim_ms if start >= lo else start + ((lo - start) // interim_ms + 1) * interim_ms
        first += int(phase[i]) % max(interim_ms // 4, 1)
        ticks = np.arange(first, min(end, hi), interim_ms)
        rows_session += [i] * ticks.size
        rows_ts += ticks.tolist()
        rows_status += ["Interim-Update"] * ticks.size
        if end < hi:
            rows_session.append(i)
            rows_ts.append(end)
            rows_status.append("Stop")
    s = np.array(rows_session, dtype=np.int64)
    ts = np.array(rows_ts, dtype=np.int64)
    users = sessions.user[s]
    started = sessions.start_ms[s]
    counters = {}
    for direction in ("in", "out"):
        counters[direction] = np.maximum(
            _cumulative(hourly[direction], users, ts, t0) - _cumulative(hourly[direction], users, started, t0), 0
        ).astype(np.int64)
    delay = np.where(rng.random(s.size) < 0.1, rng.integers(1, 30, size=s.size), 0)
    return pl.DataFrame(
        {
            "session_index": s,
            "user_index": users,
            "event_ms": ts,
            "status": rows_status,
            "session_time_s": (ts - started) // 1000,
            "in_octets": counters["in"],
            "out_octets": counters["out"],
            "delay_s": delay,
        }
    )


def _address_text(hi: np.ndarray, lo: np.ndarray, plen: np.ndarray) -> tuple[list[str | None], list[str | None]]:
    v4: list[str | None] = []
    v6: list[str | None] = []
    for h, l_, p in zip(hi.tolist(), lo.tolist(), plen.tolist()):
        if p == 128 and h == 0 and (l_ >> 32) == 0xFFFF:
            v4.append(str(ipaddress.IPv4Address(l_ & 0xFFFFFFFF)))
            v6.append(None)
        else:
            v4.append(None)
            v6.append(f"{ipaddress.IPv6Address((h << 64) | l_)}/{p}")
    return v4, v6


def broadband_accounting(
    rng: np.random.Generator,
    users: pl.DataFrame,
    sessions: SessionsLike,
    hourly: dict[str, np.ndarray],
    t0: int,
    t1: int,
    interim_ms: int = 6 * HOUR_MS,
) -> pl.DataFrame:
    """Accounting rows of a broadband access server: PPPoE (IPv4) and IPoE (delegated IPv6 prefix)."""
    records = _records(rng, sessions, hourly, t0, t1, interim_ms)
    v4, v6 = _address_text(sessions.addr_hi, sessions.addr_lo, sessions.prefix_len)
    session_table = pl.DataFrame(
        {
            "session_index": np.arange(sessions.user.size),
            "session_id": [f"{0x5A000000 + i:08X}" for i in range(sessions.user.size)],
            "framed_ip": v4,
            "delegated_prefix": v6,
        }
    )
    logins = users["login"].to_numpy()
    access = users["access"].to_numpy()
    return (
        records.join(session_table, on="session_index", how="left")
        .with_columns(
            pl.Series("user_name", logins[records["user_index"].to_numpy()]),
            pl.Series(
                "framed_protocol", ["PPP" if a == "pppoe" else None for a in access[records["user_index"].to_numpy()]]
            ),
            pl.lit(None, dtype=pl.String).alias("calling_station_id"),
            pl.lit("bras-1").alias("nas_identifier"),
            pl.lit("192.0.2.11").alias("nas_ip"),
        )
        .sort("event_ms")
    )


def mobile_accounting(
    rng: np.random.Generator,
    phones: pl.DataFrame,
    sessions: SessionsLike,
    hourly: dict[str, np.ndarray],
    t0: int,
    t1: int,
    interim_s: int,
) -> pl.DataFrame:
    """Accounting rows of a mobile gateway: one session per attach, Calling-Station-Id = phone."""
    records = _records(rng, sessions, hourly, t0, t1, interim_s * 1000)
    v4, _ = _address_text(sessions.addr_hi, sessions.addr_lo, sessions.prefix_len)
    session_table = pl.DataFrame(
        {
            "session_index": np.arange(sessions.user.size),
            "session_id": [f"{0x7C000000 + i:08X}" for i in range(sessions.user.size)],
            "framed_ip": v4,
        }
    )
    numbers = phones["phone"].to_numpy()
    return (
        records.join(session_table, on="session_index", how="left")
        .with_columns(
            pl.lit(None, dtype=pl.String).alias("delegated_prefix"),
            pl.lit("mvno.example.jp").alias("user_name"),
            pl.lit(None, dtype=pl.String).alias("framed_protocol"),
            pl.Series("calling_station_id", numbers[records["user_index"].to_numpy()]),
            pl.lit("pgw-1").alias("nas_identifier"),
            pl.lit("192.0.2.21").alias("nas_ip"),
        )
        .sort("event_ms")
    )
