"""`trafficreport` command line: weekly, monthly, backfill, serve, status, report, demos, queries."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from flows.publish import Manifest

DEMO_WEEK = dt.date(2024, 6, 3)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


# The smallest demo week, the one tests/flows/test_terminal_display.py runs end to end. Much smaller
# weeks break: 2 users leave exporters' days empty (the feed check fails), 1 fails the generator.
DEMO_MIN_SIZE = 20


def _whole_number(text: str, minimum: int, why: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value}: at least {minimum}{why}")
    return value


def _demo_size(text: str) -> int:
    return _whole_number(text, DEMO_MIN_SIZE, " (the smallest demo week tested end to end)")


def _count(text: str) -> int:
    return _whole_number(text, 1)


class _Parser(argparse.ArgumentParser):
    """Arguments given wrongly end like every other mistake: one line on stderr, exit 2 (`--help`
    shows the usage)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        self.exit(2, f"trafficreport: {where}{message} (`{self.prog} --help` shows the usage)\n")


def _open_catalog(warehouse: Any) -> Any:
    """The warehouse's catalog.duckdb opened for analysts' SQL (downloaded first from S3): read-only,
    nothing outside it reachable, settings locked (flows.publish.ANALYST_CONFIG)."""
    from flows.failures import UsageError
    from flows.publish import local_catalog, open_analyst_catalog

    try:
        path = local_catalog(warehouse)
    except FileNotFoundError:
        path = None
    if path is None or not path.exists():
        raise UsageError(f"{warehouse}: no catalog.duckdb; `trafficreport rebuild-catalog` builds it from the manifest")
    return open_analyst_catalog(path)


def _print_tables(warehouse: Any, week: dt.date) -> None:
    from flows.publish import query_frame

    con = _open_catalog(warehouse)
    try:
        for view in ("table1_broadband_usage", "table2_mobile_usage", "table3_broadband_ports", "table4_mobile_ports"):
            print(f"\n== {view} (week {week})")
            frame = query_frame(con, f"select * exclude (week) from {view} where week = $week", {"week": week})
            with __import__("polars").Config(
                tbl_rows=40, tbl_cols=12, float_precision=1, tbl_hide_dataframe_shape=True
            ):
                print(frame)
    finally:
        con.close()


# The settings the common flags set, and the flag of each (named in errors and by `config`).
SETTING_FLAGS = {"landing": "--landing", "warehouse": "--warehouse", "staging": "--staging", "dask_address": "--dask"}


def _resolved_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from flows.settings import resolve_settings

    given = {name: getattr(args, flag.removeprefix("--"), None) for name, flag in SETTING_FLAGS.items()}
    return resolve_settings(getattr(args, "config", None), given, SETTING_FLAGS)


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return _resolved_settings(args)[0]


def cmd_generate(args: argparse.Namespace) -> int:
    from flows.generate import generate_to

    started = time.monotonic()
    counts = generate_to(
        args.out, args.week, args.year, args.users, args.phones, args.seed, message_size=args.message_size
    )
    print(f"generated week {args.week} into {args.out} in {time.monotonic() - started:.1f} s: {counts}")
    return 0


def _print_run_summary(settings: Any, run: Any) -> None:
    """The lines a weekly run ends with (flows.terminal.run_summary), from the manifest it published."""
    from flows import terminal
    from flows.publish import CATALOG, read_manifest

    retry = f"`trafficreport report --week {run.week}` retries it"
    report = run.report or f"not rendered ({run.report_error}); {retry}"
    tables = terminal.published_tables(read_manifest(settings.warehouse), run) if run.published else []
    print()
    print(terminal.run_summary(run, tables, report, f"{settings.warehouse / CATALOG}  (`trafficreport shell`)"))


