"""Who is who: RADIUS identities matched to the directory, turned into pseudonymous users."""

from __future__ import annotations

import polars as pl

from transforms.accounting.privacy import pseudonymize


def phone_directory(directory: pl.DataFrame) -> pl.DataFrame:
    """Rows (phone, subscription_id, customer_type) of mobile subscriptions, one per number."""
    return (
        directory.filter(pl.col("service") == "mobile")
        .with_columns(pl.col("phone_numbers").fill_null("").str.split(";").alias("phone"))
        .explode("phone")
        .with_columns(pl.col("phone").str.strip_chars())
        .filter(pl.col("phone").str.len_chars() > 0)
        .select("phone", "subscription_id", "customer_type")
    )


def identify_assignments(assignments: pl.DataFrame, directory: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """Assignments plus user_key, service, customer_type; `known` is false where the directory has no match.

    Mobile sessions are matched by Calling-Station-Id (phone number), broadband sessions by
    User-Name (login or subscription id). Broadband users are (subscription, access): PPPoE
    (Framed-Protocol = PPP) and IPoE of one subscription count as two users, as the report does.
    """
    phones = phone_directory(directory)
    logins = (
        pl.concat(
            [
                directory.filter(pl.col("service") == "broadband").select(
                    pl.col("login").alias("name"), "subscription_id", "customer_type"
                ),
                directory.filter(pl.col("service") == "broadband").select(
                    pl.col("subscription_id").alias("name"), "subscription_id", "customer_type"
                ),
            ]
        )
        .filter(pl.col("name").is_not_null())
        .unique(subset="name", keep="first")
    )
    with_phone = assignments.join(
        phones.rename({"subscription_id": "_m_sub", "customer_type": "_m_type"}),
        left_on="calling_station_id",
        right_on="phone",
        how="left",
    )
    with_login = with_phone.join(
        logins.rename({"subscription_id": "_b_sub", "customer_type": "_b_type"}),
        left_on="user_name",
        right_on="name",
        how="left",
    )
    access = pl.when(pl.col("framed_protocol") == "PPP").then(pl.lit("pppoe")).otherwise(pl.lit("ipoe"))
    identified = with_login.with_columns(
        service=pl.when(pl.col("_m_sub").is_not_null())
        .then(pl.lit("mobile"))
        .when(pl.col("_b_sub").is_not_null())
        .then(pl.concat_str([pl.lit("broadband_"), access]))
        .otherwise(pl.lit("unknown")),
        customer_type=pl.coalesce("_m_type", "_b_type", pl.lit("unknown")),
        identity=pl.when(pl.col("_m_sub").is_not_null())
        .then(pl.concat_str([pl.lit("mobile|"), pl.col("calling_station_id")]))
        .when(pl.col("_b_sub").is_not_null())
        .then(pl.concat_str([pl.lit("broadband|"), pl.col("_b_sub"), pl.lit("|"), access]))
        .otherwise(pl.concat_str([pl.lit("unknown|"), pl.coalesce("user_name", "calling_station_id", pl.lit("?"))])),
    )
    return identified.with_columns(
        user_key=pseudonymize(identified["identity"], key),
        known=pl.col("service") != "unknown",
    ).drop("_m_sub", "_m_type", "_b_sub", "_b_type", "identity", "user_name", "calling_station_id")


def identify_phones(billing: pl.DataFrame, directory: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """Billing rows plus user_key, service 'mobile', customer_type, and `known` (false: number not in the directory)."""
    phones = phone_directory(directory)
    joined = billing.join(phones, left_on="calling_station_id", right_on="phone", how="left")
    identities = joined.select(pl.concat_str([pl.lit("mobile|"), pl.col("calling_station_id")])).to_series()
    return joined.with_columns(
        user_key=pseudonymize(identities, key),
        service=pl.lit("mobile"),
        customer_type=pl.col("customer_type").fill_null("unknown"),
        known=pl.col("subscription_id").is_not_null(),
    ).drop("subscription_id", "calling_station_id")


DIRECTORY_COLUMNS = ("subscription_id", "service", "customer_type", "login", "phone_numbers")
SERVICES = ("broadband", "mobile")
CUSTOMER_TYPES = ("personal", "enterprise")


def check_directory(directory: pl.DataFrame) -> pl.DataFrame:
    """Rows (line, reason) of directory rows that cannot be used as they are: empty or repeated
    subscription ids, unknown service or customer type, a login or phone number held by two
    subscriptions. `line` is the row's line in the file (header = line 1, one line per row).
    Reasons never quote a cell: cells hold identities. A `line` column, when given, numbers the rows."""
    rows = directory if "line" in directory.columns else directory.with_row_index("line", offset=2)
    rows = rows.with_columns(pl.col("line").cast(pl.Int64))
    sid = pl.col("subscription_id").str.strip_chars()
    rows = rows.with_columns(_first=pl.col("line").min().over("subscription_id"))
    first_line = pl.col("_first")
    problems = [
        rows.filter(sid.is_null() | (sid == "")).select("line", reason=pl.lit("empty subscription_id")),
        rows.filter(sid.is_not_null() & (sid != "") & (pl.col("line") != first_line)).select(
            "line", reason=pl.format("subscription_id repeats the one on line {}", first_line)
        ),
        rows.filter(~pl.col("service").is_in(SERVICES) | pl.col("service").is_null()).select(
            "line", reason=pl.lit(f"service is not one of {', '.join(SERVICES)}")
        ),
        rows.filter(~pl.col("customer_type").is_in(CUSTOMER_TYPES) | pl.col("customer_type").is_null()).select(
            "line", reason=pl.lit(f"customer_type is not one of {', '.join(CUSTOMER_TYPES)}")
        ),
    ]
    logins = rows.filter(pl.col("login").is_not_null() & (pl.col("login").str.strip_chars() != ""))
    logins = logins.with_columns(_first=pl.col("line").min().over("login"))
    problems.append(
        logins.filter(pl.col("line") != pl.col("_first")).select(
            "line", reason=pl.format("login is also the login on line {}", "_first")
        )
        if logins.height
        else pl.DataFrame(schema={"line": pl.UInt32, "reason": pl.String})
    )
    phones = (
        rows.filter(pl.col("service") == "mobile")
        .with_columns(phone=pl.col("phone_numbers").fill_null("").str.split(";"))
        .explode("phone")
        .with_columns(pl.col("phone").str.strip_chars())
        .filter(pl.col("phone").str.len_chars() > 0)
        .with_columns(_first=pl.col("line").min().over("phone"))
    )
    problems.append(
        phones.filter(pl.col("line") != pl.col("_first")).select(
            "line", reason=pl.format("a phone number is also listed on line {}", "_first")
        )
    )
    return (
        pl.concat([p.with_columns(pl.col("line").cast(pl.Int64)) for p in problems])
        .unique(maintain_order=True)
        .sort("line", maintain_order=True)
    )
