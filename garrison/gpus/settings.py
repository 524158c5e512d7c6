"""GPU layer settings: GARRISON_GPUS_* environment variables, else ``[gpus]`` in garrison.toml."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationInfo, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings, loose_flag

# Each number's range: a value outside it (or not a number) stops the start.
RANGES: dict[str, tuple[float, float]] = {
    "cycle_s": (0.05, 60), "starvation_s": (1, 7 * 86400), "half_life_s": (1, 30 * 86400),
    "fairshare_k": (0, 10), "meter_s": (1, 3600),
}


class GpuSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_GPUS_", extra="ignore")

    launcher: bool = False  # run the command of scheduled workloads on this host ("1", "true", "yes")
    node: str | None = None  # this host's node name in the inventory, for the launcher
    cycle_s: float = 1.0  # the longest wait between scheduling cycles
    starvation_s: float = 1800.0  # pending this long: served first in its queue
    half_life_s: float = 3600.0  # half-life of the usage history behind fair share
    fairshare_k: float = 1.0  # strength of the time-based fair-share correction (0: off)
    meter_s: float = 60.0  # how often running work's GPU-seconds go to the resource meter

    # as before: 1, true or yes turn it on, anything else leaves it off
    _flag = field_validator("launcher", mode="before")(staticmethod(loose_flag))

    @field_validator("node", mode="before")
    @classmethod
    def _node(cls, value: Any) -> Any:
        return value or None

    @field_validator("cycle_s", "starvation_s", "half_life_s", "fairshare_k", "meter_s", mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> float:
        if value is None or value == "":
            raise PydanticUseDefault()
        low, high = RANGES[info.field_name or ""]
        try:
            number = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            number = float("nan")
        if not low <= number <= high:
            raise ValueError(f"must be a number from {low:g} to {high:g}, not {value!r}")
        return number
