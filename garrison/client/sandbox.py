"""Python client for garrison sandboxes, shaped like E2B's SDK.

    from garrison.client import Sandbox
    with Sandbox.create(api_key=key) as sbx:
        execution = sbx.run_code("x = 1\\nx + 1")
        print(execution.text)                       # "2"
        result = sbx.commands.run("ls -la", on_stdout=print)
        sbx.files.write("data.csv", "a,b\\n1,2\\n")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from garrison.client.base import DEFAULT_URL, Client
from garrison.client.errors import ApiError, error_for

OutputHandler = Callable[[str], Any]


class SandboxError(ApiError):
    """Base of the typed sandbox errors (all are ApiError)."""


class SandboxTimeoutError(SandboxError): ...
class CommandTimeoutError(SandboxError): ...
class OOMKilledError(SandboxError): ...
class PidsExhaustedError(SandboxError): ...
class SandboxGoneError(SandboxError): ...
class PolicyDeniedError(SandboxError): ...
class PathEscapeError(SandboxError): ...
class FileTooLargeError(SandboxError): ...
class BackendUnavailableError(SandboxError): ...


_BY_SLUG: dict[str, type[SandboxError]] = {
    "sandbox-timeout": SandboxTimeoutError, "command-timeout": CommandTimeoutError, "oom-killed": OOMKilledError,
    "pids-exhausted": PidsExhaustedError, "sandbox-gone": SandboxGoneError, "policy-denied": PolicyDeniedError,
    "path-escape": PathEscapeError, "file-too-large": FileTooLargeError,
    "backend-unavailable": BackendUnavailableError,
}


def _error(status: int, problem: dict[str, Any]) -> ApiError:
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    cls = _BY_SLUG.get(slug)
    return cls(status, problem) if cls else error_for(status, problem)


@dataclass
class ExecutionError:
    name: str
    value: str
    traceback: str


@dataclass
class Execution:
    stdout: str = ""
    stderr: str = ""
    text: str | None = None
    results: list[dict[str, str]] = field(default_factory=list)
    error: ExecutionError | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Execution:
        err = d.get("error")
        return cls(stdout=d.get("stdout", ""), stderr=d.get("stderr", ""), text=d.get("text"),
                   results=list(d.get("results") or []), error=ExecutionError(**err) if err else None,
                   stdout_truncated=bool(d.get("stdout_truncated")), stderr_truncated=bool(d.get("stderr_truncated")),
                   duration_ms=float(d.get("duration_ms") or 0))


@dataclass
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: float = 0.0


class _Http:
    def __init__(self, url: str, api_key: str | None, timeout: float, transport: httpx.BaseTransport | None) -> None:
        self.client = Client(url, api_key, timeout=timeout, transport=transport)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self.client.http.request(method, path, **kw)
        self._check(r)
        return r

    @staticmethod
    def _check(r: httpx.Response) -> None:
        if r.is_success:
            return
        try:
            problem = r.json()
        except ValueError:
            problem = {"detail": r.text[:500]}
        raise _error(r.status_code, problem if isinstance(problem, dict) else {"detail": str(problem)})

    def stream(self, path: str, body: dict[str, Any], on_stdout: OutputHandler | None,
               on_stderr: OutputHandler | None) -> dict[str, Any]:
        with self.client.http.stream("POST", path, json={**body, "stream": True}) as r:
            if not r.is_success:
                r.read()
                self._check(r)
            for line in r.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                kind = event.pop("type", None)
                if kind == "stdout" and on_stdout:
                    on_stdout(event["data"])
                elif kind == "stderr" and on_stderr:
                    on_stderr(event["data"])
                elif kind == "result":
                    return dict(event)
                elif kind == "error":
                    raise _error(int(event.get("status") or 500), event)
        raise SandboxGoneError(502, {"detail": "the stream ended without a result"})


class Commands:
    def __init__(self, sbx: Sandbox) -> None:
        self._sbx = sbx

    def run(self, cmd: str | list[str], *, cwd: str | None = None, envs: dict[str, str] | None = None,
            timeout: float | None = None, stdin: str | None = None, on_stdout: OutputHandler | None = None,
            on_stderr: OutputHandler | None = None) -> CommandResult:
        body = {"cmd": cmd, "cwd": cwd, "envs": envs or {}, "timeout_s": timeout, "stdin": stdin}
        path = f"/api/sandboxes/{self._sbx.sandbox_id}/commands"
        if on_stdout or on_stderr:
            d = self._sbx._http.stream(path, body, on_stdout, on_stderr)
        else:
            d = self._sbx._http.call("POST", path, json=body).json()
        return CommandResult(exit_code=d.get("exit_code"), stdout=str(d.get("stdout", "")),
                             stderr=str(d.get("stderr", "")), stdout_truncated=bool(d.get("stdout_truncated")),
                             stderr_truncated=bool(d.get("stderr_truncated")),
                             duration_ms=float(d.get("duration_ms") or 0))


class Files:
    def __init__(self, sbx: Sandbox) -> None:
        self._sbx = sbx
        self._base = f"/api/sandboxes/{sbx.sandbox_id}/files"

    def read(self, path: str, format: str = "text") -> str | bytes:
        data = self._sbx._http.call("GET", self._base, params={"path": path}).content
        return data.decode() if format == "text" else data

    def write(self, path: str, data: str | bytes) -> dict[str, Any]:
        raw = data.encode() if isinstance(data, str) else data
        return dict(self._sbx._http.call("PUT", self._base, params={"path": path}, content=raw).json())

    def list(self, path: str = "", depth: int = 1) -> list[dict[str, Any]]:
        r = self._sbx._http.call("GET", self._base + "/list", params={"path": path, "depth": depth})
        return list(r.json()["entries"])

    def remove(self, path: str) -> None:
        self._sbx._http.call("DELETE", self._base, params={"path": path})

    def make_dir(self, path: str) -> None:
        self._sbx._http.call("POST", self._base + "/mkdir", params={"path": path})

    def upload_archive(self, data: bytes, path: str = "", format: str = "tar") -> dict[str, Any]:
        r = self._sbx._http.call("POST", self._base + "/archive", params={"path": path, "format": format}, content=data)
        return dict(r.json())

    def download_archive(self, path: str = "") -> bytes:
        return self._sbx._http.call("GET", self._base + "/archive", params={"path": path}).content


class Sandbox:
    def __init__(self, info: dict[str, Any], http: _Http) -> None:
        self.info = info
        self.sandbox_id: str = info["id"]
        self._http = http
        self.commands = Commands(self)
        self.files = Files(self)

    @classmethod
    def create(cls, template: str = "python", *, timeout: int | None = None, envs: dict[str, str] | None = None,
               metadata: dict[str, str] | None = None, backend: str | None = None,
               limits: dict[str, Any] | None = None, api_key: str | None = None, url: str = DEFAULT_URL,
               request_timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> Sandbox:
        http = _Http(url, api_key, request_timeout, transport)
        body = {"template": template, "timeout_s": timeout, "envs": envs or {}, "metadata": metadata or {},
                "backend": backend, "limits": limits or {}}
        return cls(http.call("POST", "/api/sandboxes", json=body).json(), http)

    @classmethod
    def connect(cls, sandbox_id: str, *, api_key: str | None = None, url: str = DEFAULT_URL,
                request_timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> Sandbox:
        http = _Http(url, api_key, request_timeout, transport)
        return cls(http.call("GET", f"/api/sandboxes/{sandbox_id}").json(), http)

    def run_code(self, code: str, *, context: str | None = None, timeout: float | None = None,
                 on_stdout: OutputHandler | None = None, on_stderr: OutputHandler | None = None) -> Execution:
        body = {"code": code, "context": context, "timeout_s": timeout}
        path = f"/api/sandboxes/{self.sandbox_id}/run_code"
        if on_stdout or on_stderr:
            return Execution.from_dict(self._http.stream(path, body, on_stdout, on_stderr))
        return Execution.from_dict(self._http.call("POST", path, json=body).json())

    def create_code_context(self) -> str:
        return str(self._http.call("POST", f"/api/sandboxes/{self.sandbox_id}/contexts").json()["context"])

    def get_info(self) -> dict[str, Any]:
        self.info = self._http.call("GET", f"/api/sandboxes/{self.sandbox_id}").json()
        return self.info

    def is_running(self) -> bool:
        return self.get_info()["state"] == "running"

    def set_timeout(self, timeout: int) -> None:
        self.info = self._http.call("POST", f"/api/sandboxes/{self.sandbox_id}/timeout", json={"timeout_s": timeout}).json()

    def kill(self) -> dict[str, Any]:
        self.info = self._http.call("DELETE", f"/api/sandboxes/{self.sandbox_id}").json()
        return self.info

    def close(self) -> None:
        self._http.client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.info.get("state") == "running":
                self.kill()
        finally:
            self.close()
