"""langgraph-checkpoint-conformance: every base and optional capability, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from garrison.state import AsyncGarrisonSaver, GarrisonSaver


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_conformance_all_capabilities(db_url: str, flavour: str) -> None:
    if flavour == "async":
        async def factory() -> AsyncIterator[AsyncGarrisonSaver]:
            async with AsyncGarrisonSaver.from_conn_string(db_url) as saver:
                yield saver
    else:
        async def factory() -> AsyncIterator[GarrisonSaver]:  # type: ignore[misc]
            with GarrisonSaver.from_conn_string(db_url) as saver:
                yield saver

    registered = checkpointer_test(name=f"garrison-{flavour}")(factory)
    report = await validate(registered)
    results = report.results
    assert set(results) == {c.value for c in ALL_CAPABILITIES}
    for name, result in results.items():
        assert result.detected, f"{name} not detected as implemented"
        assert result.passed, f"{name}: {result.failures}"
        assert result.tests_failed == 0
    assert sum(r.tests_passed for r in results.values()) == 81
