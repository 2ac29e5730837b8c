"""Attribution of flows to the user that held the source or destination address at that moment."""

from __future__ import annotations

import polars as pl

from transforms.addresses import V4_MAPPED, prefix_mask

USER_COLUMNS = ("user_key", "service", "customer_type")


def _side_key(side: str, family: str, length: int) -> pl.Expr:
    hi, lo = pl.col(f"{side}_hi"), pl.col(f"{side}_lo")
    is_v4 = (hi == 0) & ((lo & 0xFFFF_FFFF_0000_0000) == V4_MAPPED)
    if family == "v4":
        return pl.when(is_v4).then(lo)
    return pl.when(~is_v4).then(hi & pl.lit(prefix_mask(length), dtype=pl.UInt64))


def attribute_flows_to_users(flows: pl.LazyFrame, assignments: pl.DataFrame) -> pl.LazyFrame:
    """Flows plus src_/dst_ user_key, service, customer_type of the address holder at first_ts.

    IPv4 addresses match exactly; IPv6 addresses match delegated prefixes, longest first. A
    match needs valid_from <= first_ts < valid_to of the assignment.
    """
    v6_lengths = sorted(assignments.filter(pl.col("family") == "v6")["prefix_len"].unique().to_list(), reverse=True)
    candidates = [("v4", 32)] + [("v6", int(length)) for length in v6_lengths]
    out = flows.sort("first_ts")
    for side in ("src", "dst"):
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias(f"{side}_{c}") for c in USER_COLUMNS)
        for family, length in candidates:
            table = (
                assignments.lazy()
                .filter((pl.col("family") == family) & (pl.col("prefix_len") == length))
                .select(
                    pl.col("key").alias("_key"),
                    pl.col("valid_from").alias("_from"),
                    pl.col("valid_to").alias("_to"),
                    *[pl.col(c).alias(f"_{c}") for c in USER_COLUMNS],
                )
                .sort("_from")
            )
            hit = (
                pl.col(f"{side}_user_key").is_null()
                & pl.col("_user_key").is_not_null()
                & (pl.col("first_ts") < pl.col("_to"))
            )
            out = (
                out.with_columns(_key=_side_key(side, family, length))
                .join_asof(
                    table, left_on="first_ts", right_on="_from", by="_key", strategy="backward", check_sortedness=False
                )
                .with_columns(
                    pl.when(hit).then(pl.col(f"_{c}")).otherwise(pl.col(f"{side}_{c}")).alias(f"{side}_{c}")
                    for c in USER_COLUMNS
                )
                .drop("_key", "_from", "_to", *[f"_{c}" for c in USER_COLUMNS])
            )
    return out
