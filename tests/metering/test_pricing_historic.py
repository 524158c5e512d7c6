"""Usage from the past is priced at the rates of its day, from a per-day cache."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import Usage, calc_price

from garrison.metering.pricing import PriceBook


def test_historic_price_matches_genai_prices_for_that_day():
    at = datetime(2025, 6, 1, 15, 30, tzinfo=UTC)
    got = PriceBook().price("gpt-4o", provider="openai", input_tokens=1234, output_tokens=567, cached_tokens=200,
                            at=at, historic=True)
    want = calc_price(Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=200), "gpt-4o",
                      provider_id="openai", genai_request_timestamp=at).total_price
    assert got.cost_usd is not None and abs(got.cost_usd - Decimal(want)) < Decimal("1e-9")


def test_unknown_model_in_the_past_is_unpriced_not_zero():
    got = PriceBook().price("not-a-real-model-zz", provider=None, input_tokens=10, output_tokens=10,
                            at=datetime(2024, 1, 1, tzinfo=UTC), historic=True)
    assert got.cost_usd is None and got.price_version is None
