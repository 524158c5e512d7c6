from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.sandbox.helpers import BACKENDS, Runtimes, runtimes


@pytest.fixture(params=BACKENDS)
async def rts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtimes]:
    async with runtimes(request.param, tmp_path) as r:
        yield r


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    # The sandbox layer keeps no tables: its API tests need not run twice (SQLite only).
    yield f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"
