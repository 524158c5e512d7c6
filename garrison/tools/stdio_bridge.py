"""MCP streamable HTTP in front of a local stdio MCP server, run INSIDE a garrison sandbox.

Standard library only: it runs on the sandbox template's interpreter, which has only the
stdio server's own package installed. Copied into the sandbox's workspace and started as
``python3 stdio_bridge.py PORT CONFIG_JSON``; garrison reaches it through the sandbox relay
(the sandbox has no network, only its own loopback).

Each MCP session gets its own server process (``initialize`` starts one, ``DELETE`` or the
process's end finishes it), so two gateway sessions never share a stdio server's state.
JSON-RPC requests are written to the process's stdin as lines; the answer with the same id
is read from its stdout and sent back as ``application/json``. Notifications the server
sends on its own have nowhere to go in a JSON response and are dropped; requests it sends
(sampling, roots, elicitation) are answered with an error, since the gateway offers no
client capabilities, so the server never waits for them.
"""

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

MAX_BODY = 16 * 1024 * 1024
REQUEST_TIMEOUT_S = 3600.0  # the gateway's own per-call timeout ends a call long before this
LOG_DIR = "/tmp"


def entry_command(package: str) -> list:
    """The package's console script (what ``uvx <package>`` runs), run by this interpreter."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(package)
    except PackageNotFoundError:
        raise SystemExit(f"garrison stdio bridge: package {package!r} is not installed in this sandbox template") \
            from None
    scripts = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    wanted = package.lower().replace("_", "-")
    chosen = next((ep for ep in scripts if ep.name.lower().replace("_", "-") == wanted), None)
    if chosen is None and len(scripts) == 1:
        chosen = scripts[0]
    if chosen is None:
        module = package.replace("-", "_")
        return [sys.executable, "-m", module]
    code = ("import sys\nfrom importlib.metadata import EntryPoint\n"
            f"sys.argv[0] = {chosen.name!r}\n"
            f"sys.exit(EntryPoint(name={chosen.name!r}, value={chosen.value!r}, group='console_scripts').load()())\n")
    return [sys.executable, "-c", code]


class Slot:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.answer: Any = None


class ServerProcess:
    """One stdio server process and the requests waiting for its answers."""

    def __init__(self, cmd: list, env: dict, sid: str) -> None:
        self.log_path = os.path.join(LOG_DIR, f"mcp-stdio-{sid}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env, cwd=os.environ.get("GARRISON_STDIO_CWD", "/workspace"))
        self.stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()
        self.pending: dict[str, Slot] = {}
        self.ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, message: dict) -> None:
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        with self.write_lock:
            self.stdin.write(line)
            self.stdin.flush()

    def request(self, message: dict) -> Any:
        key = json.dumps(message["id"])
        slot = Slot()
        with self.lock:
            if self.ended:
                return None
            self.pending[key] = slot
        try:
            self.send(message)
            slot.event.wait(REQUEST_TIMEOUT_S)
        except OSError:
            pass
        finally:
            with self.lock:
                self.pending.pop(key, None)
        return slot.answer

    def _read(self) -> None:
        for raw in self.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue  # a line of log output on stdout: not protocol
            if not isinstance(message, dict):
                continue
            if "method" in message and "id" in message:
                try:
                    self.send({"jsonrpc": "2.0", "id": message["id"], "error": {
                        "code": -32601, "message": "the garrison tool gateway offers no client capabilities"}})
                except OSError:
                    pass
            elif "id" in message:
                with self.lock:
                    slot = self.pending.get(json.dumps(message["id"]))
                if slot is not None:
                    slot.answer = message
                    slot.event.set()
        with self.lock:
            self.ended = True
            for waiting in self.pending.values():
                waiting.event.set()

    def alive(self) -> bool:
        return not self.ended and self.proc.poll() is None

    def tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 1500))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Bridge:
    def __init__(self, cmd: list, env: dict) -> None:
        self.cmd, self.env = cmd, env
        self.sessions: dict[str, ServerProcess] = {}
        self.lock = threading.Lock()

    def open(self) -> tuple[str, ServerProcess]:
        sid = uuid.uuid4().hex
        proc = ServerProcess(self.cmd, self.env, sid)
        with self.lock:
            self.sessions[sid] = proc
        return sid, proc

    def get(self, sid: str) -> ServerProcess | None:
        with self.lock:
            proc = self.sessions.get(sid)
            if proc is not None and not proc.alive():
                del self.sessions[sid]  # its process ended: the client starts a new session
                return None
            return proc

    def close(self, sid: str) -> bool:
        with self.lock:
            proc = self.sessions.pop(sid, None)
        if proc is not None:
            proc.stop()
        return proc is not None


def make_handler(bridge: Bridge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, text: str, rid: Any = None) -> None:
            self._reply(status, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32600, "message": text}})

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, {"status": "ok", "sessions": len(bridge.sessions)})
            else:
                self._reply(405, None, {"Allow": "POST, DELETE"})  # no server-initiated SSE stream

        def do_DELETE(self) -> None:
            sid = self.headers.get("mcp-session-id") or ""
            self._reply(200 if bridge.close(sid) else 404)

        def do_POST(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            if size > MAX_BODY:
                self._error(413, "request body too large")
                return
            try:
                message = json.loads(self.rfile.read(size))
            except ValueError:
                self._error(400, "the body is not JSON")
                return
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                self._error(400, "send one JSON-RPC 2.0 message per request (batches are not supported)")
                return
            sid = self.headers.get("mcp-session-id")
            is_request = "method" in message and "id" in message
            headers: dict[str, str] = {}
            if sid is None:
                if message.get("method") == "initialize" and is_request:
                    sid, proc = bridge.open()
                    headers["Mcp-Session-Id"] = sid
                elif is_request:
                    # e.g. the 2026-07-28 server/discover probe: answered as a legacy server would,
                    # so the client falls back to the initialize handshake.
                    self._reply(200, {"jsonrpc": "2.0", "id": message["id"], "error": {
                        "code": -32601, "message": f"method {message.get('method')!r} needs a session: "
                                                   "this stdio server speaks the initialize handshake"}})
                    return
                else:
                    self._error(400, "missing Mcp-Session-Id")
                    return
            else:
                found = bridge.get(sid)
                if found is None:
                    self._error(404, "unknown or ended session")
                    return
                proc = found
            if not is_request:
                try:
                    proc.send(message)
                except OSError:
                    bridge.close(sid)
                    self._error(404, "the session's server process ended")
                    return
                self._reply(202)
                return
            answer = proc.request(message)
            if answer is None:
                bridge.close(sid)
                self._error(502, "the stdio server process ended without answering; its stderr ends with: "
                            + proc.tail()[-1000:], message.get("id"))
                return
            self._reply(200, answer, headers)

    return Handler


def main() -> None:
    port = int(sys.argv[1])
    config = json.loads(sys.argv[2])
    cmd = entry_command(config["package"]) + [str(a) for a in config.get("args") or []]
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(Bridge(cmd, env)))
    server.daemon_threads = True
    print(f"garrison stdio bridge on 127.0.0.1:{port}: {cmd[:2]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
