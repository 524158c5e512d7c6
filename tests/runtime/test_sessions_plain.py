"""Any server on port 8080 runs as an AgentCore agent (agent.toml kind = "agentcore", no
dependencies), and a sandbox killed in the middle of an invocation is reported to that caller."""

from __future__ import annotations

import asyncio

import pytest

from garrison.runtime.bundles import pack

SERVER = r'''
import http.server, json, os, socket, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self._json({"status": "Healthy", "time_of_last_update": int(time.time())})
    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        time.sleep(float(payload.get("sleep_s", 0)))
        self._json({"session": self.headers.get("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"),
                    "openai_base_url": os.environ.get("OPENAI_BASE_URL"),
                    "mcp_url": os.environ.get("GARRISON_MCP_URL"),
                    "has_key": bool(os.environ.get("OPENAI_API_KEY")), "uid": os.getuid()})
    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), H).serve_forever()
'''
SESSION = "plain-session-" + "p" * 30
HEADERS = {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SESSION}


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@pytest.fixture
async def plain(client, tmp_path):  # type: ignore[no-untyped-def]
    bundle = tmp_path / "plain"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('[agent]\nname = "plain"\nkind = "agentcore"\nentrypoint = "server.py"\n')
    (bundle / "server.py").write_text(SERVER)
    r = await client.post("/api/runtime/agents/plain/versions", content=pack(bundle),
                          headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    assert r.json()["versions"][0]["kind"] == "agentcore"


async def test_any_server_on_8080_gets_the_contract(plain, client):
    r = await client.post("/runtimes/plain/invocations", json={}, headers=HEADERS)
    assert r.status_code == 200, r.text
    assert r.headers["X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"] == SESSION
    body = r.json()
    assert body["session"] == SESSION and body["has_key"] and body["uid"] != 0
    assert body["openai_base_url"].startswith("http://127.0.0.1:") and body["openai_base_url"].endswith("/v1")
    assert body["mcp_url"].endswith("/mcp/")


async def test_sandbox_killed_mid_invocation_is_reported(plain, client, platform):
    r = await client.post("/runtimes/plain/invocations", json={}, headers=HEADERS)
    assert r.status_code == 200, r.text
    info = (await client.get(f"/api/runtime/agents/plain/sessions/{SESSION}")).json()[0]
    slow = asyncio.create_task(client.post("/runtimes/plain/invocations", json={"sleep_s": 30}, headers=HEADERS))
    await asyncio.sleep(0.5)
    sandbox = platform.services["sandbox"]
    await sandbox.terminate(sandbox.sandboxes[info["sandbox_id"]], "oom")  # as the OOM watcher would
    r = await asyncio.wait_for(slow, 20)
    assert r.status_code == 503 and r.json()["killed_reason"] == "oom", r.text
    assert "next invocation starts a fresh one" in r.json()["detail"]
    r = await client.post("/runtimes/plain/invocations", json={}, headers=HEADERS)
    assert r.status_code == 200, r.text
    info = (await client.get(f"/api/runtime/agents/plain/sessions/{SESSION}")).json()[0]
    assert info["sandboxes_started"] == 2 and info["last_sandbox"]["killed_reason"] == "oom"
