"""MCP tools served by the tool gateway (when the tools layer is present).

Without a ``sandbox_id`` argument a tool uses the caller's own session sandbox,
created on first use and reused (same tenant, same principal, same session).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from garrison.core.principal import Principal
from garrison.sandbox.schemas import CreateIn

if TYPE_CHECKING:
    from garrison.sandbox.service import SandboxService

SERVER_NAME = "sandbox"
_ID = {"type": "string", "description": "An existing sandbox id; omit to use your session's sandbox."}


def register_tools(service: SandboxService, tools: Any) -> None:
    sessions: dict[tuple[str, str, str], str] = {}

    async def sandbox_for(principal: Principal, args: dict[str, Any]) -> str:
        if args.get("sandbox_id"):
            return str(args["sandbox_id"])
        key = (principal.tenant_id, principal.id, principal.session_id or "")
        sid = sessions.get(key)
        if sid is None or sid not in service.sandboxes:
            sbx = await service.create(principal, CreateIn())
            sid = sessions[key] = sbx.id
        return sid

    async def execute_code(principal: Principal, args: dict[str, Any]) -> dict[str, Any]:
        sid = await sandbox_for(principal, args)
        out = await service.run_code(principal, sid, str(args.get("code", "")), timeout_s=args.get("timeout_s"))
        return {"sandbox_id": sid, **out}

    async def run_command(principal: Principal, args: dict[str, Any]) -> dict[str, Any]:
        sid = await sandbox_for(principal, args)
        out = await service.run_command(principal, sid, str(args.get("cmd", "")), timeout_s=args.get("timeout_s"))
        return {"sandbox_id": sid, **out}

    async def read_file(principal: Principal, args: dict[str, Any]) -> dict[str, Any]:
        sid = await sandbox_for(principal, args)
        data = await service.read_file(principal, sid, str(args.get("path", "")))
        return {"sandbox_id": sid, "path": args.get("path"), "content": data.decode("utf-8", "replace")}

    async def write_file(principal: Principal, args: dict[str, Any]) -> dict[str, Any]:
        sid = await sandbox_for(principal, args)
        out = await service.write_file(principal, sid, str(args.get("path", "")), str(args.get("content", "")).encode())
        return {"sandbox_id": sid, **out}

    def schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {"type": "object", "properties": {**props, "sandbox_id": _ID}, "required": required}

    tools.register_local_tools(SERVER_NAME, [
        {"name": "execute_code", "description": "Run Python in a stateful sandboxed interpreter; returns stdout, "
         "stderr, the value of the last expression and errors with tracebacks.",
         "input_schema": schema({"code": {"type": "string"}, "timeout_s": {"type": "number"}}, ["code"]),
         "handler": execute_code},
        {"name": "run_command", "description": "Run a shell command in the sandbox (no network).",
         "input_schema": schema({"cmd": {"type": "string"}, "timeout_s": {"type": "number"}}, ["cmd"]),
         "handler": run_command},
        {"name": "read_file", "description": "Read a file from the sandbox workspace.",
         "input_schema": schema({"path": {"type": "string"}}, ["path"]), "handler": read_file, "idempotent": True},
        {"name": "write_file", "description": "Write a text file in the sandbox workspace.",
         "input_schema": schema({"path": {"type": "string"}, "content": {"type": "string"}}, ["path", "content"]),
         "handler": write_file},
    ])
