"""Prices: custom per-model prices first, then genai-prices (offline, historic).

A model neither knows is *unpriced*: its cost is None, never $0, so a report can say
how much usage has no price instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache

import genai_prices
from genai_prices import Usage, calc_price

MTOK = Decimal(1_000_000)
GENAI_VERSION = f"genai-prices:{genai_prices.__version__}"


@dataclass(frozen=True, slots=True)
class CustomPrice:
    id: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    gpu_second_usd: Decimal | None
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class Priced:
    cost_usd: Decimal | None  # None: unpriced
    price_version: str | None


UNPRICED = Priced(None, None)


@lru_cache(maxsize=4096)
def _genai_unit_prices(model: str, provider: str | None,
                       day: date | None = None) -> tuple[Decimal, Decimal, Decimal] | None:
    """Per-token (input, output, cached input) prices at today's rates, or at the rates of
    ``day`` for usage from the past; cached per model (and day).

    Priced by probing with one million tokens of each kind: calc_price is exact and
    linear below tier thresholds, and the probe keeps the hot path free of lookups
    (a calc_price call costs about a millisecond of CPU).
    """
    ts = datetime.combine(day, time(12), tzinfo=UTC) if day is not None else None
    try:
        inp = calc_price(Usage(input_tokens=1_000_000), model, provider_id=provider,
                         genai_request_timestamp=ts).total_price
        out = calc_price(Usage(output_tokens=1_000_000), model, provider_id=provider,
                         genai_request_timestamp=ts).total_price
        cached = calc_price(Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000), model,
                            provider_id=provider, genai_request_timestamp=ts).total_price
    except LookupError:
        return None
    return Decimal(inp) / MTOK, Decimal(out) / MTOK, Decimal(cached) / MTOK


class PriceBook:
    """Resolves the price of one call. Custom prices are loaded by the service."""

    def __init__(self) -> None:
        self.custom: dict[str, list[CustomPrice]] = {}

    def set_custom(self, prices: list[CustomPrice]) -> None:
        by_model: dict[str, list[CustomPrice]] = {}
        for p in sorted(prices, key=lambda p: p.valid_from, reverse=True):
            by_model.setdefault(p.model, []).append(p)
        self.custom = by_model

    def _custom_for(self, model: str, at: datetime) -> CustomPrice | None:
        for p in self.custom.get(model, ()):
            if p.valid_from <= at:
                return p
        return None

    def price(
        self,
        model: str,
        *,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        gpu_seconds: float = 0.0,
        at: datetime,
        historic: bool = False,
    ) -> Priced:
        custom = self._custom_for(model, at)
        if custom is not None:
            cached_rate = custom.cached_input_per_mtok if custom.cached_input_per_mtok is not None else (
                custom.input_per_mtok
            )
            cost = (
                Decimal(input_tokens - cached_tokens) * custom.input_per_mtok
                + Decimal(cached_tokens) * cached_rate
                + Decimal(output_tokens) * custom.output_per_mtok
            ) / MTOK
            if custom.gpu_second_usd is not None:
                cost += Decimal(str(round(gpu_seconds, 6))) * custom.gpu_second_usd
            return Priced(cost, f"custom:{custom.id}")
        # Usage from the past (ingested spans) is priced at the rates of its day.
        unit = _genai_unit_prices(model, provider, at.astimezone(UTC).date() if historic else None)
        if unit is None:
            return UNPRICED
        inp, out, cached_total = unit
        # cached_total is the price of 1M input tokens all read from cache.
        cost = Decimal(input_tokens - cached_tokens) * inp + Decimal(output_tokens) * out
        if cached_tokens:
            cost += Decimal(cached_tokens) * cached_total
        return Priced(cost, GENAI_VERSION)
