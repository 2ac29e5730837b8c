"""One typed settings object, resolved once from defaults, an optional TOML file and the environment."""

from __future__ import annotations

import fnmatch
import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from upath import UPath

from flows.failures import UsageError
from flows.storage import storage_path

ENV_PREFIX = "TRAFFICREPORT_"


@dataclass(frozen=True)
class Settings:
    """Where data lives, how to read it, and the audit's limits."""

    # Local folders or s3:// URLs; staging (scratch of one run) is always local.
    landing: UPath = field(default_factory=lambda: storage_path("data/landing"))
    warehouse: UPath = field(default_factory=lambda: storage_path("data/warehouse"))
    staging: Path = Path("data/staging")
    timezone: str = "Asia/Tokyo"
    # Exporter name (glob) -> service whose traffic it meters; first match wins.
    exporter_services: tuple[tuple[str, str], ...] = (("mobile*", "mobile"), ("*", "broadband"))
    # The exporters expected under <landing>/flows (empty: any folder is an exporter). With an
    # inventory, a folder not in it (a copy such as `mobile-gw-1.bak`) is refused by name.
    exporters: tuple[str, ...] = ()
    # Exporter name (glob) -> 1-in-N rate used only when the exporter announces none.
    default_sampling: tuple[tuple[str, int], ...] = ()
    # Exporter name (glob) -> 1-in-N rate that replaces whatever the exporter announces.
    sampling_override: tuple[tuple[str, int], ...] = ()
    # Local time zone of nfdump CSV timestamps (nfdump prints local time without a zone).
    nfdump_timezone: str = "Asia/Tokyo"
    # Where exporter state (templates, sampling, sequence numbers) survives between runs, and
    # where set-aside input goes; both default to folders beside the staging area.
    state_dir: Path | None = None
    quarantine_dir: Path | None = None
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
    # A month's interface counters must cover this share of it on every interface to be published.
    min_counter_coverage: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.state_dir or self.staging.parent / "state"

    @property
    def lock_dir(self) -> Path:
        """Where a run's file lock of its week or month is held (flows.locks)."""
        return self.state_path / "locks"

    @property
    def quarantine_path(self) -> Path:
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


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then `config` (TOML), then TRAFFICREPORT_* variables, then explicit overrides."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            values.update(tomllib.loads(config.read_text()))
        except OSError as exc:
            raise UsageError(f"{config}: cannot read the settings file ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{config}: not TOML ({exc})") from None
    for name in (
        "landing",
        "warehouse",
        "staging",
        "timezone",
        "hmac_key_file",
        "state_dir",
        "quarantine_dir",
        "nfdump_timezone",
        "hmac_key_secret",
        "dask_address",
        "one_run_per_week",
        "keep_staging",
    ):
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("landing", "warehouse"):
        if name in values:
            values[name] = storage_path(values[name])
    for name in ("one_run_per_week", "keep_staging"):
        if isinstance(values.get(name), str):
            values[name] = values[name].strip().lower() not in ("0", "false", "no", "off")
    for name in ("staging", "hmac_key_file", "state_dir", "quarantine_dir"):
        if name in values:
            values[name] = Path(values[name])
    for name in ("exporter_services", "default_sampling", "sampling_override"):
        if isinstance(values.get(name), dict):
            values[name] = tuple(values[name].items())
    if isinstance(values.get("exporters"), list | str):
        exporters = values["exporters"]
        names = exporters.split(",") if isinstance(exporters, str) else exporters
        values["exporters"] = tuple(str(name).strip() for name in names if str(name).strip())
    where = str(config) if config is not None else "settings"
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"{where}: unknown settings {', '.join(unknown)}")
    defaults = Settings()
    for name, value in values.items():
        default = getattr(defaults, name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = True
        if not ok:
            raise UsageError(f"{where}: {name} = {value!r}: expected {type(default).__name__}")
    return replace(defaults, **values)
