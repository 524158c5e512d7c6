"""Cost of one model call from genai-prices (offline), cached per model.

A model genai-prices does not know is unpriced: cost None, never $0.
"""

from __future__ import annotations

from functools import lru_cache

from genai_prices import Usage, calc_price

MTOK = 1_000_000


@lru_cache(maxsize=4096)
def _unit_prices(model: str, provider: str | None) -> tuple[float, float, float] | None:
    """Per-token (input, output, cached input) prices; probing with 1M tokens keeps it exact below tiers."""
    try:
        inp = calc_price(Usage(input_tokens=MTOK), model, provider_id=provider).total_price
        out = calc_price(Usage(output_tokens=MTOK), model, provider_id=provider).total_price
        cached = calc_price(Usage(input_tokens=MTOK, cache_read_tokens=MTOK), model, provider_id=provider).total_price
    except (LookupError, ValueError):
        if provider is not None:
            return _unit_prices(model, None)
        return None
    return float(inp) / MTOK, float(out) / MTOK, float(cached) / MTOK


def cost_usd(model: str | None, provider: str | None, input_tokens: int, output_tokens: int,
             cached_tokens: int = 0) -> float | None:
    if not model:
        return None
    unit = _unit_prices(model, provider)
    if unit is None:
        return None
    inp, out, cached = unit
    cached_tokens = min(cached_tokens, input_tokens)  # input includes cached tokens
    return round((input_tokens - cached_tokens) * inp + cached_tokens * cached + output_tokens * out, 10)
