"""Wire contract of the metering API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from garrison.core.inputs import DbText, DbTime


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["tenant", "key", "user", "session", "agent"]
    scope_id: DbText | None = Field(default=None, max_length=200, description="default: the caller's tenant")
    window: Literal["day", "week", "month", "total"] = "month"
    limit_usd: Decimal = Field(ge=0, max_digits=20, decimal_places=10)
    tenant_id: DbText | None = Field(default=None, max_length=40, description="operator admin only")


class BudgetOut(BaseModel):
    id: str
    tenant_id: str
    scope: str
    scope_id: str
    window: str
    limit_usd: str
    spent_usd: str
    reserved_usd: str
    remaining_usd: str
    window_start: datetime
    window_end: datetime | None


class PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: DbText = Field(min_length=1, max_length=200)
    input_per_mtok: Decimal = Field(ge=0, max_digits=20, decimal_places=10, description="USD per 1M input tokens")
    output_per_mtok: Decimal = Field(ge=0, max_digits=20, decimal_places=10)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0, max_digits=20, decimal_places=10)
    gpu_second_usd: Decimal | None = Field(default=None, ge=0, max_digits=20, decimal_places=10,
                                           description="USD per GPU-second of request time")
    valid_from: DbTime | None = None


class PriceOut(BaseModel):
    id: str
    model: str
    input_per_mtok: str
    output_per_mtok: str
    cached_input_per_mtok: str | None
    gpu_second_usd: str | None
    valid_from: datetime
