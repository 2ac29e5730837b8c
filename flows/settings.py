"""One typed settings object, resolved once from defaults, an optional TOML file and the environment."""

from __future__ import annotations

import fnmatch
import os
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "TRAFFICREPORT_"


@dataclass(frozen=True)
class Settings:
    """Where data lives, how to read it, and the audit's limits."""

    landing: Path = Path("data/landing")
    warehouse: Path = Path("data/warehouse")
    staging: Path = Path("data/staging")
    timezone: str = "Asia/Tokyo"
    # Exporter name (glob) -> service whose traffic it meters; first match wins.
    exporter_services: tuple[tuple[str, str], ...] = (("mobile*", "mobile"), ("*", "broadband"))
    # Exporter name (glob) -> 1-in-N rate used only when the exporter announces none.
    default_sampling: tuple[tuple[str, int], ...] = ()
    hmac_key_file: Path = Path("data/secret/hmac.key")
    max_unattributed_share: float = 0.05
    max_quarantined_share: float = 0.001
    session_horizon_days: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def service_of(self, exporter: str) -> str:
        for pattern, service in self.exporter_services:
            if fnmatch.fnmatch(exporter, pattern):
                return service
        return "broadband"

    def default_rate_of(self, exporter: str) -> int | None:
        for pattern, rate in self.default_sampling:
            if fnmatch.fnmatch(exporter, pattern):
                return rate
        return None

    def hmac_key(self, create: bool = False) -> bytes:
        """The pseudonym key: $TRAFFICREPORT_HMAC_KEY, else the key file (created 0600 if asked)."""
        from_env = os.environ.get(ENV_PREFIX + "HMAC_KEY")
        if from_env:
            return from_env.encode()
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


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults, then `config` (TOML), then TRAFFICREPORT_* variables, then explicit overrides."""
    values: dict[str, Any] = {}
    if config is not None:
        values.update(tomllib.loads(config.read_text()))
    for name in ("landing", "warehouse", "staging", "timezone", "hmac_key_file"):
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("landing", "warehouse", "staging", "hmac_key_file"):
        if name in values:
            values[name] = Path(values[name])
    for name in ("exporter_services", "default_sampling"):
        if isinstance(values.get(name), dict):
            values[name] = tuple(values[name].items())
    return replace(Settings(), **values)
