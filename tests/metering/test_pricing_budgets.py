"""Prices and budget arithmetic (pure, no store)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from garrison.metering.budgets import BudgetBook, BudgetExceeded, BudgetState, window_bounds
from garrison.metering.pricing import CustomPrice, PriceBook

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)


def test_known_model_is_priced_from_genai_prices():
    book = PriceBook()
    p = book.price("gpt-4o", provider="openai", input_tokens=1_000_000, output_tokens=1_000_000, at=NOW)
    assert p.cost_usd == Decimal("12.5")  # $2.5 in + $10 out per MTok
    assert p.price_version.startswith("genai-prices:")


def test_cached_tokens_are_cheaper():
    book = PriceBook()
    full = book.price("gpt-4o", provider="openai", input_tokens=1000, output_tokens=0, at=NOW).cost_usd
    cached = book.price("gpt-4o", provider="openai", input_tokens=1000, output_tokens=0, cached_tokens=1000,
                        at=NOW).cost_usd
    assert cached is not None and full is not None and cached < full


def test_unknown_model_is_unpriced_not_zero():
    p = PriceBook().price("my-private-llama-77", provider=None, input_tokens=10, output_tokens=10, at=NOW)
    assert p.cost_usd is None and p.price_version is None


def test_custom_price_wins_and_counts_gpu_seconds_and_history():
    book = PriceBook()
    old = CustomPrice("prc_old", "llama", Decimal(1), Decimal(2), None, None, datetime(2026, 1, 1, tzinfo=UTC))
    new = CustomPrice("prc_new", "llama", Decimal(10), Decimal(20), Decimal(5), Decimal("0.001"),
                      datetime(2026, 11, 1, tzinfo=UTC))
    book.set_custom([old, new])
    p = book.price("llama", provider=None, input_tokens=1_000_000, output_tokens=0, gpu_seconds=2.0, at=NOW)
    assert p.cost_usd == Decimal("10.002") and p.price_version == "custom:prc_new"
    before = book.price("llama", provider=None, input_tokens=1_000_000, output_tokens=0,
                        at=datetime(2026, 6, 1, tzinfo=UTC))
    assert before.cost_usd == Decimal(1) and before.price_version == "custom:prc_old"
    cached = book.price("llama", provider=None, input_tokens=1_000_000, output_tokens=0, cached_tokens=1_000_000,
                        at=NOW)
    assert cached.cost_usd == Decimal(5)


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [
        ("day", datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)),
        ("week", datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)),
        ("month", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_window_bounds(window, start, end):
    assert window_bounds(window, NOW) == (start, end)


def test_month_window_rolls_over_december():
    assert window_bounds("month", datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(2027, 1, 1, tzinfo=UTC)


def _book(limit: str = "1.00") -> tuple[BudgetBook, BudgetState]:
    book = BudgetBook()
    start, end = window_bounds("day", NOW)
    b = BudgetState("bud_1", "t1", "key", "key_1", "day", Decimal(limit), window_start=start, window_end=end)
    book.add(b)
    return book, b


def test_reservations_stop_concurrent_overspend():
    book, b = _book("1.00")
    scopes = {"tenant": "t1", "key": "key_1"}
    held = [book.reserve("t1", scopes, Decimal("0.30"), NOW) for _ in range(3)]
    with pytest.raises(BudgetExceeded):
        book.reserve("t1", scopes, Decimal("0.30"), NOW)
    book.settle(held[0], Decimal("0.05"), NOW)  # the real cost was lower: room frees up
    book.reserve("t1", scopes, Decimal("0.30"), NOW)
    assert b.spent == Decimal("0.05") and b.reserved == Decimal("0.90")
    book.settle(held[1], None, NOW)
    book.settle(held[1], Decimal(5), NOW)  # settling twice changes nothing
    assert b.reserved == Decimal("0.60") and b.spent == Decimal("0.05")


def test_budget_of_another_tenant_or_key_does_not_apply():
    book, _ = _book("0")
    book.reserve("t2", {"tenant": "t2", "key": "key_1"}, Decimal(1), NOW)
    book.reserve("t1", {"tenant": "t1", "key": "key_2"}, Decimal(1), NOW)
    with pytest.raises(BudgetExceeded):
        book.reserve("t1", {"tenant": "t1", "key": "key_1"}, Decimal("0.01"), NOW)


def test_new_window_resets_spend():
    book, b = _book("1")
    book.charge("t1", {"key": "key_1"}, Decimal(1), NOW)
    with pytest.raises(BudgetExceeded):
        book.reserve("t1", {"key": "key_1"}, Decimal("0.1"), NOW)
    tomorrow = datetime(2026, 11, 26, 0, 1, tzinfo=UTC)
    book.reserve("t1", {"key": "key_1"}, Decimal("0.1"), tomorrow)
    assert b.spent == 0 and b.window_start == datetime(2026, 11, 26, tzinfo=UTC)
