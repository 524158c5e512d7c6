"""Settings: GARRISON_* environment variables, then an optional garrison.toml.

Every setting has a default that works on one machine. The core settings (``Settings``) are
the file's top-level keys; a layer's settings (``LayerSettings``, ``GARRISON_<LAYER>_*``) are
the keys of its table ``[<layer>]``, lower-case and without the prefix. The environment wins.
"""

from __future__ import annotations

import importlib
import logging
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

log = logging.getLogger("garrison.config")

# The modules that hold each layer's settings classes (subclasses of LayerSettings), by table:
# what check_config_file imports to know a table's keys. A layer absent from the installation is skipped.
LAYER_SETTINGS_MODULES: dict[str, tuple[str, ...]] = {
    "sandbox": ("garrison.sandbox.config",),
    "runtime": ("garrison.runtime.settings", "garrison.runtime.sessions", "garrison.runtime.sandboxed_steps",
                "garrison.runtime.deps"),
    "telemetry": ("garrison.telemetry.config",),
    "llm": ("garrison.llm.settings",),
    "registry": ("garrison.registry.config",),
    "tools": ("garrison.tools.config",),
    "state": ("garrison.state.settings",),
    "gpus": ("garrison.gpus.settings",),
}


class ConfigError(ValueError):
    """A setting from the environment or garrison.toml that garrison cannot use (says which and why)."""


def _toml_path() -> Path:
    return Path(os.environ.get("GARRISON_CONFIG", "garrison.toml"))


config_path = _toml_path


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed file; invalid TOML is a ConfigError naming the file."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


class TableSource(TomlConfigSettingsSource):
    """garrison.toml for one settings class: the top-level keys (``table`` None), or the keys of
    ``[table]`` that start with ``prefix``, without it (``[runtime] session_idle_timeout_s`` is
    ``idle_timeout_s`` of the GARRISON_RUNTIME_SESSION_ settings)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, table: str | None = None,
                 prefix: str = "") -> None:
        self.table, self.prefix = table, prefix
        super().__init__(settings_cls, toml_file=path, toml_table_header=())

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = read_config_file(Path(file_path))
        if self.table is None:
            return data
        section = data.get(self.table)
        if section is None:
            return {}
        if not isinstance(section, dict):
            raise ConfigError(f"{file_path}: {self.table} must be a table ([{self.table}]), not a "
                              f"{type(section).__name__}")
        return {k[len(self.prefix):]: v for k, v in section.items() if k.startswith(self.prefix)}


def _explain(cls: type[BaseSettings], exc: ValidationError, init: dict[str, Any], table: str | None,
             prefix: str) -> str | None:
    """One line per error naming where the value came from (an environment variable, or the file,
    table and key); None when every error is in values passed by code (the ValidationError stands)."""
    env_prefix = str(cls.model_config.get("env_prefix", "")).upper()
    env = {k.upper() for k in os.environ}
    path = _toml_path()
    by_alias = {(f.alias or name): name for name, f in cls.model_fields.items()}
    lines, outside = [], False
    for err in exc.errors():
        loc = err.get("loc") or ()
        name = by_alias.get(str(loc[0]), str(loc[0])) if loc else ""
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        if name in init or not name:
            where = name or cls.__name__
        elif f"{env_prefix}{name}".upper() in env:
            where, outside = f"{env_prefix}{name.upper()}", True
        else:
            key = f"{prefix}{name}"
            where, outside = (f"{path} [{table}] {key}" if table else f"{path} {key}"), True
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") != "value_error" and "input" in err:
            message += f" (got {err['input']!r})"
        lines.append(f"{where}{rest}: {message}")
    if not outside:
        return None
    return "; ".join(lines)


class _FileBackedSettings(BaseSettings):
    """Arguments, then the environment, then garrison.toml (its top level, or the class's
    ``[table]``); a bad value is a ConfigError naming the variable, or the file, table and key."""

    @classmethod
    def toml_table(cls) -> tuple[str | None, str]:
        """The table of garrison.toml this class reads (None: the top level) and the start of its keys."""
        return None, ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path()
        if not path.is_file():
            return init_settings, env_settings
        return init_settings, env_settings, TableSource(settings_cls, path, *cls.toml_table())

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            message = _explain(type(self), exc, values, *type(self).toml_table())
            if message is None:
                raise
            raise ConfigError(message) from None


class Settings(_FileBackedSettings):
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
        path = _toml_path()
        return {
            "config_file": str(path.resolve()) if path.is_file() else f"none ({path} not found)",
            "data_dir": str(self.data_dir.resolve()),
            "listen": f"{self.host}:{self.port}",
            "database": url,
            "redis": "in-process" if not self.redis_url else "configured",
            "temporal": self.temporal_address or "embedded dev server",
            "policy_mode": self.policy_mode,
            "tls": bool(self.tls_certfile),
            "mtls": bool(self.tls_client_ca),
        }


def loose_flag(value: Any) -> bool:
    """A flag as garrison's older variables read it: 1, true or yes (any case) turn it on, any
    other text leaves it off. For a layer class: ``_flag = field_validator("x", mode="before")(
    staticmethod(loose_flag))``."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


