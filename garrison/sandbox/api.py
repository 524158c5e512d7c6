"""HTTP API under /api/sandboxes: parse, authenticate, call the service, render."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from garrison.core.errors import PayloadTooLarge, Problem
from garrison.core.principal import Principal
from garrison.identity.deps import require
from garrison.platform import Platform, get_platform
from garrison.sandbox.runtime import Sandbox
from garrison.sandbox.schemas import (
    BackendOut,
    BackendsOut,
    CommandIn,
    CommandOut,
    ContextOut,
    CreateIn,
    ExecutionOut,
    FileEntry,
    FileList,
    KubernetesApplyIn,
    KubernetesApplyOut,
    LimitsOut,
    RunCodeIn,
    SandboxList,
    SandboxOut,
    TemplateIn,
    TemplateList,
    TemplateOut,
    TimeoutIn,
    UploadOut,
    WriteOut,
)
from garrison.sandbox.service import SandboxService
from garrison.sandbox.store import SandboxRecord

router = APIRouter(tags=["sandboxes"])
PATH = Query("", max_length=4096, description="Path inside the sandbox workspace (/workspace).")
NDJSON = "application/x-ndjson"


def _svc(platform: Platform) -> SandboxService:
    svc = platform.services.get("sandbox")
    if svc is None:
        raise Problem("the sandbox layer is not running", slug="unavailable")
    return svc  # type: ignore[no-any-return]


def render(sbx: Sandbox | SandboxRecord) -> SandboxOut:
    if isinstance(sbx, SandboxRecord):
        return render_record(sbx)
    spec = sbx.runtime.spec
    usage = sbx.final_usage or sbx.runtime.usage()
    return SandboxOut(
        id=sbx.id, tenant_id=sbx.tenant_id, template=sbx.template, backend=sbx.backend, isolation=sbx.isolation,
        state="running" if sbx.state == "running" else "killed", killed_reason=sbx.killed_reason, created_at=sbx.created_at, expires_at=sbx.expires_at,
        ended_at=sbx.ended_at, metadata=sbx.metadata, pooled=sbx.pooled,
        limits=LimitsOut(memory_mib=spec.memory_bytes // (1024 * 1024), cpus=spec.cpus, pids=spec.pids,
                         workspace_mib=spec.workspace_bytes // (1024 * 1024), output_cap_bytes=spec.output_cap,
                         network="none"),
        usage={"cpu_seconds": round(usage.cpu_seconds, 4), "memory_peak_mib": round(usage.memory_peak_bytes / 2**20, 2),
               "oom_kills": usage.oom_kills},
    )


def render_record(rec: SandboxRecord) -> SandboxOut:
    """A sandbox that runs in no process here: as stored."""
    lim = rec.limits
    return SandboxOut(
        id=rec.id, tenant_id=rec.tenant_id, template=rec.template, backend=rec.backend, isolation=rec.isolation,
        state="running" if rec.state == "running" else "killed", killed_reason=rec.killed_reason,
        created_at=rec.created_at, expires_at=rec.expires_at, ended_at=rec.ended_at, metadata=rec.metadata,
        pooled=rec.pooled,
        limits=LimitsOut(memory_mib=int(lim.get("memory_mib", 0)), cpus=float(lim.get("cpus", 0)),
                         pids=int(lim.get("pids", 0)), workspace_mib=int(lim.get("workspace_mib", 0)),
                         output_cap_bytes=int(lim.get("output_cap_bytes", 0)), network=str(lim.get("network", "none"))),
        usage={k: round(v, 4) for k, v in rec.usage.items()},
    )


async def _body(request: Request, cap: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise PayloadTooLarge(f"upload of {length} bytes is over the {cap} byte limit", slug="file-too-large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            raise PayloadTooLarge(f"upload is over the {cap} byte limit", slug="file-too-large")
    return bytes(data)


def _stream(run: Callable[[Callable[[str, str], Awaitable[None]]], Awaitable[dict[str, Any]]]) -> StreamingResponse:
    """NDJSON: {"type": "stdout"|"stderr", "data"} lines, then one {"type": "result", ...}
    or {"type": "error", ...problem}."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def on_event(kind: str, data: str) -> None:
        await queue.put({"type": kind, "data": data})

    async def worker() -> None:
        try:
            result = await run(on_event)
            await queue.put({"type": "result", **result})
        except Problem as exc:
            await queue.put({"type": "error", **exc.to_dict()})
        except Exception as exc:  # never a stack trace to the client
            await queue.put({"type": "error", "status": 500, "detail": f"internal error: {type(exc).__name__}"})
        finally:
            await queue.put(None)

    async def body() -> AsyncIterator[bytes]:
        task = asyncio.create_task(worker())
        try:
            while (item := await queue.get()) is not None:
                yield orjson.dumps(item) + b"\n"
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    return StreamingResponse(body(), media_type=NDJSON)


