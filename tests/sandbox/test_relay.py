"""The HTTP relay through the in-sandbox agent: ingress to the sandbox's loopback, egress to
garrison's own API only, on both local backends; the sandbox itself keeps no network."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import pytest

from garrison.core.principal import Principal
from garrison.llm.fake_upstream import FakeConfig, FakeUpstream
from garrison.sandbox.relay import EgressPump, Relay, egress_path_allowed, garrison_forwarder
from garrison.sandbox.schemas import CreateIn
from tests.sandbox.helpers import BACKENDS, make_backend

SERVER = r'''
import http.server, socket, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self):
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(3):
                d = f"data: {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(d), d)); self.wfile.flush(); time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n"); return
        if self.path == "/port":  # which connection carried the request
            self._answer(str(self.client_address[1]).encode()); return
        self._answer(b"pong " + self.path.encode())
    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers.get("content-length") or 0)))
    def _answer(self, body):
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H).serve_forever()
'''


@pytest.fixture(params=BACKENDS)
async def sandbox(request: pytest.FixtureRequest, platform, tmp_path):  # type: ignore[no-untyped-def]
    make_backend(request.param, tmp_path)  # skips (or fails in CI) when the backend is missing
    svc = platform.services["sandbox"]
    admin = await platform.identity.authenticate(platform.settings.admin_key_path.read_text().strip())
    sbx = await svc.create(admin, CreateIn(backend=request.param, pooled=False))
    yield sbx
    await svc.terminate(sbx, "test_done")


async def _serve(sbx) -> Relay:  # type: ignore[no-untyped-def]
    conn = sbx.runtime.conn
    await conn.call("write", path="srv.py", data=base64.b64encode(SERVER.encode()).decode())
    await conn.call("spawn", cmd=["/usr/bin/python3", "srv.py"])
    relay = Relay(conn)
    for _ in range(200):
        try:
            await (await relay.request(8080, "GET", "/ping")).read()
            return relay
        except Exception:  # noqa: PERF203 - the server is still starting
            await asyncio.sleep(0.05)
    raise AssertionError("the in-sandbox server never answered")


async def test_ingress_reaches_the_sandbox_loopback_and_streams(sandbox):  # type: ignore[no-untyped-def]
    relay = await _serve(sandbox)
    resp = await relay.request(8080, "GET", "/hello?x=1")
    assert resp.status == 200 and await resp.read() == b"pong /hello?x=1"
    resp = await relay.request(8080, "POST", "/echo", [("content-type", "text/plain")], b"payload" * 1000)
    assert await resp.read() == b"payload" * 1000
    # SSE passes through chunk by chunk: the first frame arrives before the server finished.
    resp = await relay.request(8080, "GET", "/sse")
    assert resp.header("content-type") == "text/event-stream"
    frames: list[bytes] = []
    async for chunk in resp.body:
        frames.append(chunk)
    assert b"".join(frames) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and len(frames) >= 3
    with pytest.raises(Exception, match="nothing listens"):
        await relay.request(8099, "GET", "/")


async def test_ingress_requests_overlap_and_reuse_connections(sandbox):  # type: ignore[no-untyped-def]
    relay = await _serve(sandbox)
    # A finished request's kept-alive connection carries the next one, whichever thread serves it.
    first = await (await relay.request(8080, "GET", "/port")).read()
    assert await (await relay.request(8080, "GET", "/port")).read() == first
    # A request in service never holds up the channel: a second one is answered meanwhile, on
    # another connection, and the streamed one still arrives whole.
    sse = await relay.request(8080, "GET", "/sse")
    other = await (await relay.request(8080, "GET", "/port")).read()
    rest = b"".join([chunk async for chunk in sse.body])
    assert rest.endswith(b"data: 2\n\n") and other.isdigit() and other != first
    # Over the whole-answer size the body streams in chunks, byte for byte.
    big = bytes(range(256)) * 1024
    assert await (await relay.request(8080, "POST", "/echo", [], big)).read() == big
    assert await (await relay.request(8080, "GET", "/port")).read() in (first, other)


@pytest.fixture
async def host_listener() -> AsyncIterator[int]:
    """A listener the test owns on the host's loopback: the sandbox must never reach it."""
    hits: list[bytes] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    assert hits == [], "the sandbox reached a host loopback listener"


async def test_egress_reaches_the_gateway_only(sandbox, platform, app, client, host_listener):  # type: ignore[no-untyped-def]
    async with FakeUpstream(FakeConfig(completion_tokens=4)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        agent = Principal(id="relay-test-agent", tenant_id=platform.identity.default_tenant_id, kind="agent",
                          scopes=frozenset({"llm:invoke", "tools:call"}))
        token = platform.identity.mint_token(agent, scopes=["llm:invoke", "tools:call"], ttl_s=300)["token"]
        pump = EgressPump(sandbox.runtime.conn, garrison_forwarder(app, lambda: token))
        port = await pump.start(0)
        code = f'''
import json, socket, urllib.request, urllib.error
def call(path, body=None, headers=None):
    req = urllib.request.Request("http://127.0.0.1:{port}" + path, data=body, headers=headers or {{}})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
out = {{}}
body = json.dumps({{"model": "fake-model", "messages": [{{"role": "user", "content": "hi"}}]}}).encode()
out["chat"] = call("/v1/chat/completions", body, {{"content-type": "application/json", "authorization": "Bearer forged"}})
stream = json.dumps({{"model": "fake-model", "stream": True, "messages": [{{"role": "user", "content": "hi"}}]}}).encode()
out["stream"] = call("/v1/chat/completions", stream, {{"content-type": "application/json"}})
out["admin"] = call("/api/identity/keys")
out["escape"] = call("/v1/../api/identity/keys")
out["encoded"] = call("/v1/%2e%2e/api/identity/keys")
try:
    socket.create_connection(("127.0.0.1", {host_listener}), timeout=2)
    out["host"] = "connected"
except OSError as e:
    out["host"] = "refused"
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2)
    out["internet"] = "connected"
except OSError:
    out["internet"] = "unreachable"
print(json.dumps(out))
'''
        result = await sandbox.runtime.conn.call("run_code", code=code)
        assert result["error"] is None, result
        out = json.loads(result["stdout"])
        status, text = out["chat"]
        assert status == 200 and json.loads(text)["choices"][0]["message"]["content"]
        status, text = out["stream"]
        assert status == 200 and text.count("data: ") >= 4 and text.rstrip().endswith("data: [DONE]")
        assert upstream.stats.completed == 2
        for name in ("admin", "escape", "encoded"):
            assert out[name][0] == 403, (name, out[name])
        assert out["host"] == "refused" and out["internet"] == "unreachable"
        await pump.stop()


def test_egress_path_rules() -> None:
    for path in ("/v1/chat/completions", "/v1/models?x=1", "/mcp/search/", "/mcp/x/tools"):
        assert egress_path_allowed(path), path
    for path in ("/api/identity/keys", "/v1", "/v1/../api", "/v1/%2e%2e/api", "/v1/%252e/x", "//v1/x",
                 "/v1/./x", "/mcpx/y", "/v1\\..\\api", "http://evil/v1/x"):
        assert not egress_path_allowed(path), path

