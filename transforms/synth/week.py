"""A synthetic ISP week: subscribers, access sessions, per-user volumes, sampled flows, accounting.

Everything is drawn from one numpy Generator, so a seed gives the same week. Per-user average
daily volumes come from the fitted mixtures by stratification (each user the conditional mean of
one equal-probability stratum), so a few thousand users already reproduce the reference distribution.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from transforms.synth.calibration import Mixture
from transforms.synth.mixtures import MIXTURES
from transforms.synth.profiles import DAY_FACTOR, PACKET_SIZE, hourly_profile, port_mix

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
V4_MAPPED = 0xFFFF_0000_0000


@dataclass(frozen=True)
class ExporterSpec:
    """A flow exporter of the synthetic ISP: name, service it meters, 1-in-N rate, how it says so."""

    name: str
    service: str
    sampling_rate: int
    sampling_style: str
    domain_id: int


@dataclass(frozen=True)
class WeekSpec:
    """What to generate: week (a Monday), calibration year, population size, seed, time zone."""

    week: dt.date
    year: int
    broadband_users: int = 3000
    mobile_phones: int = 3000
    seed: int = 1
    timezone: str = "Asia/Tokyo"
    enterprise_share: float = 0.05
    exporters: tuple[ExporterSpec, ...] = (
        ExporterSpec("bb-tokyo-1", "broadband", 4096, "packet_space", 1),
        ExporterSpec("bb-osaka-1", "broadband", 2048, "interval", 2),
        ExporterSpec("mobile-gw-1", "mobile", 1024, "interval", 3),
    )
    broadband_interim_s: int = 12 * 3600
    mobile_interim_s: int = 6 * 3600

    @property
    def start_ms(self) -> int:
        start = dt.datetime.combine(self.week, dt.time(0), ZoneInfo(self.timezone))
        return int(start.timestamp() * 1000)


@dataclass
class SyntheticWeek:
    """The generated week: landing-zone content as frames, plus the ground truth."""

    spec: WeekSpec
    directory: pl.DataFrame
    flows: dict[str, pl.DataFrame]
    radius: dict[str, pl.DataFrame]
    truth_user_day: pl.DataFrame
    truth_port_bytes: pl.DataFrame
    truth_hourly: pl.DataFrame


def _mixture(service: str, year: int, direction: str) -> Mixture:
    key = (service, year, direction)
    if key not in MIXTURES:
        known = sorted({y for s, y, _ in MIXTURES if s == service})
        raise ValueError(f"no calibration for {service} {year}; known years {known[0]}-{known[-1]}")
    weights, means, sds = MIXTURES[key]
    return Mixture(weights, means, sds)


def draw_user_levels(
    rng: np.random.Generator, service: str, year: int, n: int, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """(in, out) average MB/day per user: stratum means of each marginal, paired by a Gaussian copula."""
    levels = {}
    for direction in ("in", "out"):
        levels[direction] = np.sort(_mixture(service, year, direction).stratum_means(n))
    latent_out = rng.standard_normal(n)
    latent_in = rho * latent_out + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    out = np.empty(n)
    inn = np.empty(n)
    out[np.argsort(latent_out)] = levels["out"]
    inn[np.argsort(latent_in)] = levels["in"]
    return inn, out


def _day_factors(rng: np.random.Generator, n: int, service: str, weekday_of_day: np.ndarray) -> np.ndarray:
    """(n, 7) multipliers with mean 1 per user: weekend effect and day-to-day noise."""
    weekday, weekend = DAY_FACTOR[service]
    base = np.where(weekday_of_day >= 5, weekend, weekday)[None, :]
    noise = rng.lognormal(0.0, 0.35, size=(n, 7))
    factors = base * noise
    return np.asarray(factors / factors.mean(axis=1, keepdims=True))


def _population(rng: np.random.Generator, spec: WeekSpec) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Directory rows, broadband users (subscription x access) and mobile phones."""
    # Broadband: 45% PPPoE only, 40% IPoE only, 15% both, so users > subscriptions.
    n_users_target = spec.broadband_users
    n_subs = int(round(n_users_target / 1.15 / (1 - spec.enterprise_share)))
    kind = rng.choice(3, size=n_subs, p=[0.45, 0.40, 0.15])
    enterprise = rng.random(n_subs) < spec.enterprise_share
    sub_ids = np.array([f"BB{7_000_000 + i:07d}" for i in range(n_subs)])
    logins = np.array([f"u{7_000_000 + i:07d}@bb.example.jp" for i in range(n_subs)])
    users = []
    for access, mask in (("pppoe", kind != 1), ("ipoe", kind != 0)):
        idx = np.flatnonzero(mask)
        users.append(
            pl.DataFrame(
                {
                    "subscription_id": sub_ids[idx],
                    "login": logins[idx],
                    "access": access,
                    "customer_type": np.where(enterprise[idx], "enterprise", "personal"),
                },
                # Typed: in a tiny week one access kind can have no subscription at all.
                schema=dict.fromkeys(("subscription_id", "login", "access", "customer_type"), pl.String),
            )
        )
    broadband = pl.concat(users).sort("subscription_id", "access")
    # Mobile: 80% of subscriptions hold one phone number, some two or three.
    phones_per_sub = rng.choice([1, 2, 3], size=spec.mobile_phones, p=[0.8, 0.15, 0.05])
    cum = np.cumsum(phones_per_sub)
    n_msubs = int(np.searchsorted(cum, spec.mobile_phones) + 1)
    phones_per_sub = phones_per_sub[:n_msubs]
    phones_per_sub[-1] -= int(cum[n_msubs - 1] - spec.mobile_phones)
    msub_ids = np.array([f"MB{8_000_000 + i:07d}" for i in range(n_msubs)])
    m_enterprise = rng.random(n_msubs) < spec.enterprise_share
    phone_numbers = rng.choice(np.arange(9_000_0000, 9_999_9999), size=spec.mobile_phones, replace=False)
    phone_text = np.array([f"8190{p:08d}" for p in phone_numbers])
    owner = np.repeat(np.arange(n_msubs), phones_per_sub)
    mobile = pl.DataFrame(
        {
            "subscription_id": msub_ids[owner],
            "phone": phone_text,
            "customer_type": np.where(m_enterprise[owner], "enterprise", "personal"),
        }
    )
    directory = pl.concat(
        [
            pl.DataFrame(
                {
                    "subscription_id": sub_ids,
                    "service": "broadband",
                    "customer_type": np.where(enterprise, "enterprise", "personal"),
                    "login": logins,
                    "phone_numbers": "",
                }
            ),
            mobile.group_by("subscription_id", maintain_order=True)
            .agg(
                pl.col("customer_type").first(),
                pl.col("phone").str.join(";").alias("phone_numbers"),
            )
            .select(
                "subscription_id",
                pl.lit("mobile").alias("service"),
                "customer_type",
                pl.lit("").alias("login"),
                "phone_numbers",
            ),
        ]
    )
    return directory, broadband, mobile


