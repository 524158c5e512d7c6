"""State layer settings: GARRISON_STATE_* environment variables, else ``[state]`` in garrison.toml."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings, loose_flag
from garrison.state.checkpoint.engine import SYNCHRONOUS


class StateSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_STATE_", extra="ignore")

    # Encrypt checkpoint blobs with a key kept in the data dir (state.key).
    encrypt: bool = False
    # NORMAL (commits survive a killed process) or FULL (they survive the database host losing
    # power too; slower puts). Unset: NORMAL on SQLite, the server's synchronous_commit on PostgreSQL.
    synchronous: str | None = None
    # Seconds between retention passes; 0 or less: no background retention.
    retention_interval_s: float = 3600.0

    # as before: 1, true or yes turn it on, anything else leaves it off
    _flag = field_validator("encrypt", mode="before")(staticmethod(loose_flag))

    @field_validator("synchronous", mode="before")
    @classmethod
    def _synchronous(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        text = str(value).upper()
        if text not in SYNCHRONOUS:
            raise ValueError(f"must be one of {SYNCHRONOUS}, not {text!r}")
        return text
