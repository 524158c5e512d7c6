"""`garrison traces` and the Python client against a live server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from garrison.cli.traces import app
from garrison.client.base import Client
from garrison.client.telemetry import Telemetry
from garrison.config import Settings
from tests.telemetry.live import live_garrison
from tests.telemetry.spans import agent_run, new_trace_id, protobuf_request


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.mark.slow
def test_cli_and_client(settings: Settings) -> None:
    with live_garrison(settings) as (url, key, _):
        tid = new_trace_id()
        resp = httpx.post(f"{url}/v1/traces", content=protobuf_request(agent_run(tid, session="cli-sess")),
                          headers={"authorization": f"Bearer {key}", "content-type": "application/x-protobuf"})
        assert resp.status_code == 200
        t = Telemetry(Client(url, key))
        assert [x["trace_id"] for x in t.traces(session_id="cli-sess")["traces"]] == [tid]
        assert t.session("cli-sess")["trace_count"] == 1
        runner = CliRunner()
        out = runner.invoke(app, ["show", tid, "--url", url, "--key", key])
        assert out.exit_code == 0, out.output
        assert "invoke_agent planner" in out.output and "get_weather" in out.output
        out = runner.invoke(app, ["usage", "--url", url, "--key", key, "--format", "json"])
        assert out.exit_code == 0 and "gpt-4o-mini" in out.output
        out = runner.invoke(app, ["show", "0" * 31 + "1", "--url", url, "--key", key])
        assert out.exit_code == 1 and "404" in out.output
        out = runner.invoke(app, ["forward", "http://127.0.0.1:9/v1/traces", "--content", "--url", url,
                                  "--key", key])
        assert out.exit_code == 0, out.output
        assert t.exporter()["include_content"] is True
        t.set_exporter("http://127.0.0.1:9/v1/traces", include_content=False)
        assert t.exporter()["include_content"] is False
        out = runner.invoke(app, ["forward", "--off", "--url", url, "--key", key])
        assert out.exit_code == 0 and "stopped" in out.output
