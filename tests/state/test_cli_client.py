"""`garrison state` commands and the Python memory client against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from garrison.cli.main import app
from garrison.client import Client
from garrison.client.errors import ApiError
from garrison.client.state import Memory, State
from garrison.config import Settings
from tests.registry.live import live_server
from tests.state.test_saver import Steps


@pytest.mark.slow
def test_state_cli_and_memory_client(tmp_path: Path) -> None:
    d = tmp_path / "data"
    with live_server(Settings(data_dir=d, database_url=f"sqlite+aiosqlite:///{d}/g.db")) as (url, srv):
        platform = srv.state.platform
        key = platform.bootstrap_key
        tenant = platform.identity.default_tenant_id
        steps = Steps(platform.services["state"].sync_saver(tenant), "t-1")
        for i in range(5):
            steps.put({"v": "x" * 200, "i": i})
        runner = CliRunner()
        out = runner.invoke(app, ["state", "stats", "--format", "json", "--url", url, "--key", key])
        assert out.exit_code == 0, out.output
        assert '"checkpoints": 5' in out.output
        out = runner.invoke(app, ["state", "stats", "--url", url, "--key", key])
        assert out.exit_code == 0, out.output
        assert "memory vector search: " in out.output  # the table says how memory search runs too
        out = runner.invoke(app, ["state", "prune", "--url", url, "--key", key])
        assert out.exit_code == 0 and "nothing pruned" in out.output
        out = runner.invoke(app, ["state", "retention", "--keep-last", "2", "--url", url, "--key", key])
        assert out.exit_code == 0 and '"keep_last": 2' in out.output
        out = runner.invoke(app, ["state", "prune", "--url", url, "--key", key])
        assert out.exit_code == 0, out.output
        assert "dropped 3 checkpoints" in out.output
        out = runner.invoke(app, ["state", "retention", "--keep-last", "0", "--url", url, "--key", key])
        assert out.exit_code == 2  # refused by the CLI's own validation

        with Client(url, key) as client:
            assert State(client).stats()["checkpoints"] == 2
            mem = Memory(client)
            mem.put(["users", "alice"], "seat", {"text": "Alice prefers window seats"})
            mem.put(["users", "alice"], "boss", {"text": "Alice reports to Bob"})
            hits = mem.search(["users"], query="where does alice sit on planes", limit=1)
            assert [h["key"] for h in hits] == ["seat"]
            assert mem.namespaces() == [["users", "alice"]]
            mem.add_event("alice", "s1", {"text": "hi"})
            assert [e["payload"]["text"] for e in mem.events("alice", "s1")] == ["hi"]
            mem.delete(["users", "alice"], "seat")
            with pytest.raises(ApiError) as err:
                mem.get(["users", "alice"], "seat")
            assert err.value.status == 404
