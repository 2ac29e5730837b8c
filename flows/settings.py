"""One typed settings object, resolved once from defaults, an optional TOML file, the environment
and explicit values (command-line flags).

Every setting can come from each source; the later wins: defaults < the TOML file (`--config`) <
`TRAFFICREPORT_<NAME>` environment variables < explicit values (`load_settings(**overrides)`, the
CLI's `--landing --warehouse --staging --dask`). Values are validated when loaded: a value of the
wrong type or an unknown name is a `UsageError` naming the source (file, variable or flag), the
setting, the value and the type expected. `trafficreport config` prints every setting, its value
and where it came from.

Text forms (of environment variables, which are text; in the TOML file numbers and booleans must
be TOML numbers and booleans, lists and tables may also be given as text):
- numbers: `0.1`, `5`; booleans: 1/0, true/false, yes/no, on/off (any case);
- `exporters`: comma-separated names (`bb-tokyo-1,mobile-gw-1`) or a JSON list;
- `exporter_services`, `default_sampling`, `sampling_override`, `collector_sampling`: comma-separated `pattern=value`
  pairs in order (`mobile*=mobile,*=broadband`, `bb-*=1024`) or a JSON object. In TOML they are
  tables (`[exporter_services]` with `"mobile*" = "mobile"`), order kept.
An empty variable counts as unset.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import secrets
import tempfile
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from upath import UPath

from flows import storage
from flows.failures import UsageError
from flows.flow_files import ExporterInputs
from flows.storage import AnyPath, storage_path

ENV_PREFIX = "TRAFFICREPORT_"
# Variables with the prefix that are not settings: the pseudonym key (never a setting, so never
# printed or stored), --debug, failpoints of the tests, the deployment's checkout folder.
NOT_SETTINGS = frozenset({"HMAC_KEY", "DEBUG", "FAILPOINT", "HOME"})


def _to_storage_path(value: Any) -> UPath:
    if isinstance(value, UPath):
        return value
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ValueError("expected a folder or a URL")
    return storage_path(value)


# A local folder or a URL (s3://...): a UPath made by flows.storage.storage_path (the S3 endpoint
# from the environment); written as its text, e.g. in a Prefect flow run's parameters.
StoragePath = Annotated[
    UPath,
    PlainValidator(_to_storage_path),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": "a local folder or an s3:// URL"}),
]


def _pairs(value: Any) -> Any:
    """A mapping setting as (pattern, value) pairs in order, from a table (dict), pairs, JSON
    text or `pattern=value,pattern=value` text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not JSON") from None
        else:
            pairs = []
            for item in text.split(","):
                if not item.strip():
                    continue
                pattern, equals, setting = item.rpartition("=")
                if not equals or not pattern.strip():
                    raise ValueError(f"{item.strip()!r} is not pattern=value")
                pairs.append((pattern.strip(), setting.strip()))
            return tuple(pairs)
    if isinstance(value, Mapping):
        return tuple(value.items())
    return value


