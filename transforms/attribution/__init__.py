"""Attribution at scale: flows x address assignments by direct indexing, with no sort and no join.

Sessions are cut at local midnights into pieces, one per (session, day), ordered by (day, rank,
start) and packed into one 64-bit key each. The rank is the dense index of the session's IPv4
address or, for IPv6, of the elementary range of delegated prefixes that holds the address's upper
64 bits. A flow side finds its user-day by array lookups, one vectorised pass each over the chunk:
its address's rank (three small tables for IPv4; for IPv6 a bucket table over the prefixes' span),
its time's bucket (an hour or a few, from a quarter-hour table), then one int32 cell per (bucket,
rank) that names the user-day of the one piece holding the whole bucket, or the first of the pieces
to step through when an address changed hands within it. Volumes are summed per user-day (one
number per user and local day, shared by IPv4 and IPv6) by one bincount over the user-days the
chunk touched. A chunk costs O(chunk) whatever the week's sessions, and chunks are independent
(sums add up), which bounds memory.

Sessions on one address never overlap (the assignment step resolves conflicts); among nested
IPv6 prefixes the longest prefix with a session at that moment wins, resolved once per range.
"""

from __future__ import annotations

from transforms.attribution._lookup import AssignmentLookup, build_lookup
from transforms.attribution._totals import (
    ChunkTotals,
    Totals,
    accumulate,
    add_chunk,
    attribute_chunk,
    hourly_volumes,
    port_hour_volumes,
    user_day_volumes,
)

__all__ = [
    "AssignmentLookup",
    "ChunkTotals",
    "Totals",
    "accumulate",
    "add_chunk",
    "attribute_chunk",
    "build_lookup",
    "hourly_volumes",
    "port_hour_volumes",
    "user_day_volumes",
]
