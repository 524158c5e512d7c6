"""Running code and commands in a sandbox, and its files: the service's request path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from garrison.core.errors import BadRequest, NotFound
from garrison.core.principal import Principal
from garrison.sandbox import agent as agent_rules
from garrison.sandbox import agent_archive, metrics
from garrison.sandbox.errors import (
    CommandTimeout,
    DiskFull,
    FileTooLarge,
    OOMKilled,
    PathEscape,
    PidsExhausted,
)
from garrison.sandbox.protocol import AgentFailure, AgentGone, EventHandler

if TYPE_CHECKING:
    from garrison.sandbox.runtime import Sandbox

tracer = trace.get_tracer("garrison.sandbox")


def span_attributes(sbx: Sandbox) -> dict[str, str]:
    """Every execution span names its tenant (the telemetry layer scopes traces by it),
    sandbox and backend."""
    return {"garrison.tenant_id": sbx.tenant_id, "sandbox.id": sbx.id, "sandbox.backend": sbx.backend,
            "sandbox.isolation": sbx.isolation, "sandbox.template": sbx.template}
CHUNK = 512 * 1024
INTERRUPT_GRACE_S = 2.0
HOST_GRACE_S = 5.0


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


class Execution:
    """Mixed into SandboxService; relies on its get/running/terminate/gone_error."""

    platform: Any
    settings: Any

    # -- plumbing

    async def _call(self, sbx: Sandbox, op: str, *, on_event: EventHandler | None = None, **args: Any) -> dict[str, Any]:
        try:
            return await sbx.runtime.conn.call(op, on_event=on_event, **args)
        except AgentGone:
            raise await self._died(sbx) from None
        except AgentFailure as exc:
            raise self._map_failure(exc) from None

    async def _died(self, sbx: Sandbox) -> Exception:
        if sbx.state == "running":
            await self.terminate(sbx, self._death_reason(sbx))  # type: ignore[attr-defined]
        return self.gone_error(sbx)  # type: ignore[attr-defined, no-any-return]

    @staticmethod
    def _map_failure(exc: AgentFailure) -> Exception:
        msg = exc.message.split(": ", 1)[-1]
        return {
            "PathEscape": PathEscape,
            "FileTooLarge": FileTooLarge,
            "NotFound": NotFound,
            "BadRequest": BadRequest,
            "DiskFull": DiskFull,
            "PidsExhausted": PidsExhausted,
        }.get(exc.kind, BadRequest)(msg)

    def _audit(self, principal: Principal, action: str, sbx: Sandbox, **context: Any) -> None:
        self.platform.audit.record(principal, action, f"sandbox/{sbx.id}", "allow", "", context)

    async def _enter(self, principal: Principal, sandbox_id: str, action: str) -> Sandbox:
        return await self.running(principal, sandbox_id, action)  # type: ignore[attr-defined, no-any-return]

    # -- code

    async def run_code(self, principal: Principal, sandbox_id: str, code: str, *, context: str | None = None,
                       timeout_s: float | None = None, on_event: EventHandler | None = None) -> dict[str, Any]:
        sbx = await self._enter(principal, sandbox_id, "sandbox:exec")
        timeout = timeout_s or self.settings.command_timeout_s
        t0 = time.perf_counter()
        sbx.busy += 1
        with tracer.start_as_current_span("sandbox.run_code", attributes=span_attributes(sbx)) as span:
            try:
                try:
                    rid, fut = sbx.runtime.conn.send("run_code", on_event=on_event, code=code, context=context)
                except AgentGone:
                    raise await self._died(sbx) from None
                try:
                    value = await asyncio.wait_for(asyncio.shield(fut), timeout)
                except TimeoutError:
                    value = await self._interrupt(sbx, rid, fut, timeout)
                except AgentGone:
                    raise await self._died(sbx) from None
                except AgentFailure as exc:
                    raise self._map_failure(exc) from None
            finally:
                sbx.busy -= 1
                sbx.last_used = time.monotonic()
            value["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            err = value.get("error")
            span.set_attribute("sandbox.error", (err or {}).get("name", "") if isinstance(err, dict) else "")
        metrics.EXEC_SECONDS.labels(sbx.backend, "run_code").observe(time.perf_counter() - t0)
        self._audit(principal, "sandbox:exec", sbx, op="run_code", code_sha256=_digest(code), code_bytes=len(code),
                    error=(err or {}).get("name") if isinstance(err, dict) else None,
                    duration_ms=value["duration_ms"])
        return value

    async def _interrupt(self, sbx: Sandbox, rid: int, fut: asyncio.Future[dict[str, Any]], limit_s: float) -> dict[str, Any]:
        """A cell ran past its timeout: interrupt it (KeyboardInterrupt); if it does not stop,
        the whole sandbox is killed. Either way the caller gets CommandTimeout."""
        with contextlib.suppress(AgentGone):
            sbx.runtime.conn.send("interrupt", target=rid)
        try:
            await asyncio.wait_for(asyncio.shield(fut), INTERRUPT_GRACE_S)
        except AgentFailure as exc:
            # The agent answered (the request failed on its own, e.g. no such context):
            # it is responsive, so that answer is the caller's, and the sandbox lives on.
            # (Found by schemathesis: such requests used to kill the sandbox.)
            raise self._map_failure(exc) from None
        except (TimeoutError, AgentGone):
            await self.terminate(sbx, "code_timeout")  # type: ignore[attr-defined]
            raise CommandTimeout(f"code ran past {limit_s} s and did not stop when interrupted; "
                                 f"sandbox {sbx.id} was killed", killed_reason="code_timeout") from None
        raise CommandTimeout(f"code ran past {limit_s} s and was interrupted (KeyboardInterrupt); "
                             "the context and sandbox are still usable")

    async def create_context(self, principal: Principal, sandbox_id: str) -> str:
        sbx = await self._enter(principal, sandbox_id, "sandbox:exec")
        value = await self._call(sbx, "create_context")
        return str(value["context"])

    # -- commands

    async def run_command(self, principal: Principal, sandbox_id: str, cmd: str | list[str], *, cwd: str | None = None,
                          envs: dict[str, str] | None = None, timeout_s: float | None = None, stdin: str | None = None,
                          on_event: EventHandler | None = None) -> dict[str, Any]:
        sbx = await self._enter(principal, sandbox_id, "sandbox:exec")
        timeout = timeout_s or self.settings.command_timeout_s
        before = sbx.runtime.usage()
        t0 = time.perf_counter()
        sbx.busy += 1
        with tracer.start_as_current_span("sandbox.command", attributes=span_attributes(sbx)) as span:
            try:
                try:
                    value = await asyncio.wait_for(
                        self._call(sbx, "command", on_event=on_event, cmd=cmd, cwd=cwd, env=envs or {},
                                   timeout=timeout, stdin=stdin),
                        timeout + HOST_GRACE_S)
                except TimeoutError:
                    # The agent should have stopped it; a sandbox that does not is killed.
                    await self.terminate(sbx, "command_timeout")  # type: ignore[attr-defined]
                    raise CommandTimeout(f"command ran past {timeout} s; sandbox {sbx.id} was killed",
                                         killed_reason="command_timeout") from None
            finally:
                sbx.busy -= 1
                sbx.last_used = time.monotonic()
            duration_ms = round((time.perf_counter() - t0) * 1000, 3)
            span.set_attribute("sandbox.exit_code", value.get("exit_code") if value.get("exit_code") is not None else -1)
        metrics.EXEC_SECONDS.labels(sbx.backend, "command").observe(time.perf_counter() - t0)
        after = sbx.runtime.usage()
        self._audit(principal, "sandbox:exec", sbx, op="command", cmd_sha256=_digest(str(cmd)),
                    exit_code=value.get("exit_code"), timed_out=bool(value.get("timed_out")), duration_ms=duration_ms)
        partial = {k: value.get(k) for k in ("stdout", "stderr", "exit_code")}
        if after.oom_kills > before.oom_kills:
            raise OOMKilled(f"a process of the command was killed for using more than the sandbox's memory "
                            f"({sbx.runtime.spec.memory_bytes // (1024 * 1024)} MiB)", **partial)
        if value.get("timed_out"):
            raise CommandTimeout(f"command ran past {timeout} s and was killed", **partial)
        if after.pids_max_hits > before.pids_max_hits and value.get("exit_code") != 0:
            raise PidsExhausted(f"the command hit the sandbox's process limit ({sbx.runtime.spec.pids})", **partial)
        value.pop("timed_out", None)
        value["duration_ms"] = duration_ms
        return value

    # -- files

    async def read_file(self, principal: Principal, sandbox_id: str, path: str, max_bytes: int | None = None) -> bytes:
        sbx = await self._enter(principal, sandbox_id, "sandbox:read")
        cap = max_bytes or self.settings.upload_cap_bytes
        parts: list[bytes] = []
        offset = 0
        while True:
            value = await self._call(sbx, "read", path=path, offset=offset, length=CHUNK, max_bytes=cap)
            data = base64.b64decode(value.get("data") or "")
            parts.append(data)
            offset += len(data)
            if offset > cap:
                raise FileTooLarge(f"{path} is over the {cap} byte limit")
            if value.get("eof") or not data:
                break
        self._audit(principal, "sandbox:file_read", sbx, path=path[:512], bytes=offset)
        return b"".join(parts)

    async def write_file(self, principal: Principal, sandbox_id: str, path: str, data: bytes) -> dict[str, Any]:
        sbx = await self._enter(principal, sandbox_id, "sandbox:write")
        if len(data) > self.settings.upload_cap_bytes:
            raise FileTooLarge(f"{len(data)} bytes is over the {self.settings.upload_cap_bytes} byte upload limit")
        size = 0
        for i in range(0, max(len(data), 1), CHUNK):
            value = await self._call(sbx, "write", path=path, append=i > 0,
                                     data=base64.b64encode(data[i:i + CHUNK]).decode())
            size = int(value.get("size", 0))
        self._audit(principal, "sandbox:file_write", sbx, path=path[:512], bytes=len(data))
        return {"path": path, "size": size}

    async def list_files(self, principal: Principal, sandbox_id: str, path: str = "", depth: int = 1) -> list[dict[str, Any]]:
        sbx = await self._enter(principal, sandbox_id, "sandbox:read")
        value = await self._call(sbx, "list", path=path, depth=depth)
        self._audit(principal, "sandbox:file_list", sbx, path=path[:512])
        return list(value.get("entries") or [])

    async def remove_file(self, principal: Principal, sandbox_id: str, path: str) -> None:
        sbx = await self._enter(principal, sandbox_id, "sandbox:write")
        await self._call(sbx, "remove", path=path)
        self._audit(principal, "sandbox:file_remove", sbx, path=path[:512])

    async def make_dir(self, principal: Principal, sandbox_id: str, path: str) -> None:
        sbx = await self._enter(principal, sandbox_id, "sandbox:write")
        await self._call(sbx, "mkdir", path=path)
        self._audit(principal, "sandbox:file_mkdir", sbx, path=path[:512])

    async def upload_archive(self, principal: Principal, sandbox_id: str, path: str, data: bytes,
                             fmt: str = "tar") -> dict[str, Any]:
        """Extracts a tar (optionally compressed) or zip archive under ``path``. Escapes and bombs
        are refused on the host first, then again by the agent while it extracts."""
        sbx = await self._enter(principal, sandbox_id, "sandbox:write")
        cap = self.settings.upload_cap_bytes
        if fmt not in ("tar", "zip"):
            raise BadRequest("format must be 'tar' or 'zip'")
        if len(data) > cap:
            raise FileTooLarge(f"{len(data)} bytes is over the {cap} byte upload limit")
        limit = sbx.runtime.spec.workspace_bytes
        try:
            await asyncio.to_thread(agent_archive.plan_archive, data, fmt, limit)
        except agent_rules.PathEscape as exc:
            raise PathEscape(str(exc)) from None
        except agent_rules.FileTooLarge as exc:
            raise FileTooLarge(str(exc)) from None
        except agent_rules.AgentError as exc:
            raise BadRequest(str(exc)) from None
        tmp = f".garrison-upload-{secrets.token_hex(8)}"
        try:
            for i in range(0, max(len(data), 1), CHUNK):
                await self._call(sbx, "write", path=tmp, append=i > 0, data=base64.b64encode(data[i:i + CHUNK]).decode())
            value = await self._call(sbx, "upload_archive", path=path, archive=tmp, format=fmt, max_total=limit)
        finally:
            if sbx.state == "running":
                with contextlib.suppress(Exception):
                    await sbx.runtime.conn.call("remove", path=tmp)
        self._audit(principal, "sandbox:file_upload", sbx, path=path[:512], bytes=len(data), format=fmt,
                    files=value.get("files"))
        return {"files": int(value.get("files", 0)), "bytes": int(value.get("bytes", 0))}

    async def download_archive(self, principal: Principal, sandbox_id: str, path: str = "") -> bytes:
        sbx = await self._enter(principal, sandbox_id, "sandbox:read")
        tmp = f".garrison-download-{secrets.token_hex(8)}.tar.gz"
        cap = self.settings.upload_cap_bytes
        try:
            await self._call(sbx, "download_archive", path=path, archive=tmp, max_total=cap)
            parts: list[bytes] = []
            offset = 0
            while True:
                value = await self._call(sbx, "read", path=tmp, offset=offset, length=CHUNK, max_bytes=cap)
                data = base64.b64decode(value.get("data") or "")
                parts.append(data)
                offset += len(data)
                if value.get("eof") or not data:
                    break
        finally:
            if sbx.state == "running":
                with contextlib.suppress(Exception):
                    await sbx.runtime.conn.call("remove", path=tmp)
        self._audit(principal, "sandbox:file_download", sbx, path=path[:512], bytes=offset)
        return b"".join(parts)