def _names(value: Any) -> Any:
    """The exporter inventory from a list, JSON text or comma-separated text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not JSON") from None
        else:
            value = text.split(",")
    if isinstance(value, list | tuple):
        stripped = (name.strip() if isinstance(name, str) else name for name in value)
        return tuple(name for name in stripped if name != "")
    return value


class Settings(BaseSettings):
    """Where data lives, how to read it, and the audit's limits.

    `Settings()` is the defaults with the environment on top, `Settings(name=value)` puts values on
    top of both; `load_settings()` adds the TOML file between the defaults and the environment and
    turns a wrong value into one line naming where it came from. Frozen: make a changed copy with
    `settings.model_copy(update={...})` (not validated: give values of the fields' types)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    # Local folders or s3:// (any fsspec) URLs. Staging holds a run's decoded flows and partial
    # aggregates; in object storage, Dask workers need no shared filesystem.
    landing: StoragePath = Field(default_factory=lambda: storage_path("data/landing"))
    warehouse: StoragePath = Field(default_factory=lambda: storage_path("data/warehouse"))
    staging: StoragePath = Field(default_factory=lambda: storage_path("data/staging"))
    timezone: str = "Asia/Tokyo"
    # Exporter name (glob) -> service whose traffic it meters; first match wins.
    exporter_services: Annotated[tuple[tuple[str, str], ...], NoDecode] = (("mobile*", "mobile"), ("*", "broadband"))
    # The exporters expected under <landing>/flows (empty: any folder is an exporter). With an
    # inventory, a folder not in it (a copy such as `mobile-gw-1.bak`) is refused by name.
    exporters: Annotated[tuple[str, ...], NoDecode] = ()
    # Exporter name (glob) -> 1-in-N rate used only when the exporter announces none.
    default_sampling: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    # Exporter name (glob) -> 1-in-N rate that replaces whatever the exporter announces.
    sampling_override: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    # Exporter name (glob) -> 1-in-N rate its collector already multiplied counts by, for files
    # that do not say it (nfdump CSV; nfcapd files without sampler records). Without it the rate
    # is inferred from the counts, and the reconciliation's tolerance says so.
    collector_sampling: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()
    # Exporter names (globs) whose pmacct files nfacctd renormalised (`nfacctd_renormalize: true`).
    # Needed only when its files print no SAMPLING_RATE; else each row's printed rate tells.
    pmacct_renormalized: Annotated[tuple[str, ...], NoDecode] = ()
    # The collector's local time zone: of nfdump CSV timestamps (nfdump prints local time without
    # a zone) and of the times in nfcapd's and pmacct's file names.
    nfdump_timezone: str = "Asia/Tokyo"
    # Where exporter state (templates, sampling, sequence numbers) survives between runs, and
    # where set-aside input goes; both default to folders beside the staging area (in object
    # storage too, when staging is there).
    state_dir: StoragePath | None = None
    quarantine_dir: StoragePath | None = None
    hmac_key_file: Path = Path("data/secret/hmac.key")
    # Name of a Prefect Secret block holding the pseudonym key (used when the variable is unset).
    hmac_key_secret: str | None = None
    max_unattributed_share: float = 0.05
    max_quarantined_share: float = 0.001
    max_session_silence_hours: int = 48
    # Drift against the previously published week: relative change of users and of mean usage
    # per (service, direction), and change of each port share in percentage points.
    max_user_change: float = 0.3
    max_mean_change: float = 0.5
    max_port_share_change: float = 10.0
    # Drift is checked against the latest published week at most this many weeks before: weeks a
    # year apart (a backfill of analysed weeks) legitimately differ by more than a week-to-week limit.
    drift_window_weeks: int = 8
    # Flows vs RADIUS counters per broadband user over the week: tolerance floor + edge-time
    # share + z / sqrt(expected sampled packets); the audit fails above this share of users outside it.
    reconcile_z: float = 4.0
    reconcile_floor: float = 0.03
    max_unreconciled_share: float = 0.02
    # Publications of a week kept (the current one included); older runs' files are removed.
    keep_runs: int = 3
    # Hold a Prefect global concurrency slot per week (or month) while running it. A run killed
    # outright keeps its slot until the slot's lease expires (5 minutes).
    one_run_per_week: bool = True
    # Keep a run's staging folder (decoded flows, partial aggregates) after it ends, for debugging.
    keep_staging: bool = False
    # A Dask scheduler (tcp://host:8786) to run the per-exporter tasks on; None runs them locally.
    # Its workers must reach the landing zone, warehouse and staging folder, and the Prefect API.
    dask_address: str | None = None
    # On a Dask cluster, an exporter's staged parts are attributed in tasks of about this many
    # records each (a task per part at least); locally each exporter is one task.
    task_records: int = Field(default=4_000_000, gt=0)
    # Threads one ingest or attribution task computes on: the CPUs each worker (or this machine) has.
    task_threads: int = Field(default=2, gt=0)
    # A month's interface counters must cover this share of it on every interface to be published.
    min_counter_coverage: float = 0.95

    MAPPINGS: ClassVar[dict[str, str]] = {
        "exporter_services": "service",
        "default_sampling": "rate",
        "sampling_override": "rate",
        "collector_sampling": "rate",
    }

    _mapping = field_validator(
        "exporter_services", "default_sampling", "sampling_override", "collector_sampling", mode="before"
    )(_pairs)
    _inventory = field_validator("exporters", "pmacct_renormalized", mode="before")(_names)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values given > TRAFFICREPORT_* variables > defaults; no .env file, no secrets folder
        # (the pseudonym key is read by hmac_key(), never held in the settings).
        return init_settings, env_settings

    @property
    def state_path(self) -> AnyPath:
        return self.state_dir or self.staging.parent / "state"

    @property
    def lock_dir(self) -> Path:
        """Where a run's file lock of its week or month is held (flows.locks): a local folder, also
        when the state is in object storage (runs on other machines are then kept apart by the
        Prefect server's concurrency limit)."""
        if storage.is_local(self.state_path):
            return storage.local_path(self.state_path) / "locks"
        # One folder per state location: deployments with other stores do not share locks.
        digest = hashlib.sha256(str(self.state_path).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"trafficreport-locks-{digest}"

    @property
    def quarantine_path(self) -> AnyPath:
        return self.quarantine_dir or self.staging.parent / "quarantine"

    def service_of(self, exporter: str) -> str:
        for pattern, service in self.exporter_services:
            if fnmatch.fnmatch(exporter, pattern):
                return service
        return "broadband"

    def default_rate_of(self, exporter: str) -> int | None:
        return _first_match(self.default_sampling, exporter)

    def override_rate_of(self, exporter: str) -> int | None:
        return _first_match(self.sampling_override, exporter)

    def exporter_inputs(self, exporter: str) -> ExporterInputs:
        """How `exporter`'s files are found and read."""
        return ExporterInputs(
            default_rate=self.default_rate_of(exporter),
            override_rate=self.override_rate_of(exporter),
            collector_sampling=_first_match(self.collector_sampling, exporter),
            pmacct_renormalized=True
            if any(fnmatch.fnmatch(exporter, pattern) for pattern in self.pmacct_renormalized)
            else None,
            collector_timezone=self.nfdump_timezone,
            timezone=self.timezone,
            threads=self.task_threads,
        )

    def hmac_key(self, create: bool = False) -> bytes:
        """The pseudonym key: $TRAFFICREPORT_HMAC_KEY, else the Prefect Secret block named by
        `hmac_key_secret`, else the key file (created with mode 0600 if asked)."""
        from_env = os.environ.get(ENV_PREFIX + "HMAC_KEY")
        if from_env:
            return from_env.encode()
        if self.hmac_key_secret:
            from prefect.blocks.system import Secret

            value = Secret.load(self.hmac_key_secret).get()  # type: ignore[union-attr]
            if not value:
                raise RuntimeError(f"Prefect Secret block {self.hmac_key_secret!r} holds an empty pseudonym key")
            return str(value).encode()
        if not self.hmac_key_file.exists():
            if not create:
                raise RuntimeError(
                    f"no pseudonym key: set {ENV_PREFIX}HMAC_KEY or create {self.hmac_key_file} (the demo creates one)"
                )
            self.hmac_key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.hmac_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return self.hmac_key_file.read_text().strip().encode()


def _first_match(patterns: tuple[tuple[str, int], ...], name: str) -> int | None:
    for pattern, rate in patterns:
        if fnmatch.fnmatch(name, pattern):
            return int(rate)
    return None


def _scalar(name: str) -> type | None:
    """bool, int or float for a setting of that type (None for the others)."""
    annotation: Any = Settings.model_fields[name].annotation
    return annotation if annotation in (bool, int, float) else None


def expected_type(name: str) -> str:
    """What a setting takes, in words, for error messages."""
    if name in Settings.MAPPINGS:
        kind = Settings.MAPPINGS[name]
        value = "int" if kind == "rate" else "str"
        return f"table of pattern = {value} (or text pattern={kind},pattern={kind},...)"
    if name == "exporters":
        return "list of str (or comma-separated text)"
    annotation = Settings.model_fields[name].annotation
    if name in ("landing", "warehouse", "staging", "state_dir", "quarantine_dir"):
        return "str (a folder or an s3:// URL)"
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(arguments) == 1:
        annotation = arguments[0]
    if annotation is Path:
        return "str (a path)"
    if annotation is bool:
        return "bool (true/false; in the environment also 1/0, yes/no, on/off)"
    return getattr(annotation, "__name__", str(annotation))


def _native_type_ok(name: str, value: Any) -> bool:
    """A value from TOML or given in code must already have a number's or a boolean's type
    (`keep_runs = "3"` is refused); text is converted only when it comes from the environment."""
    kind = _scalar(name)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _environment() -> tuple[dict[str, Any], dict[str, str]]:
    """The settings set by TRAFFICREPORT_* variables (read as pydantic-settings reads them for
    `Settings()`), and each one's variable name."""
    values = EnvSettingsSource(Settings)()
    names = {key.upper(): key for key in os.environ}
    variables = {name: names.get((ENV_PREFIX + name).upper(), ENV_PREFIX + name.upper()) for name in values}
    return values, variables


def unused_variables() -> list[str]:
    """TRAFFICREPORT_* variables that are neither settings nor known to the project (a typo?)."""
    known = {name.upper() for name in Settings.model_fields} | NOT_SETTINGS
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX) and name.upper().removeprefix(ENV_PREFIX) not in known
    )