class LayerSettings(_FileBackedSettings):
    """Base of a layer's settings: ``GARRISON_<LAYER>_<NAME>`` environment variables, else the key
    ``<name>`` of the table ``[<layer>]`` of garrison.toml (the part of ``env_prefix`` after
    GARRISON_ names the table; the rest of it starts the key). Classes sharing a table share it:
    ``GARRISON_RUNTIME_SESSION_IDLE_TIMEOUT_S`` is ``[runtime] session_idle_timeout_s``. A bad value
    is a ConfigError naming the variable, or the file, table and key."""

    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")
    tables: ClassVar[dict[str, list[type[LayerSettings]]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        table, _ = cls.toml_table()
        if cls.__module__.startswith("garrison.") and table:
            known = LayerSettings.tables.setdefault(table, [])
            known[:] = [c for c in known if c.__qualname__ != cls.__qualname__ or c.__module__ != cls.__module__]
            known.append(cls)

    @classmethod
    def toml_table(cls) -> tuple[str, str]:
        """The table of garrison.toml this class reads and the start of its keys there."""
        rest = str(cls.model_config.get("env_prefix", "")).upper().removeprefix("GARRISON_").lower()
        table, _, prefix = rest.partition("_")
        return table, prefix

    @classmethod
    def toml_keys(cls) -> set[str]:
        _, prefix = cls.toml_table()
        return {prefix + (f.alias or name) for name, f in cls.model_fields.items()}



def _warn(message: str, log_it: bool) -> None:
    if log_it:
        log.warning(message)


def check_config_file(path: Path | None = None, *, log_warnings: bool = True) -> list[str]:
    """At start-up: garrison.toml (if there is one) parses, every key of a layer's table is a
    setting of that layer and every value there is valid (ConfigError naming the file, table
    and key otherwise). A table that matches no layer present, and a top-level key that is no core
    setting, is logged as a warning and ignored. Returns the warnings."""
    path = path or _toml_path()
    if not path.is_file():
        return []
    data = read_config_file(path)
    core = {(f.alias or name) for name, f in Settings.model_fields.items()}
    warnings: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict):
            if key not in core:
                warnings.append(f"{path}: {key} is not a garrison setting (top-level keys are the core settings, "
                                "GARRISON_* without a layer); it is ignored")
                _warn(warnings[-1], log_warnings)
            continue
        classes = _layer_classes(key)
        if not classes:
            known = ", ".join(sorted(t for t in LAYER_SETTINGS_MODULES if _layer_classes(t)))
            warnings.append(f"{path}: [{key}] matches no garrison layer present (tables: {known}); it is ignored")
            _warn(warnings[-1], log_warnings)
            continue
        allowed = set().union(*(c.toml_keys() for c in classes))
        unknown = sorted(k for k in value if k not in allowed)
        if unknown:
            raise ConfigError(f"{path} [{key}] {unknown[0]}: not a setting of the {key} layer"
                              + (f" (nor {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
                              + f"; its settings are: {', '.join(sorted(allowed))}")
        for cls in classes:
            cls()  # a bad value: ConfigError naming the file, table and key
    return warnings


def _layer_classes(table: str) -> list[type[LayerSettings]]:
    for module in LAYER_SETTINGS_MODULES.get(table, ()):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a layer absent from this installation
            if not (exc.name and module.startswith(exc.name)):
                raise
    return list(LayerSettings.tables.get(table, []))
