"""A real garrison process (`garrison up`) on a free port, for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.live import LiveServer, start_server, stop_server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("live") / "data"
    server = start_server(data)
    yield server
    server.output.append(stop_server(server))