def cmd_weekly(args: argparse.Namespace) -> int:
    from flows import terminal
    from flows.weekly import weekly_report_runner

    settings = _settings(args)
    with terminal.week_display():
        run = weekly_report_runner(settings)(
            args.week, settings, force=not args.skip_published, accept_failed_audit=args.accept_failed_audit
        )
    if run.published:
        _print_tables(settings.warehouse, args.week)
    _print_run_summary(settings, run)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from flows import terminal
    from flows.backfill import format_summary, months_in, run_backfill, weeks_in
    from flows.preflight import check_period_range
    from transforms.run_records import PeriodOutcome

    start, end = check_period_range(args.start, args.end)
    total = len(weeks_in(start, end)) + len(months_in(start, end))
    with terminal.periods_display(f"backfill {start}..{end}", total) as advance:

        def done(row: PeriodOutcome) -> None:
            advance(row.status)

        results = run_backfill(start, end, _settings(args), args.force, args.concurrency, on_result=done)
    print(format_summary(results))
    return 1 if any(r.status == "failed" for r in results) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows import terminal
    from flows.generate import generate_to, generated_weeks
    from flows.weekly import weekly_report_runner

    settings = _settings(args)
    settings.hmac_key(create=True)
    started = time.monotonic()
    if DEMO_WEEK not in generated_weeks(settings.landing):
        counts = generate_to(settings.landing, DEMO_WEEK, broadband_users=args.users, mobile_phones=args.phones)
        print(f"generated demo week {DEMO_WEEK} in {time.monotonic() - started:.1f} s: {counts}")
    with terminal.week_display():
        run = weekly_report_runner(settings)(DEMO_WEEK, settings)
    _print_tables(settings.warehouse, DEMO_WEEK)
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")
    _print_run_summary(settings, run)
    return 0


def cmd_monthly(args: argparse.Namespace) -> int:
    from flows.monthly import monthly_traffic_report

    run = monthly_traffic_report(args.month, _settings(args))
    print(f"month {args.month} published by run {run.run_id}: {run.polls} polls from {run.files} files")
    return 0


def cmd_generate_counters(args: argparse.Namespace) -> int:
    from flows.monthly import write_counters
    from transforms.synth.monthly import generate_counter_polls

    polls = generate_counter_polls(args.start, args.end, args.timezone, args.seed)
    print(f"wrote {write_counters(polls, args.out, args.timezone)} under {args.out / 'counters'}")
    return 0


# The weeks the look-back demo generates: the Monday nearest June 1 of each year (the report's
# analysed weeks sit between late May and mid-June), each calibrated to its own year.
LOOKBACK_WEEKS = tuple(
    dt.date(year, 6, 1) - dt.timedelta(days=(dt.date(year, 6, 1).weekday() + 3) % 7 - 3) for year in range(2019, 2025)
)


def cmd_lookback_demo(args: argparse.Namespace) -> int:
    from flows import terminal
    from flows.backfill import format_summary, months_in, run_backfill
    from flows.generate import generate_to, generated_weeks
    from flows.monthly import counter_files, write_counters
    from flows.weekly import DEFER_REPORT
    from transforms.run_records import PeriodOutcome
    from transforms.synth.monthly import generate_counter_polls

    settings = _settings(args)
    settings.hmac_key(create=True)
    started = time.monotonic()
    present = set(generated_weeks(settings.landing))
    missing = [week for week in LOOKBACK_WEEKS if week not in present]
    counters_missing = not counter_files(settings.landing, "2019-01")[1]
    if missing or counters_missing:
        with terminal.steps_display("generate the look-back's input", len(missing) + counters_missing) as step:
            for week in missing:
                counts = generate_to(
                    settings.landing, week, broadband_users=args.users, mobile_phones=args.phones, seed=week.year
                )
                step(f"generated {week} (calibrated to {week.year}): {counts['flow_records']:,} flows")
            if counters_missing:
                polls = generate_counter_polls("2019-01", "2024-06", settings.timezone)
                written = write_counters(polls, settings.landing, settings.timezone)
                step(f"generated interface counters 2019-01..2024-06: {written}")
    first, last = dt.date(2019, 1, 1), dt.date(2024, 6, 30)
    total = len(LOOKBACK_WEEKS) + len(months_in(first, last))
    with terminal.periods_display("backfill 6 weeks, 66 months", total) as advance:

        def done(row: PeriodOutcome) -> None:
            advance(row.status)

        # Only the analysed weeks: the weeks around them hold a few spill-over flows, not whole weeks.
        # One report, the last week's, rendered by run_backfill once every week is published.
        deferred = DEFER_REPORT.set(True)
        try:
            results = run_backfill(
                first, last, settings, concurrency=args.concurrency, weeks=list(LOOKBACK_WEEKS), on_result=done
            )
        finally:
            DEFER_REPORT.reset(deferred)
    print(format_summary(results))
    report = settings.warehouse / "reports" / str(LOOKBACK_WEEKS[-1]) / "report.html"
    print(f"\nlook-back demo finished in {time.monotonic() - started:.0f} s")
    print(f"report: {report}  (the {LOOKBACK_WEEKS[-1]} week with five years of look-back)")
    print(f"        an earlier week's is not rendered here: `trafficreport report --week {LOOKBACK_WEEKS[0]}`")
    print(f"catalog: {settings.warehouse / 'catalog.duckdb'}  (`trafficreport shell`)")
    return 1 if any(r.status == "failed" for r in results) else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from flows.deployment import serve_deployments

    if not PREFECT_API_URL.value():
        print(
            "trafficreport serve needs a persistent Prefect server: the ephemeral one runs flows but never "
            "schedules them. Start one (`prefect server start`) and set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api); see deploy/README.md.",
            file=sys.stderr,
        )
        return 2
    parameters = {
        "landing_zone": args.landing,
        "warehouse": args.warehouse,
        "staging": str(args.staging) if args.staging else None,
        "config": str(args.config.resolve()) if args.config else None,
        "feed_retries": args.feed_retries,
        "feed_retry_delay_seconds": args.feed_retry_delay,
    }
    serve_deployments(parameters)
    return 0