@router.get("/api/sandboxes/backends")
async def backends(principal: Principal = Depends(require("sandbox:read")),
                   platform: Platform = Depends(get_platform)) -> BackendsOut:
    svc = _svc(platform)
    return BackendsOut(items=[BackendOut(**b) for b in svc.backends_info()], pools=[p.describe() for p in svc.pools.values()])


@router.get("/api/sandboxes/usage")
async def usage(principal: Principal = Depends(require("sandbox:read")),
                platform: Platform = Depends(get_platform)) -> dict[str, float]:
    return _svc(platform).tenant_usage(principal)


@router.post("/api/sandboxes", status_code=201)
async def create(body: CreateIn, principal: Principal = Depends(require("sandbox:create")),
                 platform: Platform = Depends(get_platform)) -> SandboxOut:
    return render(await _svc(platform).create(principal, body))


@router.get("/api/sandboxes")
async def list_sandboxes(include_ended: bool = False, principal: Principal = Depends(require("sandbox:read")),
                         platform: Platform = Depends(get_platform)) -> SandboxList:
    return SandboxList(items=[render(s) for s in await _svc(platform).list_sandboxes(principal, include_ended)])


@router.get("/api/sandboxes/{sandbox_id}")
async def get(sandbox_id: str, principal: Principal = Depends(require("sandbox:read")),
              platform: Platform = Depends(get_platform)) -> SandboxOut:
    return render(await _svc(platform).get(principal, sandbox_id))


@router.post("/api/sandboxes/{sandbox_id}/timeout")
async def set_timeout(sandbox_id: str, body: TimeoutIn, principal: Principal = Depends(require("sandbox:write")),
                      platform: Platform = Depends(get_platform)) -> SandboxOut:
    return render(await _svc(platform).set_timeout(principal, sandbox_id, body.timeout_s))


@router.delete("/api/sandboxes/{sandbox_id}")
async def kill(sandbox_id: str, principal: Principal = Depends(require("sandbox:delete")),
               platform: Platform = Depends(get_platform)) -> SandboxOut:
    return render(await _svc(platform).kill(principal, sandbox_id))


@router.post("/api/sandboxes/{sandbox_id}/contexts", status_code=201)
async def create_context(sandbox_id: str, principal: Principal = Depends(require("sandbox:exec")),
                         platform: Platform = Depends(get_platform)) -> ContextOut:
    return ContextOut(context=await _svc(platform).create_context(principal, sandbox_id))


@router.post("/api/sandboxes/{sandbox_id}/run_code", response_model=ExecutionOut)
async def run_code(sandbox_id: str, body: RunCodeIn, principal: Principal = Depends(require("sandbox:exec")),
                   platform: Platform = Depends(get_platform)) -> Any:
    svc = _svc(platform)
    if body.stream:
        await svc.running(principal, sandbox_id, "sandbox:exec")
        return _stream(lambda ev: svc.run_code(principal, sandbox_id, body.code, context=body.context,
                                               timeout_s=body.timeout_s, on_event=ev))
    return await svc.run_code(principal, sandbox_id, body.code, context=body.context, timeout_s=body.timeout_s)


@router.post("/api/sandboxes/{sandbox_id}/commands", response_model=CommandOut)
async def command(sandbox_id: str, body: CommandIn, principal: Principal = Depends(require("sandbox:exec")),
                  platform: Platform = Depends(get_platform)) -> Any:
    svc = _svc(platform)

    def call(ev: Any = None) -> Awaitable[dict[str, Any]]:
        return svc.run_command(principal, sandbox_id, body.cmd, cwd=body.cwd, envs=body.envs,
                               timeout_s=body.timeout_s, stdin=body.stdin, on_event=ev)

    if body.stream:
        await svc.running(principal, sandbox_id, "sandbox:exec")
        return _stream(call)
    return await call()


@router.get("/api/sandboxes/{sandbox_id}/files")
async def read_file(sandbox_id: str, path: str = PATH, principal: Principal = Depends(require("sandbox:read")),
                    platform: Platform = Depends(get_platform)) -> Response:
    data = await _svc(platform).read_file(principal, sandbox_id, path)
    return Response(content=data, media_type="application/octet-stream")


@router.put("/api/sandboxes/{sandbox_id}/files")
async def write_file(sandbox_id: str, request: Request, path: str = PATH,
                     principal: Principal = Depends(require("sandbox:write")),
                     platform: Platform = Depends(get_platform)) -> WriteOut:
    svc = _svc(platform)
    data = await _body(request, svc.settings.upload_cap_bytes)
    return WriteOut(**await svc.write_file(principal, sandbox_id, path, data))


