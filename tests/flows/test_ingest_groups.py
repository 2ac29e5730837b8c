"""A week decoded a day at a time (as cluster tasks do) and chained equals the week decoded file by
file: the same staged flows, counts, quarantine and exporter state, whatever the days depend on."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import pickle
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows import flow_ingest, storage
from flows.flow_files import ExporterInputs, flow_files_of_days
from flows.flow_ingest import ExporterIngest, FileGroup, IngestWindow
from tests.conftest import WEEK
from transforms.decode import ExporterState, ipfix
from transforms.decode._records import Template

DAYS = [WEEK + dt.timedelta(days=i) for i in range(8)]
START = dt.datetime.combine(WEEK, dt.time(0), dt.UTC)
END = START + dt.timedelta(days=7)
DAY_MS = 86_400_000


def _day_ms(day: int) -> int:
    return int(START.timestamp() * 1000) + day * DAY_MS + 3_600_000


def _records(n: int, start_ms: int, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        ipfix.IE_START_MS: start_ms + np.arange(n, dtype=np.uint64) * 1000,
        ipfix.IE_END_MS: start_ms + np.arange(n, dtype=np.uint64) * 1000 + 500,
        ipfix.IE_SRC_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_DST_V4: rng.integers(0, 2**32, n, dtype=np.uint64),
        ipfix.IE_SRC_PORT: rng.integers(0, 65536, n),
        ipfix.IE_DST_PORT: rng.integers(0, 65536, n),
        ipfix.IE_PROTOCOL: np.full(n, 6),
        ipfix.IE_PACKETS: rng.integers(1, 9, n).astype(np.uint64),
        ipfix.IE_OCTETS: rng.integers(40, 9000, n).astype(np.uint64),
    }


# Template 256 defined again with its fields in another order (a router upgrade): records of the
# old and the new definition differ byte for byte.
REDEFINED = Template(256, tuple(reversed(ipfix.FLOW_TEMPLATE_V4.fields)))
OPTIONS = ipfix.sampling_options_template("interval")


def _announcement(rate: int) -> bytes:
    return ipfix.pack_records(
        OPTIONS, {ipfix.IE_SELECTOR_ID: np.array([1]), ipfix.IE_SAMPLING_INTERVAL: np.array([rate])}
    ).tobytes()


def _message(sets: bytes, sequence: int) -> bytes:
    return ipfix.HEADER.pack(ipfix.IPFIX_VERSION, ipfix.HEADER.size + len(sets), 0, sequence % 2**32, 1) + sets


def _options_set(rate: int) -> bytes:
    body = _announcement(rate)
    return OPTIONS.template_id.to_bytes(2, "big") + (len(body) + 4).to_bytes(2, "big") + body


class Exporter:
    """Writes an exporter's days as IPFIX files, keeping its sequence numbers running across files."""

    def __init__(self, landing: Path, name: str) -> None:
        self.landing, self.name, self.sequence = landing, name, 0

    def write(self, day: int, file: str, sets: bytes, template: Template | None, records: int, skip: int = 0) -> Path:
        """A file of `day`: a message with `sets` (templates, options), then `records` flows of
        `template` (from `skip` lost records on)."""
        self.sequence += skip
        out = _message(sets, self.sequence) if sets else b""
        if template is not None:
            packed = ipfix.pack_records(template, _records(records, _day_ms(day), seed=day * 100 + len(file)))
            data, self.sequence = ipfix.encode_messages(1, 0, self.sequence, b"", template, packed)
            out += data
        path = self.landing / "flows" / self.name / DAYS[day].isoformat() / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out)
        return path


def _sequential(landing: Path, exporter: str, inputs: ExporterInputs, state: Path, stage: Path) -> ExporterIngest:
    return flow_ingest.ingest_exporter(landing, exporter, DAYS, START, END, inputs, state, stage, stage / "state")


def _by_day(
    landing: Path, exporter: str, inputs: ExporterInputs, state: Path, stage: Path, chainings: int = 1
) -> tuple[ExporterIngest, ExporterState]:
    """Each day's files decoded from the saved state on its own, then chained (the cluster's way)."""
    window = IngestWindow(exporter, START, END, inputs)
    paths: list[list[Path]] = []
    found = flow_files_of_days(landing / "flows" / exporter, DAYS, inputs.timezone, inputs.collector_timezone)
    for previous, file in zip([None, *found], found, strict=False):
        if previous is None or previous.day != file.day:
            paths.append([])
        paths[-1].append(Path(str(file.path)))
    entry = flow_ingest.load_exporter_state(state, exporter)
    groups = [flow_ingest.decode_file_group(p, i, window, entry, stage) for i, p in enumerate(paths)]

    def redecode(group: FileGroup, start: ExporterState, seen: set[str]) -> FileGroup:
        return flow_ingest.decode_file_group(paths[group.index], group.index, window, start, stage, seen)

    # A chaining task retried by Dask starts again from the groups as their tasks saved them.
    saved = pickle.dumps(groups)
    for _ in range(chainings):
        chained = copy.deepcopy(entry)
        result = flow_ingest.chain_file_groups(window, pickle.loads(saved), chained, redecode)  # noqa: S301
    return result, chained


