"""Collectors' own folder layouts: which files belong to a week, and to which local day."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flows.flow_files import flow_files_of_days

WEEK = [dt.date(2024, 6, 3) + dt.timedelta(days=i) for i in range(7)]
NEXT_DAY = WEEK + [dt.date(2024, 6, 10)]


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _found(root: Path, days: list[dt.date], collector: str = "Asia/Tokyo") -> dict[str, dt.date]:
    found = flow_files_of_days(root, days, "Asia/Tokyo", collector)
    return {str(Path(str(f.path)).relative_to(root)): f.day for f in found}


def test_nfcapd_tree_by_year_month_day_is_read_by_the_times_in_the_names(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "2024/06/02/nfcapd.202406022150",  # 2 h 10 min before the week: outside the margin
        "2024/06/02/nfcapd.202406022200",  # within two hours before Monday: may hold Monday's flows
        "2024/06/03/nfcapd.202406030000",
        "2024/06/03/nfcapd.20240603120530",  # nfcapd -t below a minute adds seconds
        "2024/06/09/nfcapd.202406092355",
        "2024/06/10/nfcapd.202406100005",  # the next day is read when asked for
        "2024/06/11/nfcapd.202406110000",
        "2023/06/05/nfcapd.202306050000",  # a year before: its folder is not even listed
        "2024/06/03/nfcapd.current.12345",  # nfcapd's file being written: no time in the name
    )
    assert _found(tmp_path, NEXT_DAY) == {
        "2024/06/02/nfcapd.202406022200": dt.date(2024, 6, 2),
        "2024/06/03/nfcapd.202406030000": dt.date(2024, 6, 3),
        "2024/06/03/nfcapd.20240603120530": dt.date(2024, 6, 3),
        "2024/06/09/nfcapd.202406092355": dt.date(2024, 6, 9),
        "2024/06/10/nfcapd.202406100005": dt.date(2024, 6, 10),
    }


def test_names_are_read_in_the_collectors_zone_and_days_are_the_reports(tmp_path: Path) -> None:
    # A collector writing UTC names: 2024-06-02 15:00 UTC is Monday 00:00 in Tokyo.
    _touch(tmp_path, "nfcapd.202406021500", "nfcapd.202406021300", "nfcapd.202406021200")
    assert _found(tmp_path, WEEK, collector="UTC") == {
        "nfcapd.202406021300": dt.date(2024, 6, 2),  # 22:00 Sunday in Tokyo: within the margin
        "nfcapd.202406021500": dt.date(2024, 6, 3),
    }


def test_pmacct_names_and_day_folders_of_either_kind(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "nfacctd-20240605-1405.csv",
        "nfacctd_2024-06-06_0900.json",
        "nfacctd-20240620-1405.csv",
        "2024-06-04/bb-tokyo-1-20240604.ipfix",  # a date but no time in the name: the folder's day
        "2024-06-04/17/nfcapd.202406041700",  # nfcapd -S with %Y-%m-%d/%H
        "2024-06-20/late.ipfix",
        "notes.txt",
    )
    assert _found(tmp_path, WEEK) == {
        "nfacctd-20240605-1405.csv": dt.date(2024, 6, 5),
        "nfacctd_2024-06-06_0900.json": dt.date(2024, 6, 6),
        "2024-06-04/bb-tokyo-1-20240604.ipfix": dt.date(2024, 6, 4),
        "2024-06-04/17/nfcapd.202406041700": dt.date(2024, 6, 4),
    }


def test_only_the_days_asked_for_are_read_from_day_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "2024-06-03/a.ipfix", "2024-06-04/b.ipfix", "2024-06-04/.hidden")
    assert _found(tmp_path, [dt.date(2024, 6, 4)]) == {"2024-06-04/b.ipfix": dt.date(2024, 6, 4)}
    assert _found(tmp_path / "missing", WEEK) == {}
