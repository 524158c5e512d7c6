"""The sandbox's MCP tools, as registered with the tool gateway's local tool servers."""

from __future__ import annotations

import pytest

from garrison.core.principal import Principal
from garrison.sandbox.service import SandboxService
from tests.sandbox.helpers import make_backend

SCOPES = frozenset({"sandbox:create", "sandbox:read", "sandbox:exec", "sandbox:write"})


async def test_tools_run_in_the_callers_session_sandbox(platform, tmp_path) -> None:  # type: ignore[no-untyped-def]
    make_backend("bubblewrap", tmp_path)
    tools = platform.services.get("tools")
    if tools is None or not hasattr(tools, "register_local_tools"):
        pytest.skip("the tools layer with register_local_tools is not installed")
    service: SandboxService = platform.services["sandbox"]
    service.default_backend = "bubblewrap"  # tool calls name no backend: use the fast one here
    local = tools.local["sandbox"]
    assert set(local) == {"execute_code", "run_command", "read_file", "write_file"}
    tenant = (await platform.identity.tenant_by_name("default"))["id"]
    alice = Principal(id="prn_alice", tenant_id=tenant, kind="agent", scopes=SCOPES, session_id="s1")
    other = Principal(id="prn_alice", tenant_id=tenant, kind="agent", scopes=SCOPES, session_id="s2")
    first = await local["execute_code"].handler(alice, {"code": "x = 20\nx"})
    again = await local["execute_code"].handler(alice, {"code": "x + 1"})
    assert first["text"] == "20" and again["text"] == "21" and first["sandbox_id"] == again["sandbox_id"]
    elsewhere = await local["execute_code"].handler(other, {"code": "'x' in globals()"})
    assert elsewhere["text"] == "False" and elsewhere["sandbox_id"] != first["sandbox_id"]
    await local["write_file"].handler(alice, {"path": "n.txt", "content": "hi"})
    assert (await local["read_file"].handler(alice, {"path": "n.txt"}))["content"] == "hi"
    out = await local["run_command"].handler(alice, {"cmd": "cat n.txt"})
    assert out["stdout"] == "hi" and out["exit_code"] == 0
    no_exec = Principal(id="prn_ro", tenant_id=tenant, kind="agent", scopes=frozenset({"sandbox:read"}))
    with pytest.raises(Exception) as err:
        await local["execute_code"].handler(no_exec, {"code": "1", "sandbox_id": first["sandbox_id"]})
    assert getattr(err.value, "status", None) == 403