def _levels_for(
    rng: np.random.Generator, service: str, year: int, customer_type: np.ndarray, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    n = customer_type.size
    inn = np.empty(n)
    out = np.empty(n)
    personal = customer_type == "personal"
    for mask, scale in ((personal, 1.0), (~personal, 2.5)):
        idx = np.flatnonzero(mask)
        if idx.size:
            a, b = draw_user_levels(rng, service, year, idx.size, rho)
            inn[idx], out[idx] = a * scale, b * scale
    return inn, out


@dataclass
class _Sessions:
    user: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    addr_hi: np.ndarray
    addr_lo: np.ndarray
    prefix_len: np.ndarray


def _pppoe_sessions(rng: np.random.Generator, users: np.ndarray, t0: int, t1: int, pool: list[int]) -> _Sessions:
    """PPPoE sessions over [t0, t1): reconnects, addresses from a shared pool and reused by others."""
    events: list[tuple[int, int, int]] = []  # (start, end, user)
    for user in users:
        t = t0 - int(rng.exponential(2 * DAY_MS))
        while t < t1:
            length = int(rng.exponential(1.5 * DAY_MS)) + 600_000
            events.append((t, t + length, int(user)))
            t += length + int(rng.integers(2_000, 120_000))
    events.sort()
    free = list(pool)
    rng.shuffle(free)
    busy: list[tuple[int, int]] = []  # (end, address) heap
    import heapq

    address = np.empty(len(events), dtype=np.uint64)
    for i, (start, end, _user) in enumerate(events):
        while busy and busy[0][0] <= start:
            # A released address goes to the front: the next connecting user gets it.
            free.append(heapq.heappop(busy)[1])
        addr = free.pop()
        address[i] = addr
        heapq.heappush(busy, (end, addr))
    arr = np.array(events, dtype=np.int64).reshape(-1, 3)
    n = arr.shape[0]
    return _Sessions(
        arr[:, 2],
        arr[:, 0],
        arr[:, 1],
        np.zeros(n, dtype=np.uint64),
        address | np.uint64(V4_MAPPED),
        np.full(n, 128, dtype=np.int64),
    )


def _ipoe_sessions(rng: np.random.Generator, users: np.ndarray, t0: int, t1: int) -> _Sessions:
    """IPoE delegations: mostly all week; some users move to a new prefix, and their old one is reused."""
    base = int(ipaddress.IPv6Address("2400:4050::")) >> 64
    lengths = rng.choice([48, 56, 60, 64], size=users.size, p=[0.05, 0.8, 0.1, 0.05])
    step = {48: 1 << 16, 56: 1 << 8, 60: 1 << 4, 64: 1}
    prefixes = []
    next_block = 0
    for length in lengths:
        s = step[int(length)]
        next_block = (next_block + s - 1) // s * s
        prefixes.append(base + next_block)
        next_block += s
    movers = rng.random(users.size) < 0.15
    starts = t0 - rng.integers(DAY_MS, 30 * DAY_MS, size=users.size)
    switch = t0 + rng.integers(DAY_MS // 2, 6 * DAY_MS, size=users.size)
    rows_user, rows_start, rows_end, rows_hi, rows_len = [], [], [], [], []
    mover_idx = np.flatnonzero(movers)
    for i, user in enumerate(users):
        if movers[i]:
            rows_user += [user, user]
            rows_start += [starts[i], switch[i] + 30_000]
            rows_end += [switch[i], t1 + 30 * DAY_MS]
            rows_len += [lengths[i], lengths[i]]
            rows_hi += [prefixes[i], None]
        else:
            rows_user.append(user)
            rows_start.append(starts[i])
            rows_end.append(t1 + 30 * DAY_MS)
            rows_len.append(lengths[i])
            rows_hi.append(prefixes[i])
    # Movers take the prefix another mover released earlier in the week (same length), or a new one.
    released = sorted(((int(switch[i]), int(lengths[i]), prefixes[i]) for i in mover_idx), key=lambda r: r[0])
    new_block = next_block
    j = 0
    for k, hi in enumerate(rows_hi):
        if hi is None:
            want_len, when = rows_len[k], rows_start[k]
            taken = None
            for r_idx, (rel_time, rel_len, rel_prefix) in enumerate(released[j:], start=j):
                if rel_len == want_len and rel_time + 60_000 < when and rel_prefix != rows_hi[k - 1]:
                    taken = released.pop(r_idx)[2]
                    break
            if taken is None:
                s = step[int(want_len)]
                new_block = (new_block + s - 1) // s * s
                taken = base + new_block
                new_block += s
            rows_hi[k] = taken
    n = len(rows_user)
    return _Sessions(
        np.array(rows_user, dtype=np.int64),
        np.array(rows_start, dtype=np.int64),
        np.array(rows_end, dtype=np.int64),
        np.array(rows_hi, dtype=np.uint64),
        np.zeros(n, dtype=np.uint64),
        np.array(rows_len, dtype=np.int64),
    )


def _mobile_sessions(rng: np.random.Generator, n: int, t0: int, t1: int) -> _Sessions:
    """Mobile data sessions of a few hours to two days, CGN-side addresses from 100.64.0.0/10."""
    events: list[tuple[int, int, int]] = []
    for phone in range(n):
        t = t0 - int(rng.exponential(DAY_MS))
        while t < t1:
            length = int(rng.exponential(0.8 * DAY_MS)) + 300_000
            events.append((t, t + length, phone))
            t += length + int(rng.integers(1_000, 600_000))
    arr = np.array(events, dtype=np.int64).reshape(-1, 3)
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    # Each phone keeps one address per session; pool sized so addresses are reused in the week.
    addresses = base + rng.integers(0, max(2 * n, 1024), size=arr.shape[0])
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    m = arr.shape[0]
    return _Sessions(
        arr[:, 2],
        arr[:, 0],
        arr[:, 1],
        np.zeros(m, dtype=np.uint64),
        addresses.astype(np.uint64) | np.uint64(V4_MAPPED),
        np.full(m, 128, dtype=np.int64),
    )


def _dedupe_mobile_addresses(sessions: _Sessions) -> _Sessions:
    """Moves any session whose address is still held by another one to a free address."""
    order = np.argsort(sessions.start_ms, kind="stable")
    held: dict[int, int] = {}
    lo = sessions.addr_lo.copy()
    next_free = int(lo.max()) + 1
    for i in order:
        a = int(lo[i])
        if held.get(a, -1) > sessions.start_ms[i]:
            a = next_free
            next_free += 1
            lo[i] = a
        held[a] = int(sessions.end_ms[i])
    return _Sessions(sessions.user, sessions.start_ms, sessions.end_ms, sessions.addr_hi, lo, sessions.prefix_len)


def _hourly_bytes(
    levels_mb: np.ndarray, factors: np.ndarray, service: str, direction: str, weekend: np.ndarray
) -> np.ndarray:
    """(n, 7, 24) true bytes per user, day and local hour."""
    profiles = np.stack([hourly_profile(service, direction, bool(w)) for w in weekend])  # (7, 24)
    daily = levels_mb[:, None] * 1e6 * factors  # (n, 7)
    return np.asarray(daily[:, :, None] * profiles[None, :, :])


def _flows_for(
    rng: np.random.Generator,
    hourly: dict[str, np.ndarray],
    user_rate: np.ndarray,
    user_exporter: np.ndarray,
    sessions: _Sessions,
    mix: list[tuple[int, tuple[int, ...], float]],
    t0: int,
    remote_v6: bool,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Sampled flow records for every user, hour and traffic class; and true bytes per class."""
    shares = np.array([s for *_, s in mix])
    frames = []
    true_class_bytes = np.zeros(len(mix))
    order = np.lexsort((sessions.start_ms, sessions.user))
    s_user, s_start, s_end = sessions.user[order], sessions.start_ms[order], sessions.end_ms[order]
    s_hi, s_lo, s_len = sessions.addr_hi[order], sessions.addr_lo[order], sessions.prefix_len[order]
    key = s_user.astype(np.int64) * (1 << 44) + (s_start - (t0 - 60 * DAY_MS))
    for direction in ("in", "out"):
        size = PACKET_SIZE[direction]
        true_bytes = hourly[direction][:, :, :, None] * shares[None, None, None, :]  # (n,7,24,c)
        true_class_bytes += true_bytes.sum(axis=(0, 1, 2))
        expected = true_bytes / size / user_rate[:, None, None, None]
        sampled = rng.poisson(expected)
        u, d, h, c = np.nonzero(sampled)
        packets = sampled[u, d, h, c].astype(np.int64)
        # Long cells become several flow records of at most 64 sampled packets.
        pieces = (packets + 63) // 64
        rep = np.repeat(np.arange(u.size), pieces)
        first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
        piece_no = np.arange(rep.size) - first_piece
        base, extra = packets // pieces, packets % pieces
        pkt = base[rep] + (piece_no < extra[rep])
        u, d, h, c = u[rep], d[rep], h[rep], c[rep]
        ts = t0 + d * DAY_MS + h * HOUR_MS + rng.integers(0, HOUR_MS - 120_000, size=u.size)
        # The session the user held at that moment decides the address.
        pos = np.searchsorted(key, u.astype(np.int64) * (1 << 44) + (ts - (t0 - 60 * DAY_MS)), side="right") - 1
        valid = (pos >= 0) & (s_user[np.clip(pos, 0, None)] == u)
        pos = np.clip(pos, 0, None)
        in_gap = ts >= s_end[pos]
        nxt = np.clip(pos + 1, 0, s_user.size - 1)
        moved = in_gap & (s_user[nxt] == u)
        ts = np.where(moved, s_start[nxt] + 1_000, ts)
        pos = np.where(moved, nxt, pos)
        keep = valid & ~(in_gap & ~moved)
        u, d, h, c, ts, pkt, pos = u[keep], d[keep], h[keep], c[keep], ts[keep], pkt[keep], pos[keep]
        host_bits = rng.integers(0, 1 << 62, size=u.size, dtype=np.uint64)
        plen = s_len[pos]
        low_mask = np.where(
            plen >= 64, np.uint64(0), (np.uint64(1) << (64 - np.minimum(plen, 63)).astype(np.uint64)) - np.uint64(1)
        )
        user_hi = np.where(plen <= 64, s_hi[pos] | (host_bits & low_mask), s_hi[pos])
        user_lo = np.where(plen <= 64, host_bits, s_lo[pos])
        protocols = np.array([p for p, _, _ in mix], dtype=np.uint8)[c]
        port_choice = (
            np.array(
                [
                    ports[int(i)]
                    for ports, i in zip(
                        [mix[k][1] for k in c],
                        rng.integers(0, 1 << 30, size=c.size) % np.array([len(mix[k][1]) for k in range(len(mix))])[c],
                    )
                ],
                dtype=np.int64,
            )
            if c.size
            else np.zeros(0, dtype=np.int64)
        )
        client_port = rng.integers(1024, 65535, size=u.size)
        # Both ports are dynamic for the >=1024 classes: keep the class port the lower one.
        client_port = np.where(port_choice >= 1024, np.maximum(client_port, port_choice + 1), client_port)
        no_ports = ~np.isin(protocols, [6, 17])
        server_port = np.where(no_ports, 0, port_choice)
        client_port = np.where(no_ports, 0, client_port)
        if remote_v6:
            r_hi = np.where(
                plen <= 64,
                np.uint64(0x2001_0DB8_0000_0000) + rng.integers(0, 4096, size=u.size).astype(np.uint64),
                np.uint64(0),
            )
            r_lo = np.where(
                plen <= 64,
                rng.integers(1, 1 << 32, size=u.size).astype(np.uint64),
                np.uint64(V4_MAPPED)
                | (np.uint64(0xC6120000) + rng.integers(0, 1 << 16, size=u.size).astype(np.uint64)),
            )
        else:
            r_hi = np.zeros(u.size, dtype=np.uint64)
            r_lo = np.uint64(V4_MAPPED) | (
                np.uint64(0xC6120000) + rng.integers(0, 1 << 16, size=u.size).astype(np.uint64)
            )
        user_side_src = direction == "in"
        duration = rng.integers(1_000, 110_000, size=u.size)
        frames.append(
            pl.DataFrame(
                {
                    "exporter_index": user_exporter[u].astype(np.int32),
                    "first_ts": ts,
                    "last_ts": ts + duration,
                    "src_hi": user_hi if user_side_src else r_hi,
                    "src_lo": user_lo if user_side_src else r_lo,
                    "dst_hi": r_hi if user_side_src else user_hi,
                    "dst_lo": r_lo if user_side_src else user_lo,
                    "src_port": (client_port if user_side_src else server_port).astype(np.uint16),
                    "dst_port": (server_port if user_side_src else client_port).astype(np.uint16),
                    "protocol": protocols,
                    "packets": pkt.astype(np.uint64),
                    "bytes": (pkt * size).astype(np.uint64),
                    "is_v6": plen <= 64,
                }
            )
        )
    return pl.concat(frames).sort("first_ts"), true_class_bytes


def generate_week(spec: WeekSpec) -> SyntheticWeek:
    """The whole synthetic week for `spec`: directory, flows per exporter, RADIUS records, truth."""
    rng = np.random.default_rng(spec.seed)
    t0 = spec.start_ms
    t1 = t0 + 7 * DAY_MS
    days = [spec.week + dt.timedelta(days=i) for i in range(7)]
    weekday = np.array([d.weekday() for d in days])
    weekend = weekday >= 5
    directory, broadband, mobile = _population(rng, spec)

    bb_in, bb_out = _levels_for(rng, "broadband", spec.year, broadband["customer_type"].to_numpy(), rho=0.72)
    mb_in, mb_out = _levels_for(rng, "mobile", spec.year, mobile["customer_type"].to_numpy(), rho=0.8)
    n_bb, n_mb = broadband.height, mobile.height
    bb_hourly = {
        "in": _hourly_bytes(bb_in, _day_factors(rng, n_bb, "broadband", weekday), "broadband", "in", weekend),
        "out": _hourly_bytes(bb_out, _day_factors(rng, n_bb, "broadband", weekday), "broadband", "out", weekend),
    }
    mb_hourly = {
        "in": _hourly_bytes(mb_in, _day_factors(rng, n_mb, "mobile", weekday), "mobile", "in", weekend),
        "out": _hourly_bytes(mb_out, _day_factors(rng, n_mb, "mobile", weekday), "mobile", "out", weekend),
    }

    access = broadband["access"].to_numpy()
    pppoe_users = np.flatnonzero(access == "pppoe")
    ipoe_users = np.flatnonzero(access == "ipoe")
    v4_base = int(ipaddress.IPv4Address("203.0.113.0")) & ~0xFFFF
    pool_size = int(pppoe_users.size * 1.25) + 16
    pool = [v4_base + 0x0100 + i for i in range(pool_size)]
    pppoe = _pppoe_sessions(rng, pppoe_users, t0 - DAY_MS, t1 + DAY_MS, pool)
    ipoe = _ipoe_sessions(rng, ipoe_users, t0, t1)
    bb_sessions = _Sessions(
        *(
            np.concatenate([getattr(pppoe, f), getattr(ipoe, f)])
            for f in ("user", "start_ms", "end_ms", "addr_hi", "addr_lo", "prefix_len")
        )
    )
    mb_sessions = _dedupe_mobile_addresses(_mobile_sessions(rng, n_mb, t0 - DAY_MS, t1 + DAY_MS))

    bb_exporters = [e for e in spec.exporters if e.service == "broadband"]
    mb_exporters = [e for e in spec.exporters if e.service == "mobile"]
    bb_home = rng.integers(0, len(bb_exporters), size=n_bb)
    mb_home = rng.integers(0, len(mb_exporters), size=n_mb)
    bb_rate = np.array([bb_exporters[i].sampling_rate for i in bb_home], dtype=np.float64)
    mb_rate = np.array([mb_exporters[i].sampling_rate for i in mb_home], dtype=np.float64)
    bb_mix = port_mix("broadband", spec.year)
    mb_mix = port_mix("mobile", spec.year)
    bb_flows, bb_class = _flows_for(rng, bb_hourly, bb_rate, bb_home, bb_sessions, bb_mix, t0, remote_v6=True)
    mb_flows, mb_class = _flows_for(rng, mb_hourly, mb_rate, mb_home, mb_sessions, mb_mix, t0, remote_v6=False)
    flows = {}
    for i, e in enumerate(bb_exporters):
        flows[e.name] = bb_flows.filter(pl.col("exporter_index") == i).drop("exporter_index")
    for i, e in enumerate(mb_exporters):
        flows[e.name] = mb_flows.filter(pl.col("exporter_index") == i).drop("exporter_index")

    from transforms.synth.accounting import broadband_accounting, mobile_accounting

    radius = {
        "bras-1": broadband_accounting(rng, broadband, bb_sessions, bb_hourly, t0, t1, spec.broadband_interim_s * 1000),
        "pgw-1": mobile_accounting(rng, mobile, mb_sessions, mb_hourly, t0, t1, spec.mobile_interim_s),
    }

    truth_frames = []
    for service, table, hourly, ident in (
        ("broadband", broadband, bb_hourly, "subscription_id"),
        ("mobile", mobile, mb_hourly, "phone"),
    ):
        n = table.height
        truth_frames.append(
            pl.DataFrame(
                {
                    "service": np.repeat(
                        np.where(table["access"].to_numpy() == "pppoe", "broadband_pppoe", "broadband_ipoe")
                        if service == "broadband"
                        else np.full(n, "mobile"),
                        7,
                    ),
                    "user_id": np.repeat(table[ident].to_numpy(), 7),
                    "customer_type": np.repeat(table["customer_type"].to_numpy(), 7),
                    "day": np.tile(np.array(days, dtype="datetime64[D]"), n),
                    "in_bytes": hourly["in"].sum(axis=2).reshape(-1),
                    "out_bytes": hourly["out"].sum(axis=2).reshape(-1),
                }
            )
        )
    truth_user_day = pl.concat(truth_frames).with_columns(pl.col("day").cast(pl.Date))
    truth_port = pl.concat(
        [
            pl.DataFrame(
                {
                    "service": service,
                    "protocol": [p for p, _, _ in mix],
                    "ports": [list(ports) for _, ports, _ in mix],
                    "true_bytes": cls,
                }
            )
            for service, mix, cls in (("broadband", bb_mix, bb_class), ("mobile", mb_mix, mb_class))
        ]
    )
    truth_hourly = pl.concat(
        [
            pl.DataFrame(
                {
                    "service": service,
                    "day": np.repeat(np.array(days, dtype="datetime64[D]"), 24),
                    "hour": np.tile(np.arange(24), 7),
                    "in_bytes": hourly["in"].sum(axis=0).reshape(-1),
                    "out_bytes": hourly["out"].sum(axis=0).reshape(-1),
                }
            )
            for service, hourly in (("broadband", bb_hourly), ("mobile", mb_hourly))
        ]
    ).with_columns(pl.col("day").cast(pl.Date))
    return SyntheticWeek(spec, directory, flows, radius, truth_user_day, truth_port, truth_hourly)
