"""Wire contract of the telemetry API (query answers are documented in docs/telemetry.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from garrison.core.inputs import DbText


class ExporterIn(BaseModel):
    endpoint: DbText = Field(max_length=1024, description="OTLP/HTTP traces URL, e.g. http://phoenix:6006/v1/traces")
    headers: dict[DbText, DbText] = Field(default_factory=dict, max_length=32)
    enabled: bool = True
    include_content: bool = Field(
        default=False,
        description="Forward captured message content (prompts, completions, tool arguments) with the spans. "
                    "Has effect only when the server captures content (GARRISON_TELEMETRY_CAPTURE_CONTENT).")

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not (value.startswith("http://") or value.startswith("https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, v in value.items():
            if not name or len(name) > 128 or any(c in name for c in " :\r\n") or len(v) > 4096 or "\n" in v:
                raise ValueError(f"header {name[:40]!r} is not a valid HTTP header")
        return value


class ExporterOut(BaseModel):
    endpoint: str
    enabled: bool
    include_content: bool
    content_captured: bool
    header_names: list[str]
