"""Shapes the generator draws from: hourly profiles and the port/protocol mix of a year."""

from __future__ import annotations

import numpy as np

from transforms.synth.reference import port_share_targets

# Relative traffic per local hour 0..23, shaped like the report's Figures 2, 9 and 10.
_BROADBAND_OUT = [
    5.5,
    4.0,
    2.8,
    2.0,
    1.6,
    1.5,
    1.8,
    2.4,
    2.9,
    3.2,
    3.5,
    3.8,
    4.1,
    4.1,
    4.2,
    4.4,
    4.7,
    5.1,
    5.8,
    6.7,
    7.4,
    7.8,
    7.6,
    6.8,
]
_BROADBAND_IN_WEEKDAY = [
    2.6,
    2.0,
    1.5,
    1.2,
    1.1,
    1.1,
    1.4,
    2.0,
    2.9,
    3.9,
    4.6,
    4.9,
    4.2,
    5.2,
    5.4,
    5.3,
    5.1,
    4.8,
    4.4,
    4.5,
    4.6,
    4.5,
    4.0,
    3.3,
]
_BROADBAND_IN_WEEKEND = [
    3.2,
    2.5,
    1.8,
    1.4,
    1.2,
    1.1,
    1.2,
    1.6,
    2.3,
    3.1,
    3.8,
    4.3,
    4.5,
    4.7,
    4.8,
    4.8,
    4.7,
    4.6,
    4.6,
    4.8,
    4.9,
    4.8,
    4.4,
    3.8,
]
_MOBILE_WEEKDAY = [
    1.6,
    0.9,
    0.5,
    0.35,
    0.35,
    0.6,
    1.8,
    4.2,
    5.6,
    3.6,
    3.4,
    3.9,
    6.4,
    4.6,
    3.7,
    3.7,
    4.0,
    5.0,
    5.6,
    5.5,
    5.6,
    5.8,
    5.3,
    3.4,
]
_MOBILE_WEEKEND = [
    2.3,
    1.5,
    0.9,
    0.6,
    0.45,
    0.5,
    0.9,
    1.7,
    2.9,
    3.9,
    4.6,
    5.0,
    5.4,
    5.2,
    5.0,
    4.9,
    4.9,
    5.0,
    5.2,
    5.4,
    5.5,
    5.5,
    5.0,
    3.7,
]


def hourly_profile(service: str, direction: str, weekend: bool) -> np.ndarray:
    """24 weights summing to 1: the share of a day's volume in each local hour."""
    if service == "mobile":
        shape = _MOBILE_WEEKEND if weekend else _MOBILE_WEEKDAY
    elif direction == "in":
        shape = _BROADBAND_IN_WEEKEND if weekend else _BROADBAND_IN_WEEKDAY
    else:
        shape = (
            _BROADBAND_OUT if not weekend else [v * (1.0 + 0.25 * (8 <= h <= 18)) for h, v in enumerate(_BROADBAND_OUT)]
        )
    values = np.asarray(shape, dtype=np.float64)
    return values / values.sum()


# Weekend days carry a little more broadband and a little less mobile traffic per user.
DAY_FACTOR = {"broadband": (1.0, 1.12), "mobile": (1.0, 0.92)}

# Leaf traffic classes: (protocol, lower port or None for "any other", port range).
# Each report row is a sum of leaves; "other" leaves take ports not listed in the table.
_OTHER_TCP_LOW = (21, 25, 110, 143, 465, 587, 853, 995)
_OTHER_TCP_HIGH = (1194, 3389, 5222, 6881, 8000, 8443, 9000, 50000)
_OTHER_UDP = (123, 1194, 3478, 5004, 19302, 27015, 50000, 60000)


def port_mix(service: str, year: int) -> list[tuple[int, tuple[int, ...], float]]:
    """Leaf classes (protocol, candidate lower ports, share of bytes) summing to 1 for a year."""
    share = port_share_targets(service, year)
    leaves: list[tuple[int, tuple[int, ...], float]] = []
    named_tcp = 0.0
    named_udp = 0.0
    for category, value in share.items():
        parts = category.split(" ")
        if len(parts) >= 2 and parts[1].isdigit():
            proto = 6 if parts[0] == "TCP" else 17
            leaves.append((proto, (int(parts[1]),), value))
            if proto == 6:
                named_tcp += value
            else:
                named_udp += value
    for name, proto in (("ESP", 50), ("GRE", 47), ("IP-ENCAP", 4), ("ICMP", 1)):
        if share.get(name, 0.0) > 0:
            leaves.append((proto, (0,), share[name]))
    if "TCP <1024" in share:
        named_low = sum(v for p, ports, v in leaves if p == 6 and ports[0] < 1024)
        named_high = named_tcp - named_low
        leaves.append((6, _OTHER_TCP_LOW, max(share["TCP <1024"] - named_low, 0.0)))
        leaves.append((6, _OTHER_TCP_HIGH, max(share["TCP >=1024"] - named_high, 0.0)))
    else:
        rest = max(share["TCP"] - named_tcp, 0.0)
        leaves.append((6, _OTHER_TCP_LOW, rest * 0.6))
        leaves.append((6, _OTHER_TCP_HIGH, rest * 0.4))
    leaves.append((17, _OTHER_UDP, max(share["UDP"] - named_udp, 0.0)))
    total = sum(v for *_, v in leaves)
    return [(p, ports, v / total) for p, ports, v in leaves if v > 0]


# Typical packet sizes (bytes) of downloads and uploads; uploads mix data and acknowledgements.
PACKET_SIZE = {"out": 1320, "in": 760}
