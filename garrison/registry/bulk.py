"""Bulk import: a snapshot of many entries in a few statements per chunk, under the same
rules as one-by-one publishing (validation, namespace ownership, duplicates skipped,
isLatest by the official ordering)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from garrison.core.clock import aware, utcnow
from garrison.core.errors import Problem
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.registry.schemas import GARRISON_META, Entry
from garrison.registry.tables import registry_namespaces, registry_versions
from garrison.registry.validation import namespace_of, validate_server_json
from garrison.registry.versions import compare_versions

if TYPE_CHECKING:
    from garrison.registry.service import RegistryService

CHUNK = 250
V = registry_versions.c


def _label(doc: Any) -> str:
    if isinstance(doc, dict):
        return f"{doc.get('name', '?')}@{doc.get('version', '?')}"
    return "(not an object)"


def _unwrap(item: Any) -> tuple[Any, str, datetime | None]:
    doc: Any = item
    meta: dict[str, Any] = {}
    if isinstance(item, dict) and isinstance(item.get("server"), dict):
        doc = item["server"]
        meta = (item.get("_meta") or {}).get("io.modelcontextprotocol.registry/official") or {}
    status = str(meta.get("status")) if meta.get("status") in ("active", "deprecated", "deleted") else "active"
    when = None
    if isinstance(meta.get("publishedAt"), str):
        try:
            when = datetime.fromisoformat(meta["publishedAt"].replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is None:
            when = None
    return doc, status, when


class _Tally:
    def __init__(self) -> None:
        self.counts = {"imported": 0, "skipped": 0, "failed": 0}
        self.errors: list[str] = []

    def fail(self, doc: Any, detail: str) -> None:
        self.counts["failed"] += 1
        if len(self.errors) < 20:
            self.errors.append(f"{_label(doc)}: {detail}")


async def bulk_import(service: RegistryService, principal: Principal, items: list[Any]) -> dict[str, Any]:
    tally = _Tally()
    for start in range(0, len(items), CHUNK):
        await _chunk(service, principal, items[start:start + CHUNK], tally)
    return {**tally.counts, "errors": tally.errors}


async def _chunk(service: RegistryService, principal: Principal, items: list[Any], tally: _Tally) -> None:
    ready: list[tuple[dict[str, Any], str, datetime | None]] = []
    for item in items:
        doc, status, when = _unwrap(item)
        try:
            doc = validate_server_json(doc)
            await service._check(principal, "registry:publish", doc["name"], principal.tenant_id)
        except Problem as exc:
            tally.fail(doc, exc.detail)
            continue
        if ((doc.get("_meta") or {}).get(GARRISON_META) or {}).get("tools") is not None:
            await _one(service, principal, doc, status, when, tally)  # tool lists need the diff check
        else:
            ready.append((doc, status, when))
    if not ready:
        return
    try:
        await _write(service, principal, ready, tally)
    except IntegrityError:  # a concurrent publish got there first: fall back to one by one
        for doc, status, when in ready:
            await _one(service, principal, doc, status, when, tally)


async def _one(service: RegistryService, principal: Principal, doc: dict[str, Any], status: str,
               when: datetime | None, tally: _Tally) -> None:
    from garrison.core.errors import Conflict

    try:
        await service.publish(principal, doc, status=status, published_at=when, audit=False)
        tally.counts["imported"] += 1
    except Conflict:
        tally.counts["skipped"] += 1
    except Problem as exc:
        tally.fail(doc, exc.detail)


async def _write(service: RegistryService, principal: Principal,
                 ready: list[tuple[dict[str, Any], str, datetime | None]], tally: _Tally) -> None:
    store = service.store
    now = utcnow()
    imported = skipped = 0
    failures: list[tuple[Any, str]] = []
    refused: set[str] = set()
    names = sorted({d["name"] for d, _, _ in ready})
    namespaces = sorted({namespace_of(n) for n in names})
    async with service.db.engine.begin() as conn:
        for ns in namespaces:
            await store.claim_namespace(conn, ns, principal.tenant_id, now)
        owners = dict((await conn.execute(
            select(registry_namespaces.c.namespace, registry_namespaces.c.tenant_id)
            .where(registry_namespaces.c.namespace.in_(namespaces)))).all())
        rows = (await conn.execute(select(V.name, V.version, V.published_at, V.is_latest)
                                   .where(V.name.in_(names)))).all()
        known: dict[str, set[str]] = {}
        latest: dict[str, tuple[str, datetime]] = {}
        for r in rows:
            known.setdefault(r.name, set()).add(r.version)
            if r.is_latest:
                latest[r.name] = (r.version, aware(r.published_at))  # type: ignore[assignment]
        before = dict(latest)
        inserts: list[dict[str, Any]] = []
        for doc, status, when in ready:
            name, version = doc["name"], doc["version"]
            owner = owners.get(namespace_of(name))
            if owner != principal.tenant_id and not service.is_operator(principal):
                failures.append((doc, f"namespace {namespace_of(name)!r} belongs to another tenant"))
                refused.add(namespace_of(name))
                continue
            if version in known.setdefault(name, set()):
                skipped += 1
                continue
            known[name].add(version)
            published = when or now
            current = latest.get(name)
            if current is None or compare_versions(version, current[0], published, current[1]) > 0:
                latest[name] = (version, published)
            entry = Entry(name=name, version=version, tenant_id=principal.tenant_id,
                          server_json=orjson.dumps(doc).decode(), status=status, status_message=None,
                          status_changed_at=published, published_at=published, updated_at=now, is_latest=False)
            inserts.append({
                "id": new_id("rsv"), "name": name, "version": version, "tenant_id": entry.tenant_id,
                "server_json": entry.server_json,
                "search_text": f"{name}\n{doc.get('description', '')}".lower(), "status": status,
                "status_message": None, "status_changed_at": published, "published_at": published,
                "updated_at": now, "is_latest": False,
            })
            imported += 1
        if inserts:
            await conn.execute(registry_versions.insert(), inserts)
        changed = [n for n, v in latest.items() if before.get(n) != v]
        if changed:
            await conn.execute(update(registry_versions).where(and_(V.name.in_(changed), V.is_latest.is_(True)))
                               .values(is_latest=False, updated_at=now))
            await conn.execute(
                update(registry_versions).where(and_(V.name == bindparam("n"), V.version == bindparam("v")))
                .values(is_latest=True, updated_at=now),
                [{"n": n, "v": latest[n][0]} for n in changed])
    tally.counts["imported"] += imported
    tally.counts["skipped"] += skipped
    for doc, detail in failures:
        tally.fail(doc, detail)
    if service.platform is not None:
        for ns in sorted(refused):  # one deny per namespace, as publishing one by one audits it
            service.platform.audit.record(principal, "registry:publish", f"registry_namespace:{ns}", "deny",
                                          "namespace belongs to another tenant")
    for name in names:
        service._changed(name)
