"""Attribution + aggregation benchmark: this project's direct-index path vs DuckDB SQL vs polars join_asof.

    .venv/bin/python bench/bench_attribution.py --sizes 10000000 100000000 --workloads low high v6

For each size and workload it generates (once, into bench/data/attr-*) parquet flows in files of
at most 10 million rows, ordered by time, plus the week's sessions, then runs each method in its
own process over the files: flows -> user-day (in/out bytes) and port-hour tables. Prints
rows/s, peak RSS and a checksum of the user-day table that must agree between methods.

Workloads: `low` churn (about 3 sessions per IPv4 address per week), `high` churn (about 40),
`v6` (IPoE users on delegated /56 prefixes, 3 sessions per prefix per week).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.attribute import attribute_files, keeping_freed_memory  # noqa: E402
from flows.processes import thread_mapper  # noqa: E402
from transforms.addresses import V4_MAPPED, prefix_mask  # noqa: E402
from transforms.attribution import build_lookup, port_hour_volumes, user_day_volumes  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
WEEK_START = 1_717_340_400  # 2024-06-03 00:00 JST in epoch seconds
WEEK_S = 7 * 86_400
FILE_ROWS = 10_000_000
V6_BASE = 0x2400_4050_0000_0000


def _sessions(rng: np.random.Generator, keys: np.ndarray, per_week: int, users: int) -> pl.DataFrame:
    """Non-overlapping sessions per key over the week, each held by a random user (addresses are reused)."""
    n = keys.size
    cuts = np.sort(rng.integers(1, WEEK_S, size=(n, per_week - 1)), axis=1)
    starts = np.concatenate([np.zeros((n, 1), dtype=np.int64), cuts], axis=1)
    ends = np.concatenate([cuts - rng.integers(1, 60, size=cuts.shape), np.full((n, 1), WEEK_S)], axis=1)
    return pl.DataFrame(
        {
            "user_key": pl.Series(rng.integers(0, users, n * per_week)).cast(pl.String),
            "family": "v4",
            "key": np.repeat(keys, per_week).astype(np.uint64),
            "prefix_len": 32,
            "valid_from": pl.from_epoch(pl.Series(WEEK_START + starts.ravel()), time_unit="s").dt.replace_time_zone(
                "UTC"
            ),
            "valid_to": pl.from_epoch(
                pl.Series(WEEK_START + np.maximum(ends, starts + 1).ravel()), time_unit="s"
            ).dt.replace_time_zone("UTC"),
        }
    ).with_columns(service=pl.lit("broadband_pppoe"), customer_type=pl.lit("personal"))


def make_workload(size: int, workload: str) -> tuple[list[Path], Path]:
    folder = DATA / f"attr-{workload}-{size}"
    sessions_path = folder / "sessions.parquet"
    files = sorted(folder.glob("flows-*.parquet"))
    if sessions_path.exists() and len(files) == -(-size // FILE_ROWS):
        return files, sessions_path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    n_keys = max(1000, size // 2000)
    if workload == "v6":
        prefixes = V6_BASE + (rng.choice(1 << 24, n_keys, replace=False).astype(np.uint64) << np.uint64(8))
        sessions = _sessions(rng, prefixes, 3, n_keys).with_columns(
            family=pl.lit("v6"), prefix_len=pl.lit(56), service=pl.lit("broadband_ipoe")
        )
        keys = prefixes
    else:
        keys = (V4_MAPPED | (0xCB000000 + np.sort(rng.choice(1 << 22, n_keys, replace=False)))).astype(np.uint64)
        sessions = _sessions(rng, keys, 3 if workload == "low" else 40, n_keys)
    sessions.write_parquet(sessions_path)
    for index, start in enumerate(range(0, size, FILE_ROWS)):
        n = min(FILE_ROWS, size - start)
        t0 = WEEK_START + WEEK_S * start // size
        t1 = WEEK_START + WEEK_S * (start + n) // size
        ts = np.sort(rng.integers(t0 * 1000, t1 * 1000, n))
        user_side = keys[rng.integers(0, keys.size, n)]
        if workload == "v6":
            user_hi, user_lo = (
                user_side | rng.integers(0, 256, n).astype(np.uint64),
                rng.integers(1, 1 << 62, n).astype(np.uint64),
            )
            other_hi = np.uint64(0x2001_0DB8_0000_0000) + rng.integers(0, 1 << 20, n).astype(np.uint64)
            other_lo = rng.integers(1, 1 << 62, n).astype(np.uint64)
        else:
            user_hi, user_lo = np.zeros(n, dtype=np.uint64), user_side
            other_hi = np.zeros(n, dtype=np.uint64)
            other_lo = np.uint64(V4_MAPPED) | rng.integers(0x08000000, 0x0F000000, n).astype(np.uint64)
        upload = rng.random(n) < 0.3
        port = rng.choice(np.array([443, 80, 22, 8080, 4500, 31000]), n)
        pl.DataFrame(
            {
                "first_ts": pl.from_epoch(pl.Series(ts), time_unit="ms").dt.replace_time_zone("UTC"),
                "src_hi": np.where(upload, user_hi, other_hi),
                "src_lo": np.where(upload, user_lo, other_lo),
                "dst_hi": np.where(upload, other_hi, user_hi),
                "dst_lo": np.where(upload, other_lo, user_lo),
                "src_port": np.where(upload, rng.integers(1024, 65535, n), port).astype(np.uint16),
                "dst_port": np.where(upload, port, rng.integers(1024, 65535, n)).astype(np.uint16),
                "protocol": rng.choice(np.array([6, 17], dtype=np.uint8), n),
                "est_bytes": (rng.integers(40, 1500, n) * 1024).astype(np.uint64),
            }
        ).write_parquet(folder / f"flows-{index:05d}.parquet", row_group_size=1_000_000, compression="lz4")
    return sorted(folder.glob("flows-*.parquet")), sessions_path


def _port_hour(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(
        "protocol",
        pl.min_horizontal("src_port", "dst_port").alias("port"),
        pl.col("first_ts").dt.truncate("1h").alias("hour"),
    ).agg(pl.col("est_bytes").sum())


def run_direct_index(files: list[Path], sessions: Path) -> pl.DataFrame:
    """As the weekly flow does it (flows.attribute.attribute_files): row-group chunks on two threads."""
    with keeping_freed_memory(), thread_mapper(2) as mapper:
        lookup = build_lookup(
            pl.read_parquet(sessions), WEEK_START - 86_400, [WEEK_START + d * 86_400 for d in range(8)], mapper=mapper
        )
        totals = attribute_files(files, lookup)
    _ = port_hour_volumes(lookup, totals)
    volumes = user_day_volumes(lookup, totals).rename({"day_index": "day"})
    return volumes.join(lookup.users.with_columns(pl.col("user_index").cast(pl.UInt32)), on="user_index").select(
        "user_key", "day", "in_bytes", "out_bytes"
    )


def run_polars_asof(files: list[Path], sessions_path: Path) -> pl.DataFrame:
    sessions = pl.read_parquet(sessions_path)
    length = int(sessions["prefix_len"][0])
    mask = prefix_mask(min(length, 64)) if sessions["family"][0] == "v6" else (1 << 64) - 1
    table = sessions.select(pl.col("key").alias("k"), "valid_from", "valid_to", "user_key").sort("valid_from")
    days: list[pl.DataFrame] = []
    ports: list[pl.DataFrame] = []
    for path in files:
        flows = pl.read_parquet(path).sort("first_ts")
        for side, column in (("src", "in_bytes"), ("dst", "out_bytes")):
            key = pl.col(f"{side}_hi") & mask if sessions["family"][0] == "v6" else pl.col(f"{side}_lo")
            joined = (
                flows.select("first_ts", "est_bytes", key.alias("k"))
                .join_asof(
                    table,
                    left_on="first_ts",
                    right_on="valid_from",
                    by="k",
                    strategy="backward",
                    check_sortedness=False,
                )
                .filter(pl.col("user_key").is_not_null() & (pl.col("first_ts") < pl.col("valid_to")))
            )
            days.append(
                joined.group_by(
                    "user_key", ((pl.col("first_ts").dt.epoch("s") - WEEK_START) // 86_400).alias("day")
                ).agg(pl.col("est_bytes").sum().alias(column))
            )
        ports.append(_port_hour(flows))
    _ = pl.concat(ports).group_by("protocol", "port", "hour").agg(pl.col("est_bytes").sum())
    merged = (
        pl.concat(days, how="diagonal")
        .group_by("user_key", "day")
        .agg(pl.col("in_bytes").sum(), pl.col("out_bytes").sum())
    )
    return merged.with_columns(pl.col("in_bytes").fill_null(0), pl.col("out_bytes").fill_null(0))


DUCKDB_SQL = """
with sessions as (select * from read_parquet($sessions)),
flows as (select * from read_parquet($files)),
sides as (
    select first_ts, est_bytes, 'in' as direction,
           case when $v6 then src_hi & $mask else src_lo end as k from flows
    union all
    select first_ts, est_bytes, 'out', case when $v6 then dst_hi & $mask else dst_lo end from flows
),
attributed as (
    select s.user_key, (epoch_ms(f.first_ts) // 1000 - $week_start) // 86400 as day, f.direction, f.est_bytes
    from sides f join sessions s on f.k = s.key and f.first_ts >= s.valid_from and f.first_ts < s.valid_to
)
select user_key, day, sum(case when direction = 'in' then est_bytes else 0 end)::ubigint as in_bytes,
       sum(case when direction = 'out' then est_bytes else 0 end)::ubigint as out_bytes
from attributed group by all
"""
PORT_HOUR_SQL = """
select protocol, least(src_port, dst_port) as port, date_trunc('hour', first_ts) as hour, sum(est_bytes)
from read_parquet($files) group by all
"""


def run_duckdb(files: list[Path], sessions_path: Path) -> pl.DataFrame:
    import duckdb

    con = duckdb.connect()
    con.execute("set memory_limit = '8GB'")
    family = pl.read_parquet(sessions_path, n_rows=1)
    v6 = family["family"][0] == "v6"
    params = {
        "files": [str(f) for f in files],
        "sessions": str(sessions_path),
        "v6": v6,
        "mask": prefix_mask(56) if v6 else 0,
        "week_start": WEEK_START,
    }
    con.execute(PORT_HOUR_SQL, {"files": params["files"]}).fetchall()
    result = pl.from_arrow(con.sql(DUCKDB_SQL, params=params).to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return result


METHODS = {
    "direct index (this project)": run_direct_index,
    "polars join_asof": run_polars_asof,
    "duckdb range join": run_duckdb,
}


def checksum(table: pl.DataFrame) -> str:
    t = (
        table.filter((pl.col("in_bytes") > 0) | (pl.col("out_bytes") > 0))
        .select(
            pl.col("user_key").cast(pl.String),
            pl.col("day").cast(pl.Int64),
            pl.col("in_bytes").cast(pl.UInt64),
            pl.col("out_bytes").cast(pl.UInt64),
        )
        .sort("user_key", "day")
    )
    totals = f"in {int(t['in_bytes'].sum())}, out {int(t['out_bytes'].sum())}"
    return f"{t.height} user-days, {totals}, hash {t.hash_rows().sum() % 10**8}"


def _child(name: str, files: list[str], sessions: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    started = time.perf_counter()
    table = METHODS[name]([Path(f) for f in files], Path(sessions))
    seconds = time.perf_counter() - started
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, checksum(table)))


def measure(name: str, files: list[Path], sessions: Path, timeout: float) -> tuple[float, float, str] | None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, [str(f) for f in files], str(sessions), queue))
    proc.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                return queue.get(timeout=1)  # type: ignore[no-any-return]
            except Exception:
                if not proc.is_alive():
                    return None
        return None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--workloads", nargs="+", default=["low", "high", "v6"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the median is printed")
    args = parser.parse_args()
    print(
        f"{'size':>13} {'workload':8} {'method':26} {'seconds':>8} {'flows/s':>12} {'peak RSS MB':>11}  checksum",
        flush=True,
    )
    for size in args.sizes:
        for workload in args.workloads:
            files, sessions = make_workload(size, workload)
            for name in args.methods:
                runs = [measure(name, files, sessions, args.timeout) for _ in range(args.repeat)]
                measured = [r for r in runs if r is not None]
                if len(measured) < len(runs):
                    print(
                        f"{size:13,d} {workload:8} {name:26} {'failed or over ' + str(int(args.timeout)) + ' s':>33}",
                        flush=True,
                    )
                    continue
                # The median run (the machine is shared; of an even count, the slower middle one), the
                # largest peak, every run's checksum the same.
                seconds = sorted(m[0] for m in measured)[len(measured) // 2]
                peak = max(m[1] for m in measured)
                checks = {m[2] for m in measured}
                check = checks.pop() if len(checks) == 1 else f"RUNS DISAGREE: {sorted(checks)}"
                every = f"  (runs: {', '.join(f'{m[0]:.1f}' for m in measured)} s)" if len(measured) > 1 else ""
                figures = f"{seconds:8.2f} {size / seconds:12,.0f} {peak:11,.0f}"
                print(f"{size:13,d} {workload:8} {name:26} {figures}  {check}{every}", flush=True)


if __name__ == "__main__":
    main()
