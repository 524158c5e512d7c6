"""Gateway persistence: upstreams and virtual servers (SQLAlchemy Core)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from garrison.core.clock import aware
from garrison.core.errors import Conflict
from garrison.db import Database
from garrison.tools.tables import tools_upstreams, tools_virtual_servers


@dataclass(slots=True)
class Upstream:
    id: str
    tenant_id: str
    name: str
    kind: str
    url: str
    registry_name: str | None
    auth_kind: str
    auth_header: str | None
    auth_secret: str | None  # sealed
    oauth_token_url: str | None
    oauth_client_id: str | None
    oauth_scope: str | None
    timeout_s: float | None
    idempotent_tools: list[str]
    openapi_doc: str | None
    tool_list: list[dict[str, Any]] | None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "url": self.url,
                "registry_name": self.registry_name, "auth_kind": self.auth_kind, "timeout_s": self.timeout_s,
                "idempotent_tools": self.idempotent_tools, "created_at": self.created_at,
                "updated_at": self.updated_at}


@dataclass(slots=True)
class VirtualServer:
    id: str
    tenant_id: str
    name: str
    description: str
    tools: list[dict[str, Any]]
    rate_limit_per_min: int | None
    created_at: datetime
    updated_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description, "tools": self.tools,
                "rate_limit_per_min": self.rate_limit_per_min, "url_path": f"/mcp/{self.name}",
                "created_at": self.created_at, "updated_at": self.updated_at}


def _upstream(row: Any) -> Upstream:
    m = dict(row._mapping)
    m["created_at"], m["updated_at"] = aware(m["created_at"]), aware(m["updated_at"])
    m["idempotent_tools"] = list(m["idempotent_tools"] or [])
    return Upstream(**m)


def _vs(row: Any) -> VirtualServer:
    m = dict(row._mapping)
    m["created_at"], m["updated_at"] = aware(m["created_at"]), aware(m["updated_at"])
    rl = m.pop("rate_limit_per_min")
    return VirtualServer(**m, rate_limit_per_min=int(rl) if rl else None)


class ToolsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all_upstreams(self) -> list[Upstream]:
        async with self.db.engine.connect() as conn:
            return [_upstream(r) for r in (await conn.execute(select(tools_upstreams))).all()]

    async def all_virtual_servers(self) -> list[VirtualServer]:
        async with self.db.engine.connect() as conn:
            return [_vs(r) for r in (await conn.execute(select(tools_virtual_servers))).all()]

    async def insert_upstream(self, values: dict[str, Any]) -> Upstream:
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(tools_upstreams).values(**values))
        except IntegrityError as exc:
            raise Conflict(f"an upstream named {values['name']!r} already exists") from exc
        return Upstream(**values)

    async def update_upstream(self, upstream_id: str, values: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(update(tools_upstreams).where(tools_upstreams.c.id == upstream_id).values(**values))

    async def delete_upstream(self, tenant_id: str, name: str) -> bool:
        async with self.db.engine.begin() as conn:
            done = await conn.execute(delete(tools_upstreams).where(and_(
                tools_upstreams.c.tenant_id == tenant_id, tools_upstreams.c.name == name)))
        return bool(done.rowcount)

    async def upsert_virtual_server(self, values: dict[str, Any], *, replace: bool) -> VirtualServer:
        t = tools_virtual_servers
        async with self.db.engine.begin() as conn:
            existing = (await conn.execute(select(t.c.id, t.c.created_at).where(and_(
                t.c.tenant_id == values["tenant_id"], t.c.name == values["name"])))).first()
            if existing is not None:
                if not replace:
                    raise Conflict(f"a virtual server named {values['name']!r} already exists; PUT to replace it")
                values = {**values, "id": existing.id, "created_at": aware(existing.created_at)}
                await conn.execute(update(t).where(t.c.id == existing.id).values(**values))
            else:
                try:
                    await conn.execute(insert(t).values(**values))
                except IntegrityError as exc:
                    raise Conflict(f"a virtual server named {values['name']!r} already exists") from exc
        rl = values.get("rate_limit_per_min")
        return VirtualServer(**{**values, "rate_limit_per_min": int(rl) if rl else None})

    async def delete_virtual_server(self, tenant_id: str, name: str) -> bool:
        t = tools_virtual_servers
        async with self.db.engine.begin() as conn:
            done = await conn.execute(delete(t).where(and_(t.c.tenant_id == tenant_id, t.c.name == name)))
        return bool(done.rowcount)
