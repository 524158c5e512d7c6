"""Settings: GARRISON_* environment variables, then an optional garrison.toml.

Every setting has a default that works on one machine.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _toml_path() -> Path:
    return Path(os.environ.get("GARRISON_CONFIG", "garrison.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    data_dir: Path = Field(default=Path("./.garrison"), description="Where garrison keeps its files.")
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=1, le=65535)
    database_url: str | None = Field(default=None, description="Default: SQLite in the data dir.")
    redis_url: str | None = Field(default=None, description="Unset: counters and caches in process.")
    temporal_address: str | None = Field(default=None, description="Unset: embedded dev server.")

    # Security.
    policy_mode: Literal["enforce", "log_only"] = "enforce"
    token_max_ttl_s: int = Field(default=24 * 3600, ge=60)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_ca: Path | None = Field(default=None, description="Set to require client certificates (mTLS).")

    # Audit.
    audit_flush_ms: int = Field(default=50, ge=1, le=100)
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=10.0, gt=0)

    log_level: str = Field(default="INFO", pattern="^(?i)(debug|info|warning|error)$")

    # Request limits.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not (value.startswith("sqlite") or value.startswith("postgresql")):
            raise ValueError("GARRISON_DATABASE_URL must be a sqlite:// or postgresql+psycopg:// URL")
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite"):
                url = "sqlite+aiosqlite://" + url.split("://", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'garrison.db').resolve()}"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_certfile else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        return self.data_dir

    def describe(self) -> dict[str, Any]:
        """What is in use, for `garrison doctor` (secrets masked)."""
        from sqlalchemy.engine import make_url

        url = make_url(self.resolved_database_url).render_as_string(hide_password=True)
        return {
            "data_dir": str(self.data_dir.resolve()),
            "listen": f"{self.host}:{self.port}",
            "database": url,
            "redis": "in-process" if not self.redis_url else "configured",
            "temporal": self.temporal_address or "embedded dev server",
            "policy_mode": self.policy_mode,
            "tls": bool(self.tls_certfile),
            "mtls": bool(self.tls_client_ca),
        }