def _print_held_locks(settings: Any) -> None:
    """The weeks and months a run holds right now: file locks here, and Prefect slots when a
    persistent server is configured."""
    from flows import locks, prefect_api

    held = locks.held_locks(settings.lock_dir)
    if prefect_api.configured_api_url():
        try:
            held += locks.held_prefect_slots()
        except Exception as exc:  # the server may be down: the rest of the status still helps
            print(f"Prefect slots: not known ({type(exc).__name__} from {prefect_api.configured_api_url()})")
    for row in held:
        print(f"running: {row.period} ({row.kind}, {row.holder})")
    if any(row.kind == "Prefect slot" for row in held):
        print("a slot whose run is gone (killed, server restarted) is freed by `trafficreport release --week W`")


def cmd_release(args: argparse.Namespace) -> int:
    """Frees the Prefect concurrency slot of a week or month whose run is gone."""
    from flows import locks, prefect_api
    from flows.failures import UsageError

    period = args.week or args.month
    if not prefect_api.configured_api_url():
        raise UsageError(
            "release frees a slot of a persistent Prefect server: set PREFECT_API_URL (without one, "
            "runs hold only file locks, which the kernel frees when their process ends)"
        )
    alive = [r for r in locks.held_locks(_settings(args).lock_dir) if r.period == str(period)]
    if alive:
        raise UsageError(f"{period} is held by a running run here ({alive[0].holder}): not releasing it")
    held = locks.release_prefect_slot(str(period))
    print(f"{period}: released {held} Prefect slot(s)" if held else f"{period}: no slot was held")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Every setting, its value and where it came from; the pseudonym key only by where it is."""
    from flows.settings import ENV_PREFIX, format_value, unused_variables

    settings, sources = _resolved_settings(args)
    width = max(len(name) for name in sources)
    for name, source in sources.items():
        origin = "default" if source == "default" else f"from {source}"
        print(f"{name:<{width}} = {format_value(name, getattr(settings, name))}  # {origin}")
    if os.environ.get(ENV_PREFIX + "HMAC_KEY"):
        print(f"# pseudonym key: from {ENV_PREFIX}HMAC_KEY (not shown)")
    elif settings.hmac_key_secret:
        print(f"# pseudonym key: from the Prefect Secret block {settings.hmac_key_secret!r}")
    else:
        there = "" if settings.hmac_key_file.exists() else " (not there yet)"
        print(f"# pseudonym key: from the file {settings.hmac_key_file}{there}")
    for name in unused_variables():
        print(f"# {name} is set but is not a setting: ignored")
    return 0


def _period_date(period: str) -> dt.date:
    """A published period's first day: a week's Monday ("YYYY-MM-DD") or a month's first ("YYYY-MM")."""
    return dt.date.fromisoformat(period if len(period) == 10 else f"{period}-01")