@router.delete("/api/sandboxes/{sandbox_id}/files", status_code=204)
async def remove_file(sandbox_id: str, path: str = PATH, principal: Principal = Depends(require("sandbox:write")),
                      platform: Platform = Depends(get_platform)) -> Response:
    await _svc(platform).remove_file(principal, sandbox_id, path)
    return Response(status_code=204)


@router.get("/api/sandboxes/{sandbox_id}/files/list")
async def list_files(sandbox_id: str, path: str = PATH, depth: int = Query(1, ge=1, le=10),
                     principal: Principal = Depends(require("sandbox:read")),
                     platform: Platform = Depends(get_platform)) -> FileList:
    entries = await _svc(platform).list_files(principal, sandbox_id, path, depth)
    return FileList(entries=[FileEntry(**e) for e in entries])


@router.post("/api/sandboxes/{sandbox_id}/files/mkdir", status_code=204)
async def make_dir(sandbox_id: str, path: str = PATH, principal: Principal = Depends(require("sandbox:write")),
                   platform: Platform = Depends(get_platform)) -> Response:
    await _svc(platform).make_dir(principal, sandbox_id, path)
    return Response(status_code=204)


@router.post("/api/sandboxes/{sandbox_id}/files/archive")
async def upload_archive(sandbox_id: str, request: Request, path: str = PATH,
                         format: str = Query("tar", pattern="^(tar|zip)$"),
                         principal: Principal = Depends(require("sandbox:write")),
                         platform: Platform = Depends(get_platform)) -> UploadOut:
    svc = _svc(platform)
    data = await _body(request, svc.settings.upload_cap_bytes)
    return UploadOut(**await svc.upload_archive(principal, sandbox_id, path, data, format))


@router.get("/api/sandboxes/{sandbox_id}/files/archive")
async def download_archive(sandbox_id: str, path: str = PATH, principal: Principal = Depends(require("sandbox:read")),
                           platform: Platform = Depends(get_platform)) -> Response:
    data = await _svc(platform).download_archive(principal, sandbox_id, path)
    return Response(content=data, media_type="application/gzip")


# ---------------------------------------------------------------- templates

TEMPLATE_NAME = Path(..., max_length=40, pattern=r"^[a-z][a-z0-9-]{0,39}$")


@router.get("/api/sandbox-templates", tags=["sandbox templates"])
async def list_templates(principal: Principal = Depends(require("sandbox:read")),
                         platform: Platform = Depends(get_platform)) -> TemplateList:
    return TemplateList(items=[TemplateOut(**t) for t in await _svc(platform).list_templates(principal)])


@router.get("/api/sandbox-templates/{name}", tags=["sandbox templates"])
async def get_template(name: str = TEMPLATE_NAME, principal: Principal = Depends(require("sandbox:read")),
                       platform: Platform = Depends(get_platform)) -> TemplateOut:
    return TemplateOut(**await _svc(platform).get_template(principal, name))


@router.post("/api/sandbox-templates", status_code=201, tags=["sandbox templates"],
             summary="Add a template, its packages installed from the wheelhouse (operator admin)")
async def create_template(body: TemplateIn, principal: Principal = Depends(require("sandbox:admin")),
                          platform: Platform = Depends(get_platform)) -> TemplateOut:
    return TemplateOut(**await _svc(platform).create_template(principal, body.name, body.packages, body.env))


@router.delete("/api/sandbox-templates/{name}", status_code=204, tags=["sandbox templates"],
               summary="Remove a template no sandbox or pool uses (operator admin)")
async def delete_template(name: str = TEMPLATE_NAME, principal: Principal = Depends(require("sandbox:admin")),
                          platform: Platform = Depends(get_platform)) -> Response:
    await _svc(platform).delete_template(principal, name)
    return Response(status_code=204)


@router.post("/api/sandbox-templates/{name}/kubernetes", tags=["sandbox templates"],
             summary="Apply the template to the Kubernetes cluster as agent-sandbox SandboxTemplate and "
                     "SandboxWarmPool (operator admin)")
async def apply_template_kubernetes(body: KubernetesApplyIn, name: str = TEMPLATE_NAME,
                                    principal: Principal = Depends(require("sandbox:admin")),
                                    platform: Platform = Depends(get_platform)) -> KubernetesApplyOut:
    out = await _svc(platform).apply_kubernetes(principal, name, image=body.image, replicas=body.replicas,
                                                runtime_class=body.runtime_class,
                                                install_runtime_class=body.install_runtime_class)
    return KubernetesApplyOut(**out)