def _assert_same(one: ExporterIngest, other: ExporterIngest) -> None:
    flows = [ingest.flows() for ingest in (one, other)]
    assert flows[0].height == flows[1].height
    assert flows[0].sort(flows[0].columns).equals(flows[1].sort(flows[1].columns))
    counted = ["records", "raw_bytes", "messages", "lost_records", "lost_datagrams", "outside_window"]
    counted += ["duplicate_files", "input_bytes", "sampling", "formats", "records_per_day", "part_records"]
    for name in [*counted, "files", "digests", "record_sets"]:
        assert getattr(one, name) == getattr(other, name), name
    assert one.quarantine.sort(one.quarantine.columns).equals(other.quarantine.sort(other.quarantine.columns))
    unrated = [pl.concat([storage.read_parquet(p) for p in i.unrated]) if i.unrated else None for i in (one, other)]
    assert (unrated[0] is None) == (unrated[1] is None)
    if unrated[0] is not None and unrated[1] is not None:
        assert unrated[0].sort(unrated[0].columns).equals(unrated[1].sort(unrated[1].columns))


def _dependent_week(landing: Path) -> None:
    r1 = Exporter(landing, "r1")
    templates = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, OPTIONS])
    r1.write(0, "a.ipfix", templates + _options_set(64), ipfix.FLOW_TEMPLATE_V4, 300)
    copied = r1.write(1, "b.ipfix", b"", ipfix.FLOW_TEMPLATE_V4, 250)  # templates of day 0 only
    r1.write(2, "c.ipfix", ipfix.encode_template_set([REDEFINED]), REDEFINED, 200)
    r1.write(3, "d.ipfix", b"", REDEFINED, 180, skip=37)  # 37 records lost between two days
    r1.write(4, "e.ipfix", _options_set(128), REDEFINED, 150)  # the rate changes mid-week
    (copied.parent.parent / DAYS[5].isoformat()).mkdir()
    shutil.copy(copied, copied.parent.parent / DAYS[5].isoformat() / "copy.ipfix")  # delivered again
    r1.write(6, "g.ipfix", b"", REDEFINED, 120)


def test_days_that_depend_on_earlier_days_are_decoded_again_and_equal_the_file_by_file_week(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    _dependent_week(landing)
    inputs = ExporterInputs()

    sequential = _sequential(landing, "r1", inputs, tmp_path / "state", tmp_path / "one")
    chained, state = _by_day(landing, "r1", inputs, tmp_path / "state", tmp_path / "days")

    _assert_same(sequential, chained)
    assert state.to_json() == flow_ingest.load_exporter_state(tmp_path / "one" / "state", "r1").to_json()
    # What the scenario is made of really happened, the same in both:
    assert sequential.lost_records == 37
    assert sequential.duplicate_files == 1
    assert sequential.revisited_parts >= 1  # parts staged before the 1-in-128 announcement
    assert sequential.records == 300 + 250 + 200 + 180 + 150 + 120
    assert sequential.quarantine.height == 0
    # Days 1 and 3-6 needed a day before them (its templates; a file read already) and were decoded
    # again; day 2 defines the template it uses first, so its own decode stood.
    assert chained.redecoded_groups == 5


def test_a_steady_exporter_week_is_chained_without_decoding_any_day_again(tmp_path: Path) -> None:
    # A previous run saved the exporter's templates; every day resends them and its rate, as
    # routers do every few minutes. Each day decodes on its own; only sequence numbers chain.
    landing = tmp_path / "landing"
    r1 = Exporter(landing, "r1")
    header = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, OPTIONS]) + _options_set(256)
    previous = tmp_path / "previous"
    r1.write(0, "x.ipfix", header, None, 0)
    flow_ingest.ingest_exporter(landing, "r1", [DAYS[0]], START, END, ExporterInputs(), previous, tmp_path / "p")
    shutil.rmtree(landing)
    r1.sequence = 1000
    for day in range(8):
        r1.write(day, f"{day}.ipfix", header, ipfix.FLOW_TEMPLATE_V4, 100 + day, skip=5 if day == 4 else 0)

    sequential = _sequential(landing, "r1", ExporterInputs(), previous, tmp_path / "one")
    chained, state = _by_day(landing, "r1", ExporterInputs(), previous, tmp_path / "days")

    _assert_same(sequential, chained)
    assert chained.redecoded_groups == 0
    assert sequential.lost_records == 5
    assert state.to_json() == flow_ingest.load_exporter_state(tmp_path / "one" / "state", "r1").to_json()


@pytest.mark.parametrize("exporter", ["bb-tokyo-1", "bb-osaka-1", "mobile-gw-1"])
def test_a_generated_week_chained_by_day_equals_the_file_by_file_week(
    small_landing: Path, tmp_path: Path, exporter: str
) -> None:
    inputs = ExporterInputs()
    if not (small_landing / "flows" / exporter).is_dir():
        pytest.fail(f"the generated week has no exporter {exporter}")
    sequential = _sequential(small_landing, exporter, inputs, tmp_path / "state", tmp_path / "one")
    chained, _ = _by_day(small_landing, exporter, inputs, tmp_path / "state", tmp_path / "days")
    _assert_same(sequential, chained)
    assert sequential.records > 0 and sequential.files == chained.files
    assert dataclasses.asdict(sequential)["sampling"] == dataclasses.asdict(chained)["sampling"]


def test_chaining_the_same_days_again_gives_the_same_week(tmp_path: Path) -> None:
    # Restaged parts go to new files, so a second chaining (a retried task) reads what the first read.
    landing = tmp_path / "landing"
    _dependent_week(landing)
    once, _ = _by_day(landing, "r1", ExporterInputs(), tmp_path / "state", tmp_path / "once")
    twice, state = _by_day(landing, "r1", ExporterInputs(), tmp_path / "state", tmp_path / "twice", chainings=2)
    _assert_same(once, twice)
    assert twice.revisited_parts == once.revisited_parts >= 1
    assert state.to_json() == _by_day(landing, "r1", ExporterInputs(), tmp_path / "state", tmp_path / "3")[1].to_json()