def format_published(manifest: Manifest) -> list[str]:
    """`status`'s lists: published weeks, then published months, each by date, with audit and run."""
    periods: dict[str, str] = {}
    for parts in manifest["tables"].values():
        for period, entry in parts.items():
            periods[period] = str(entry["run_id"])
    lines: list[str] = []
    for kind, width in (("week", 10), ("month", 7)):
        mine = sorted((p for p in periods if len(p) == width), key=_period_date)
        if not mine:
            continue
        lines += [""] if lines else []
        lines += [
            f"published {kind}s: {len(mine)}, {mine[0]} .. {mine[-1]}",
            f"  {kind:10}  {'audit':24}  {'published at':25}  {'tables':>6}  {'older runs':>10}  run",
        ]
        for period in mine:
            run_id = periods[period]
            record = manifest["runs"].get(run_id, {})
            audit = (
                "passed"
                if record.get("audit_passed")
                else f"FAILED, accepted ({len(record.get('failed_checks', []))})"
                if record.get("accepted_failed_audit")
                else "?"
            )
            tables = sum(1 for parts in manifest["tables"].values() if period in parts)
            kept = len(manifest["retained"].get(period, []))
            published_at = record.get("published_at", "?")
            lines.append(f"  {period:10}  {audit:24}  {published_at:25}  {tables:>6}  {kept:>10}  {run_id}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from flows.publish import describe_catalog, read_manifest_versioned

    settings = _settings(args)
    _print_held_locks(settings)
    manifest, manifest_version = read_manifest_versioned(settings.warehouse)
    lines = format_published(manifest)
    if not lines:
        print(f"{settings.warehouse}: nothing published")
        return 0
    print("\n".join(lines))
    print()
    print(describe_catalog(settings.warehouse, manifest_version))
    return 0


def cmd_check_calibration(args: argparse.Namespace) -> int:
    from flows.calibration_check import calibration_report, format_report, within_tolerance
    from flows.failures import UsageError
    from flows.generate import generated_weeks

    settings = _settings(args)
    landing, generated = settings.landing, generated_weeks(settings.landing)
    if not generated:
        raise UsageError(f"check-calibration: {landing} holds no generated week (`generate` or `demo` makes one)")
    if args.week is not None and args.week not in generated:
        weeks = ", ".join(map(str, generated))
        raise UsageError(f"check-calibration --week {args.week}: not generated in {landing}; generated: {weeks}")
    usage_rows, port_rows, accuracy = calibration_report(
        settings.landing, settings.warehouse, settings.hmac_key(), args.week
    )
    print(format_report(usage_rows, port_rows, accuracy))
    ok = within_tolerance(usage_rows, port_rows, accuracy)
    print("\ncalibration:", "within tolerance" if ok else "OUT OF TOLERANCE")
    return 0 if ok else 1


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb
    import polars as pl

    from flows.failures import UsageError
    from flows.publish import built_from, catalog_lag, query_frame, query_refused, read_manifest_versioned

    if (args.sql is None) == (args.file is None):
        raise UsageError("query: give either SQL text or --file F.sql")
    try:
        sql = args.file.read_text() if args.file else args.sql
    except OSError as exc:
        raise UsageError(f"--file {args.file}: {exc.strerror}") from None
    params = dict(_parameter(p) for p in args.param)
    warehouse = _settings(args).warehouse
    con = _open_catalog(warehouse)
    try:
        lag = catalog_lag(built_from(con), read_manifest_versioned(warehouse)[1])
        if lag:
            print(f"note: {lag}", file=sys.stderr)
        try:
            frame = query_frame(con, sql, params)
        except duckdb.Error as exc:
            if "Values were not provided for the following parameters" in str(exc):
                missing = str(exc).rsplit(":", 1)[-1].strip()
                raise UsageError(
                    f"query: no value for ${missing.replace(', ', ', $')}: give each with --param name=value"
                ) from exc
            raise query_refused(exc) from exc
        with pl.Config(tbl_rows=args.max_rows, tbl_cols=20):
            print(frame)
    finally:
        con.close()
    return 0


def _parameter(text: str) -> tuple[str, int | float | str]:
    """name=value from the command line; numbers become numbers (LIMIT needs one)."""
    from flows.failures import UsageError

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise UsageError(f"--param {text!r}: expected name=value")
    for convert in (int, float):
        try:
            return name, convert(value)
        except ValueError:
            pass
    return name, value


def cmd_shell(args: argparse.Namespace) -> int:
    """A read-only SQL prompt on the catalog (flows.shell): readline editing and history, .tables,
    .schema T, .help; Ctrl-C drops the line, Ctrl-D quits."""
    from flows.publish import built_from, catalog_lag, read_manifest_versioned
    from flows.shell import run_shell

    warehouse = _settings(args).warehouse
    con = _open_catalog(warehouse)
    try:
        print(f"read-only catalog of {warehouse}: .tables lists the tables, .help the commands, Ctrl-D quits")
        lag = catalog_lag(built_from(con), read_manifest_versioned(warehouse)[1])
        if lag:
            print(f"note: {lag}", file=sys.stderr)
        run_shell(con, args.max_rows)
    finally:
        con.close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.report import build_report, write_report

    warehouse = _settings(args).warehouse
    report = build_report(warehouse, args.week)
    page = write_report(warehouse, report)
    print(f"report of week {args.week}: {page} ({len(report.html) / 1e6:.1f} MB, rendered in {report.seconds:.1f} s)")
    return 0


def cmd_rebuild_catalog(args: argparse.Namespace) -> int:
    from flows.publish import build_catalog, catalog_version, short_version

    warehouse = _settings(args).warehouse
    build_catalog(warehouse)
    print(f"{warehouse}: catalog rebuilt from manifest version {short_version(catalog_version(warehouse))}")
    return 0


def cmd_fit_calibration(args: argparse.Namespace) -> int:
    from flows.fit_calibration import fit_all_mixtures

    print(f"wrote {fit_all_mixtures(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trafficreport", description=__doc__)
    # Where the data is: every command that reads settings takes these.
    places = _Parser(add_help=False)
    places.add_argument("--config", type=Path, help="TOML settings file")
    places.add_argument("--landing", help="landing zone: folder or s3:// URL (default data/landing)")
    places.add_argument("--warehouse", help="parquet warehouse: folder or s3:// URL (default data/warehouse)")
    # Where runs work (and hold their locks): commands that run flows or look at running ones.
    staging_flag = _Parser(add_help=False)
    staging_flag.add_argument(
        "--staging", help="staging area: folder or s3:// URL, shared by Dask workers (default data/staging)"
    )
    # Commands that run the weekly flow.
    dask_flag = _Parser(add_help=False)
    dask_flag.add_argument(
        "--dask",
        metavar="tcp://HOST:8786",
        help="run the week's ingest and attribution tasks on this Dask scheduler's workers",
    )
    running = [places, staging_flag, dask_flag]
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, parents: list[_Parser] | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", parents=parents or [])

    p = command("generate", "write a synthetic week to a landing zone")
    p.add_argument("--week", type=_date, required=True, help="Monday of the week, e.g. 2024-06-03")
    p.add_argument("--out", type=Path, required=True, help="landing zone to write into")
    p.add_argument("--year", type=int, help="reference year to calibrate to (default: the week's)")
    p.add_argument("--users", type=_count, default=3000, help="broadband users (subscription x access)")
    p.add_argument("--phones", type=_count, default=3000, help="mobile phone numbers")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed writes the same week")
    p.add_argument(
        "--message-size",
        type=int,
        default=1400,
        help="largest IPFIX message in bytes: 1400 (default) is one UDP datagram as exporters send it; "
        "65535 packs records into few big messages",
    )
    p.set_defaults(func=cmd_generate)

    p = command("weekly", "run the weekly report flow for one week", running)
    p.add_argument("--week", type=_date, required=True, help="Monday of the week, e.g. 2024-06-03")
    p.add_argument("--skip-published", action="store_true", help="do nothing if the week is published")
    p.add_argument(
        "--accept-failed-audit",
        action="store_true",
        help="publish even if checkpoints fail (recorded in the manifest with the failed checks)",
    )
    p.set_defaults(func=cmd_weekly)

    p = command("backfill", "run every week and counter month in a range", running)
    p.add_argument("--from", dest="start", required=True, help="YYYY, YYYY-MM or YYYY-MM-DD (its first day)")
    p.add_argument("--to", dest="end", required=True, help="YYYY, YYYY-MM or YYYY-MM-DD (its last day)")
    p.add_argument("--force", action="store_true", help="re-run published weeks and months too")
    p.add_argument("--concurrency", type=int, default=2, help="weeks or months run at once (default 2)")
    p.set_defaults(func=cmd_backfill)

    p = command("demo", "generate the 2024-06-03 week and run it end to end", running)
    p.add_argument(
        "--users", type=_demo_size, default=3000, help="broadband users to generate (default 3000, at least 20)"
    )
    p.add_argument(
        "--phones", type=_demo_size, default=3000, help="mobile phone numbers to generate (default 3000, at least 20)"
    )
    p.set_defaults(func=cmd_demo)

    p = command("monthly", "publish one month of interface counters (Figure 1)", [places, staging_flag])
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.set_defaults(func=cmd_monthly)

    p = command("generate-counters", "write synthetic interface counter polls for a range of months")
    p.add_argument("--from", dest="start", required=True, help="first month, YYYY-MM (2019-01 or later)")
    p.add_argument("--to", dest="end", required=True, help="last month, YYYY-MM (2024-12 or earlier)")
    p.add_argument("--out", type=Path, required=True, help="landing zone")
    p.add_argument("--timezone", default="Asia/Tokyo", help="the routers' local time zone (default Asia/Tokyo)")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed writes the same polls")
    p.set_defaults(func=cmd_generate_counters)

    p = command("lookback-demo", "generate 2019-2024's analysed weeks and counters, backfill, report", running)
    p.add_argument(
        "--users", type=_demo_size, default=3000, help="broadband users per generated week (default 3000, at least 20)"
    )
    p.add_argument(
        "--phones",
        type=_demo_size,
        default=3000,
        help="mobile phone numbers per generated week (default 3000, at least 20)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="weeks or months run at once (default 2)")
    p.set_defaults(func=cmd_lookback_demo)

    p = command("serve", "serve the scheduled deployments (needs PREFECT_API_URL of a Prefect server)", running)
    p.add_argument("--feed-retries", type=int, default=12, help="times a late feed is waited for (default 12)")
    p.add_argument("--feed-retry-delay", type=float, default=3600.0, help="seconds between (default 3600)")
    p.set_defaults(func=cmd_serve)

    p = command("status", "published weeks and months, their audit and run", [places, staging_flag])
    p.set_defaults(func=cmd_status)

    p = command("config", "every setting, its value and where it came from", running)
    p.set_defaults(func=cmd_config)

    p = command(
        "release", "free the Prefect concurrency slot of a week or month whose run is gone", [places, staging_flag]
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--week", type=_date, help="Monday of the week")
    which.add_argument("--month", help="YYYY-MM")
    p.set_defaults(func=cmd_release)

    p = command("check-calibration", "target vs ground truth vs published", [places])
    p.add_argument("--week", type=_date, help="a generated week (default: the latest in the landing zone)")
    p.set_defaults(func=cmd_check_calibration)

    p = command("query", "run SQL against catalog.duckdb (read-only)", [places])
    p.add_argument("sql", nargs="?", help="SQL text (or use --file)")
    p.add_argument("--file", type=Path, help="a .sql file, e.g. sql/examples/top_ports.sql")
    p.add_argument("--param", action="append", default=[], help="bound parameter name=value ($name in the SQL)")
    p.add_argument("--max-rows", type=int, default=40, help="rows printed at most (default 40)")
    p.set_defaults(func=cmd_query)

    p = command("report", "render the HTML / markdown report of a published week", [places])
    p.add_argument("--week", type=_date, required=True, help="Monday of the published week, e.g. 2024-06-03")
    p.set_defaults(func=cmd_report)

    p = command("shell", "read-only SQL prompt on catalog.duckdb", [places])
    p.add_argument("--max-rows", type=int, default=40, help="rows printed at most (default 40)")
    p.set_defaults(func=cmd_shell)

    p = command("rebuild-catalog", "rebuild catalog.duckdb from the current manifest", [places])
    p.set_defaults(func=cmd_rebuild_catalog)

    p = command("fit-calibration", "refit the generator's mixtures to the reference tables")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("fitted_mixtures.json"),
        help="JSON file to write (default fitted_mixtures.json in the current folder); the generator uses "
        "the copy at transforms/synth/fitted_mixtures.json",
    )
    p.set_defaults(func=cmd_fit_calibration)
    return parser


# Commands that run flows: their arguments and settings are checked first, then they get a
# Prefect API (the configured server, or a temporary one that dies with this process).
FLOW_COMMANDS = ("weekly", "backfill", "demo", "monthly", "lookback-demo")


def _preflight(args: argparse.Namespace) -> None:
    """Settings, key, paths, week and directory checked before Prefect starts (flows.preflight)."""
    from flows import preflight

    settings = _settings(args)
    if args.command == "weekly":
        preflight.check_weekly_run(settings, args.week)
    elif args.command == "monthly":
        preflight.check_month(args.month, settings.timezone)
        preflight.check_paths(settings)
    elif args.command == "backfill":
        preflight.check_period_range(args.start, args.end)
        preflight.check_key(settings)
        preflight.check_paths(settings)
        preflight.check_inventory(settings)


def _quiet_prefect_console() -> None:
    """Failures reach the terminal as our one line: Prefect's (and Dask's) console copies of them,
    and any record carrying a traceback, are dropped. Prefect's API log handler still records them
    for the UI."""
    import logging

    def no_errors(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and not record.exc_info

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and no_errors not in handler.filters:
                handler.addFilter(no_errors)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return message if len(message) <= 2000 else message[:2000] + " ..."


INTERRUPTED_AFTER_SWAP = "interrupted after publication began: the run finished publishing"


def _interrupted_line(command: str) -> str:
    from flows import interrupts

    if interrupts.publication_began():
        return INTERRUPTED_AFTER_SWAP
    if command == "backfill":
        return "interrupted: weeks and months published before stay published; the same backfill finishes the rest"
    if command in FLOW_COMMANDS:
        return "interrupted: nothing was published"
    return "interrupted"


def _exit_code(exc: BaseException, command: str) -> tuple[int, str]:
    """(exit code, the line to print) for a failure of `command`."""
    from flows import failures, interrupts

    if isinstance(exc, failures.UsageError):
        return failures.EXIT_USAGE, _one_line(exc)
    if isinstance(exc, failures.Interrupted):
        return failures.EXIT_INTERRUPTED, _one_line(exc)
    # After a signal any error is the interrupt's: a KeyboardInterrupt may surface as another error
    # (Prefect's engine raises "Task run is not set" when it lands inside a task's start).
    if isinstance(exc, KeyboardInterrupt) or interrupts.requested():
        return failures.EXIT_INTERRUPTED, _interrupted_line(command)
    known = (
        "InputFormatError",
        "AuditFailed",
        "MissingFeed",
        "WeekBusy",
        "ConcurrentPublication",
        "RunFailed",
        "ConcurrentUpdate",
        "LookupError",
    )
    if type(exc).__name__ in known or isinstance(exc, OSError):
        return failures.EXIT_FAILED, _one_line(exc)
    return failures.EXIT_FAILED, f"{type(exc).__name__}: {_one_line(exc)} (--debug shows where)"


def main(argv: list[str] | None = None) -> int:
    """The `trafficreport` command: exit codes as documented in flows/failures.py."""
    from flows import interrupts

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect prints a telemetry notice when first imported in a terminal, before it asks the
    # server (whose analytics are off, above) whether to send anything: client side off too.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if debug:
        os.environ["TRAFFICREPORT_DEBUG"] = "1"
    args = build_parser().parse_args(argv)
    with interrupts.handled():
        return _run_command(args, debug)


def _run_command(args: argparse.Namespace, debug: bool) -> int:
    from flows import interrupts
    from flows.failures import EXIT_INTERRUPTED
    from flows.prefect_api import drain_prefect_clients, prefect_api

    try:
        if args.command not in FLOW_COMMANDS:
            return int(args.func(args))
        _preflight(args)
        with prefect_api():
            if not debug:
                # Prefect's logging handlers exist once prefect.main has run setup_logging (later
                # setups are incremental: they keep the handlers, and the filter on them).
                import prefect.main  # noqa: F401

                if _settings(args).dask_address:
                    # distributed sets up its console handler when imported: import it first, so
                    # its chatter about a lost connection (tracebacks at INFO) is filtered too.
                    import distributed  # noqa: F401

                _quiet_prefect_console()
            code = int(args.func(args))
        if interrupts.requested():
            print(f"trafficreport: {_interrupted_line(args.command)}", file=sys.stderr)
            return EXIT_INTERRUPTED
        return code
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        if debug:
            import traceback

            traceback.print_exception(exc)
        code, line = _exit_code(exc, args.command)
        print(f"trafficreport: {line}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        if code == EXIT_INTERRUPTED and args.command in FLOW_COMMANDS:
            # Threads a library left running (a Dask client, a GX or Prefect service) must not keep
            # an interrupted command alive; what the run logged goes to the server first.
            drain_prefect_clients()
            os._exit(code)
        return code


if __name__ == "__main__":
    sys.exit(main())