def resolve_settings(
    config: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """The settings, and where each came from: "default", the TOML file, the variable
    (TRAFFICREPORT_...), or the flag (`flags` maps setting names to the command's flags; other
    explicit values are "override"). Explicit values of None are not given."""
    layers: list[tuple[dict[str, Any], dict[str, str]]] = []
    if config is not None:
        try:
            from_file = tomllib.loads(config.read_text())
        except OSError as exc:
            raise UsageError(f"{config}: cannot read the settings file ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{config}: not TOML ({exc})") from None
        layers.append((from_file, dict.fromkeys(from_file, str(config))))
    layers.append(_environment())
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    layers.append((given, {name: (flags or {}).get(name, "override") for name in given}))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, where in layers:
        unknown = sorted(set(layer) - set(Settings.model_fields))
        if unknown:
            raise UsageError(f"{where[unknown[0]]}: unknown settings {', '.join(unknown)}")
        values.update(layer)
        sources.update(where)
    for name, value in values.items():
        if not sources[name].startswith(ENV_PREFIX) and not _native_type_ok(name, value):
            raise UsageError(f"{sources[name]}: {name} = {_shown(value)}: expected {expected_type(name)}")
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        if name not in values:
            raise UsageError(f"settings: {error['msg']}") from None
        raise UsageError(f"{sources[name]}: {name} = {_shown(values[name])}: expected {expected_type(name)}") from None
    return settings, {name: sources.get(name, "default") for name in Settings.model_fields}


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then `config` (TOML), then TRAFFICREPORT_* variables, then explicit overrides
    (None: not given); a wrong or unknown setting is a UsageError naming its source."""
    return resolve_settings(config, overrides)[0]


def format_value(name: str, value: Any) -> str:
    """A setting's value as it would be written in the TOML file (None: "(not set)")."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if name in Settings.MAPPINGS:
        pairs = ", ".join(f"{json.dumps(str(pattern))} = {format_value('', item)}" for pattern, item in value)
        return "{ " + pairs + " }" if pairs else "{}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_value("", item) for item in value) + "]"
    return json.dumps(str(value))
