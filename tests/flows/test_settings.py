"""Settings: every setting from defaults, the TOML file, TRAFFICREPORT_* variables or explicit values
(flags), in that order of precedence; wrong types and unknown names refused with one line naming
where they came from; `trafficreport config` shows each value and its source. No Prefect needed."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from upath import UPath

from flows import storage
from flows.failures import UsageError
from flows.settings import ENV_PREFIX, Settings, load_settings, resolve_settings, unused_variables
from flows.storage import storage_path

TRAFFICREPORT = Path(sys.executable).parent / "trafficreport"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the environment of whoever runs the tests."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) and name.upper() != ENV_PREFIX + "HMAC_KEY":
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # s3:// settings become paths with the endpoint of the environment as a storage option; the
    # expected values below are made at import, before a session's S3 fixture sets one.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


def _toml(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "settings.toml"
    config.write_text(text)
    return config


# One field of each kind: (name, TOML text, environment text, override, value from each of the three).
KINDS = [
    ("max_unattributed_share", "0.1", "0.2", 0.3, (0.1, 0.2, 0.3)),
    ("keep_runs", "4", "5", 6, (4, 5, 6)),
    ("keep_staging", "true", "no", True, (True, False, True)),
    ("timezone", '"UTC"', "Europe/Paris", "America/New_York", ("UTC", "Europe/Paris", "America/New_York")),
    (
        "staging",
        '"t/staging"',
        "e/staging",
        Path("o/staging"),
        (Path("t/staging"), Path("e/staging"), Path("o/staging")),
    ),
    ("state_dir", '"t/state"', "e/state", "o/state", (Path("t/state"), Path("e/state"), Path("o/state"))),
    (
        "landing",
        '"t/landing"',
        "s3://env-bucket/landing",
        "o/landing",
        (storage_path("t/landing"), storage_path("s3://env-bucket/landing"), storage_path("o/landing")),
    ),
    (
        "exporter_services",
        '{ "bb-*" = "broadband", "*" = "mobile" }',
        "x*=mobile",
        {"y*": "broadband"},
        ((("bb-*", "broadband"), ("*", "mobile")), (("x*", "mobile"),), (("y*", "broadband"),)),
    ),
    ("exporters", '["a", "b"]', "c,d", ["e"], (("a", "b"), ("c", "d"), ("e",))),
    (
        "default_sampling",
        '{ "bb-*" = 1024 }',
        '{"bb-*": 512}',
        {"bb-*": 256},
        ((("bb-*", 1024),), (("bb-*", 512),), (("bb-*", 256),)),
    ),
]


@pytest.mark.parametrize(("name", "in_toml", "in_env", "override", "expected"), KINDS, ids=[k[0] for k in KINDS])
def test_overrides_beat_the_environment_which_beats_the_toml_file_which_beats_the_defaults(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    in_toml: str,
    in_env: str,
    override: Any,
    expected: tuple,
) -> None:
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    settings, sources = resolve_settings()
    assert getattr(settings, name) == default and sources[name] == "default"

    config = _toml(tmp_path, f"{name} = {in_toml}\n")
    settings, sources = resolve_settings(config)
    assert getattr(settings, name) == expected[0] and sources[name] == str(config)

    monkeypatch.setenv(ENV_PREFIX + name.upper(), in_env)
    settings, sources = resolve_settings(config)
    assert getattr(settings, name) == expected[1] and sources[name] == ENV_PREFIX + name.upper()

    settings, sources = resolve_settings(config, {name: override}, {name: "--" + name})
    assert getattr(settings, name) == expected[2] and sources[name] == "--" + name
    assert load_settings(config, **{name: override}) == settings
    # None is "not given": the environment's value stays.
    assert getattr(load_settings(config, **{name: None}), name) == expected[1]
    # Everything else stayed at its default.
    assert all(where == "default" for other, where in sources.items() if other != name)


def test_landing_and_warehouse_are_storage_paths_and_paths_are_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFICREPORT_WAREHOUSE", "s3://bucket/wh")
    settings = load_settings(landing="data/x", staging="s", hmac_key_file="k/hmac.key", quarantine_dir="q")
    assert isinstance(settings.landing, UPath) and settings.landing == storage_path("data/x")
    assert isinstance(settings.warehouse, UPath) and str(settings.warehouse) == "s3://bucket/wh"
    assert settings.warehouse.protocol == "s3"
    assert type(settings.hmac_key_file) is type(Path())
    # Staging, state and quarantine are local folders here, and would be URLs if given as URLs.
    for name in ("staging", "quarantine_dir"):
        assert storage.is_local(getattr(settings, name))
    assert settings.state_path == storage_path("state") and settings.quarantine_path == storage_path("q")
    assert settings.lock_dir == Path("state/locks")


def test_staging_in_object_storage_takes_state_and_quarantine_with_it_but_locks_stay_local() -> None:
    settings = load_settings(staging="s3://bucket/runs/staging")
    assert str(settings.staging) == "s3://bucket/runs/staging"
    assert str(settings.state_path) == "s3://bucket/runs/state"
    assert str(settings.quarantine_path) == "s3://bucket/runs/quarantine"
    assert storage.is_local(settings.lock_dir) and settings.lock_dir.name.startswith("trafficreport-locks-")
    assert load_settings(staging="s3://other/staging").lock_dir != settings.lock_dir


# The text of each setting in the environment and the value it means; every setting is here.
FROM_ENVIRONMENT: dict[str, tuple[str, Any]] = {
    "landing": ("elsewhere/landing", storage_path("elsewhere/landing")),
    "warehouse": ("s3://bucket/warehouse", storage_path("s3://bucket/warehouse")),
    "staging": ("s3://bucket/staging", storage_path("s3://bucket/staging")),
    "timezone": ("UTC", "UTC"),
    "exporter_services": ("core-*=broadband, gw-*=mobile", (("core-*", "broadband"), ("gw-*", "mobile"))),
    "exporters": ("bb-tokyo-1, mobile-gw-1", ("bb-tokyo-1", "mobile-gw-1")),
    "default_sampling": ("bb-*=1024,*=4096", (("bb-*", 1024), ("*", 4096))),
    "sampling_override": ('{"mobile-*": 64}', (("mobile-*", 64),)),
    "collector_sampling": ("nfcsv-*=2048", (("nfcsv-*", 2048),)),
    "pmacct_renormalized": ("pm-*, pmacct-2", ("pm-*", "pmacct-2")),
    "nfdump_timezone": ("UTC", "UTC"),
    "state_dir": ("/var/state", storage_path("/var/state")),
    "quarantine_dir": ("/var/quarantine", storage_path("/var/quarantine")),
    "hmac_key_file": ("/etc/trafficreport/hmac.key", Path("/etc/trafficreport/hmac.key")),
    "hmac_key_secret": ("trafficreport-hmac", "trafficreport-hmac"),
    "max_unattributed_share": ("0.1", 0.1),
    "max_quarantined_share": ("0.01", 0.01),
    "max_session_silence_hours": ("24", 24),
    "max_user_change": ("0.25", 0.25),
    "max_mean_change": ("1", 1.0),
    "max_port_share_change": ("5.5", 5.5),
    "drift_window_weeks": ("60", 60),
    "reconcile_z": ("3", 3.0),
    "reconcile_floor": ("0.05", 0.05),
    "max_unreconciled_share": ("0.1", 0.1),
    "keep_runs": ("7", 7),
    "one_run_per_week": ("off", False),
    "keep_staging": ("yes", True),
    "dask_address": ("tcp://scheduler:8786", "tcp://scheduler:8786"),
    "task_records": ("1000000", 1_000_000),
    "task_threads": ("1", 1),
    "min_counter_coverage": ("0.9", 0.9),
}


def test_the_environment_table_covers_every_setting() -> None:
    assert set(FROM_ENVIRONMENT) == set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    text, value = FROM_ENVIRONMENT[name]
    assert getattr(Settings(), name) != value  # the test shows a change
    monkeypatch.setenv(ENV_PREFIX + name.upper(), text)
    settings, sources = resolve_settings()
    assert getattr(settings, name) == value
    assert sources[name] == ENV_PREFIX + name.upper()
    # As pydantic-settings reads it for Settings() too.
    assert getattr(Settings(), name) == value


def test_an_empty_variable_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFICREPORT_STATE_DIR", "")
    monkeypatch.setenv("TRAFFICREPORT_KEEP_RUNS", "")
    settings, sources = resolve_settings(_toml(tmp_path, "keep_runs = 9\n"))
    assert settings.state_dir is None and sources["state_dir"] == "default"
    assert settings.keep_runs == 9


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("False", False),
        ("YES", True),
        ("no", False),
        ("on", True),
        ("off", False),
    ],
)
def test_booleans_from_the_environment(monkeypatch: pytest.MonkeyPatch, text: str, value: bool) -> None:
    monkeypatch.setenv("TRAFFICREPORT_ONE_RUN_PER_WEEK", text)
    monkeypatch.setenv("TRAFFICREPORT_KEEP_STAGING", text)
    settings = load_settings()
    assert settings.one_run_per_week is value and settings.keep_staging is value


def _refused(match: str, config: Path | None = None, **overrides: Any) -> str:
    with pytest.raises(UsageError) as caught:
        load_settings(config, **overrides)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    for part in match.split("|"):
        assert part in message, (part, message)
    return message


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ('max_unattributed_share = "five percent"', "max_unattributed_share = 'five percent'|expected float"),
        ('keep_runs = "3"', "keep_runs = '3'|expected int"),
        ("keep_runs = 3.5", "keep_runs = 3.5|expected int"),
        ("keep_staging = 1", "keep_staging = 1|expected bool"),
        ("max_user_change = true", "max_user_change = True|expected float"),
        ("timezone = 9", "timezone = 9|expected str"),
        ("staging = 1", "staging = 1|expected str (a folder or an s3:// URL)"),
        ("landing = []", "landing = []|expected str (a folder or an s3:// URL)"),
        ("exporters = [1, 2]", "exporters = [1, 2]|expected list of str"),
        ('exporter_services = ["mobile"]', "exporter_services = ['mobile']|expected table of pattern = str"),
        (
            'default_sampling = { "bb-*" = "fast" }',
            "default_sampling = {'bb-*': 'fast'}|expected table of pattern = int",
        ),
    ],
)
def test_a_wrong_type_in_the_toml_file_names_the_file_the_key_the_value_and_the_type(
    tmp_path: Path, line: str, parts: str
) -> None:
    config = _toml(tmp_path, line + "\n")
    message = _refused(parts, config)
    assert message.startswith(f"{config}: ")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("keep_runs", "many", "int"),
        ("max_unattributed_share", "five percent", "float"),
        ("one_run_per_week", "maybe", "bool"),
        ("default_sampling", "bb-*=fast", "table of pattern = int"),
        ("exporter_services", "mobile", "table of pattern = str"),
        ("sampling_override", "{not json", "table of pattern = int"),
        ("exporters", "[not json", "list of str"),
    ],
)
def test_a_wrong_type_in_the_environment_names_the_variable_the_key_the_value_and_the_type(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, expected: str
) -> None:
    variable = ENV_PREFIX + name.upper()
    monkeypatch.setenv(variable, text)
    message = _refused(f"{name} = {text!r}|expected {expected}")
    assert message.startswith(f"{variable}: ")


def test_a_wrong_override_names_its_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--landing: landing = 5: expected str"):
        resolve_settings(None, {"landing": 5}, {"landing": "--landing"})
    _refused("override: keep_runs = 'x'|expected int", keep_runs="x")


def test_unknown_settings_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _toml(tmp_path, "max_unatributed_share = 0.05\nkeep_runs = 2\n[extra]\nx = 1\n")
    message = _refused("unknown settings extra, max_unatributed_share", config)
    assert message.startswith(str(config))
    _refused("unknown settings keep_run", keep_run=2)
    # `extra` was a field that nothing read: it is gone.
    assert "extra" not in Settings.model_fields


def test_unknown_variables_are_ignored_but_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFICREPORT_KEEP_RUN", "5")
    monkeypatch.setenv("TRAFFICREPORT_DEBUG", "1")
    assert load_settings().keep_runs == 3
    assert unused_variables() == ["TRAFFICREPORT_KEEP_RUN"]


def test_mapping_and_list_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _toml(
        tmp_path,
        'exporters = "bb-1, mobile-1,"\n'
        '[exporter_services]\n"mobile-1" = "mobile"\n"mobile*" = "broadband"\n"*" = "mobile"\n'
        '[sampling_override]\n"bb-*" = 1024\n',
    )
    settings = load_settings(config)
    # A TOML table keeps its order: the first matching pattern wins.
    assert settings.exporter_services == (("mobile-1", "mobile"), ("mobile*", "broadband"), ("*", "mobile"))
    assert settings.service_of("mobile-1") == "mobile" and settings.service_of("mobile-2") == "broadband"
    assert settings.service_of("bb-1") == "mobile"
    assert settings.exporters == ("bb-1", "mobile-1")
    assert settings.override_rate_of("bb-7") == 1024 and settings.override_rate_of("mobile-1") is None
    assert settings.default_rate_of("bb-7") is None

    monkeypatch.setenv("TRAFFICREPORT_DEFAULT_SAMPLING", " bb-*=512 , *=8 ")
    monkeypatch.setenv("TRAFFICREPORT_EXPORTERS", '["x", "y"]')
    monkeypatch.setenv("TRAFFICREPORT_EXPORTER_SERVICES", '{"gw-*": "mobile", "*": "broadband"}')
    settings = load_settings(config)
    assert settings.default_rate_of("bb-1") == 512 and settings.default_rate_of("gw-1") == 8
    assert settings.exporters == ("x", "y")
    assert settings.exporter_services == (("gw-*", "mobile"), ("*", "broadband"))
    # An explicit mapping (the scheduled flow's parameter) and pairs (the stored form) too.
    assert load_settings(exporter_services={"a*": "mobile"}).exporter_services == (("a*", "mobile"),)
    assert load_settings(sampling_override=[["a*", 2]]).sampling_override == (("a*", 2),)
    assert load_settings(exporters=("p", "q")).exporters == ("p", "q")


def test_settings_are_frozen_hashable_picklable_and_survive_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFICREPORT_EXPORTERS", "a,b")
    settings = load_settings(landing="s3://bucket/landing", default_sampling={"bb-*": 1024})
    with pytest.raises(ValueError, match="frozen"):
        settings.keep_runs = 4  # type: ignore[misc]
    assert hash(settings) == hash(load_settings(landing="s3://bucket/landing", default_sampling={"bb-*": 1024}))
    for copy in (pickle.loads(pickle.dumps(settings)), cloudpickle.loads(cloudpickle.dumps(settings))):
        assert copy == settings and hash(copy) == hash(settings)
    # As a Prefect flow run's parameter: JSON, then validated back (landing still an S3 path).
    monkeypatch.delenv("TRAFFICREPORT_EXPORTERS")
    back = Settings.model_validate(settings.model_dump(mode="json"))
    assert back == settings and back.landing.protocol == "s3"
    assert Settings.model_json_schema()["properties"]["landing"]["type"] == "string"
    changed = settings.model_copy(update={"keep_runs": 9})
    assert changed.keep_runs == 9 and settings.keep_runs == 3 and changed != settings


def test_unreadable_or_broken_toml_is_a_usage_error(tmp_path: Path) -> None:
    _refused(f"{tmp_path / 'absent.toml'}: cannot read the settings file", tmp_path / "absent.toml")
    _refused("not TOML", _toml(tmp_path, "keep_runs = = 3\n"))


def _config_command(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    return subprocess.run(
        [str(TRAFFICREPORT), "config", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_config_command_shows_each_value_and_where_it_came_from(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'max_unattributed_share = 0.1\nkeep_runs = 4\n[exporter_services]\n"gw-*" = "mobile"\n')
    key = "do-not-print-this-key-0123456789"
    env = {
        "TRAFFICREPORT_KEEP_RUNS": "5",
        "TRAFFICREPORT_KEEP_STAGING": "on",
        "TRAFFICREPORT_HMAC_KEY": key,
        "TRAFFICREPORT_KEEP_RUN": "6",
    }
    result = _config_command(["--config", str(config), "--staging", "st", "--dask", "tcp://h:8786"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = {line.split("=", 1)[0].strip(): line for line in result.stdout.splitlines() if not line.startswith("#")}
    assert set(lines) == set(Settings.model_fields)
    assert lines["max_unattributed_share"].endswith(f"= 0.1  # from {config}")
    assert lines["exporter_services"].endswith(f'= {{ "gw-*" = "mobile" }}  # from {config}')
    assert lines["keep_runs"].endswith("= 5  # from TRAFFICREPORT_KEEP_RUNS")
    assert lines["keep_staging"].endswith("= true  # from TRAFFICREPORT_KEEP_STAGING")
    assert lines["staging"].endswith('= "st"  # from --staging')
    assert lines["dask_address"].endswith('= "tcp://h:8786"  # from --dask')
    assert lines["timezone"].endswith('= "Asia/Tokyo"  # default')
    assert lines["state_dir"].endswith("= (not set)  # default")
    assert "# pseudonym key: from TRAFFICREPORT_HMAC_KEY (not shown)" in result.stdout
    assert "# TRAFFICREPORT_KEEP_RUN is set but is not a setting: ignored" in result.stdout
    assert key not in result.stdout + result.stderr


def test_the_config_command_exits_2_with_one_line_on_a_wrong_value(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'max_unattributed_share = "five percent"\n')
    result = _config_command(["--config", str(config)], {}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"trafficreport: {config}: max_unattributed_share = 'five percent': expected float"
    ]
    result = _config_command([], {"TRAFFICREPORT_KEEP_RUNS": "many"}, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["trafficreport: TRAFFICREPORT_KEEP_RUNS: keep_runs = 'many': expected int"]


def test_each_exporter_gets_its_collector_settings() -> None:
    from flows.settings import load_settings

    settings = load_settings(
        collector_sampling=(("csv-*", 2048), ("*", 1000)),
        pmacct_renormalized=("pm-*",),
        default_sampling=(("bb-*", 64),),
        nfdump_timezone="UTC",
    )
    csv, pm, bb = (settings.exporter_inputs(name) for name in ("csv-1", "pm-1", "bb-1"))
    assert (csv.collector_sampling, csv.pmacct_renormalized, csv.default_rate) == (2048, None, None)
    assert (pm.collector_sampling, pm.pmacct_renormalized) == (1000, True)
    assert (bb.default_rate, bb.collector_timezone, bb.timezone) == (64, "UTC", settings.timezone)
