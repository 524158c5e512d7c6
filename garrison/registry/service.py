"""RegistryService: the official registry rules (publish, latest, status, listing) with
tenant-owned namespaces, policy checks and audit."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.exc import IntegrityError

from garrison.core.clock import utcnow
from garrison.core.errors import BadRequest, Conflict, Forbidden, NotFound
from garrison.core.ids import new_id
from garrison.core.pagination import decode_cursor, encode_cursor
from garrison.core.principal import Principal
from garrison.policy import Resource
from garrison.registry.config import RegistrySettings
from garrison.registry.schemas import GARRISON_META, Entry, render
from garrison.registry.store import RegistryStore
from garrison.registry.tooldiff import check_tools, diff, is_major_bump
from garrison.registry.validation import check_name, namespace_of, validate_server_json
from garrison.registry.versions import check_version, compare_versions

if TYPE_CHECKING:
    from garrison.platform import Platform

DEFAULT_LIMIT = 30
MAX_LIMIT = 100


def clamp_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    return max(1, min(MAX_LIMIT, limit))


def _search_text(doc: dict[str, Any]) -> str:
    return f"{doc.get('name', '')}\n{doc.get('description', '')}".lower()


class RegistryService:
    def __init__(self, platform: Platform | None, db: Any, settings: RegistrySettings | None = None) -> None:
        self.platform = platform
        self.settings = settings or RegistrySettings()
        self.store = RegistryStore(db)
        self.db = db
        # Health of remote entries by (name, version), filled by the health checker.
        self.health: dict[tuple[str, str], dict[str, Any]] = {}
        self._listeners: list[Any] = []
        self.checker: Any = None

    async def start(self) -> None:
        """Start the periodic health checks when enabled."""
        from garrison.registry.health import HealthChecker

        self.checker = HealthChecker(self)
        if self.settings.health_enabled:
            self.checker.start()

    async def stop(self) -> None:
        if self.checker is not None:
            await self.checker.stop()
        self.store.dispose()

    def is_unhealthy(self, name: str) -> bool:
        """Whether the latest checked version of ``name`` failed its health checks (gateway hook)."""
        return any(k[0] == name and v.get("status") == "unhealthy" for k, v in self.health.items())

    # ---- tool lists and their diffs ---------------------------------------------------

    async def _previous_tools(self, name: str, version: str) -> tuple[str, list[dict[str, Any]]] | None:
        """The tool list of the newest version older than ``version`` that has one."""
        entries = await self.store.versions(name)
        me = next((e for e in entries if e.version == version), None)
        when = me.published_at if me else utcnow()
        older = [e for e in entries if e.version != version
                 and compare_versions(e.version, version, e.published_at, when) < 0]
        older.sort(key=lambda e: e.published_at, reverse=True)
        while older:
            best = self.store.newest_of(older)
            assert best is not None
            tools = await self.store.tool_list(name, best.version)
            if tools is not None:
                return best.version, tools
            older.remove(best)
        return None

    async def check_tool_change(self, name: str, version: str, tools: list[dict[str, Any]],
                                force: bool) -> dict[str, Any]:
        """The diff against the previous version; breaking changes under a non-major bump are refused."""
        check_tools(tools)
        prev = await self._previous_tools(name, version)
        if prev is None:
            return {"against": None, "changes": []}
        changes = diff(prev[1], tools)
        breaking = [c for c in changes if c["breaking"]]
        if breaking and not force and is_major_bump(prev[0], version) is False:
            raise Conflict(
                f"{name} {version} breaks the tools of {prev[0]} without a major version bump; publish a new "
                "major version or pass force=true", changes=breaking)
        return {"against": prev[0], "changes": changes}

    async def record_tools(self, principal: Principal, name: str, version: str, tools: Any,
                           *, force: bool = False) -> dict[str, Any]:
        await self._check(principal, "registry:publish", name, principal.tenant_id)
        async with self.db.engine.connect() as conn:
            await self._existing(conn, principal, name, version)
        result = await self.check_tool_change(name, version, tools, force)
        await self.store.save_tool_list(name, version, tools, utcnow())
        await self._audit(principal, "registry:tools", name, version=version, changes=len(result["changes"]))
        return {**result, "tools": len(tools)}

    async def tools_of(self, name: str, version: str) -> list[dict[str, Any]]:
        entry = await self.get(name, version, include_deleted=True)
        tools = await self.store.tool_list(name, entry.version)
        if tools is None:
            raise NotFound(f"no tool list is recorded for {name} {entry.version}")
        return tools

    async def tool_diff(self, name: str, to_version: str, from_version: str | None) -> dict[str, Any]:
        new_entry = await self.get(name, to_version, include_deleted=True)
        new = await self.tools_of(name, new_entry.version)
        if from_version is None:
            prev = await self._previous_tools(name, new_entry.version)
            if prev is None:
                raise NotFound(f"no earlier version of {name} has a recorded tool list")
            from_version, old = prev
        else:
            old = await self.tools_of(name, from_version)
        changes = diff(old, new)
        return {"from": from_version, "to": new_entry.version, "changes": changes,
                "breaking": any(c["breaking"] for c in changes),
                "majorBump": is_major_bump(from_version, new_entry.version)}

    async def observe_tools(self, name: str, version: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A health check saw ``tools``: keep them as the version's list; return what changed since."""
        stored = await self.store.tool_list(name, version)
        if stored is not None and stored == tools:
            return []
        await self.store.save_tool_list(name, version, tools, utcnow())
        return diff(stored, tools) if stored is not None else []

    # ---- policy and audit -------------------------------------------------------------

    async def _check(self, principal: Principal, action: str, name: str, tenant_id: str) -> None:
        if self.platform is None:
            return
        await self.platform.policy.check(principal, action, Resource("registry_server", name, tenant_id))

    async def _audit(self, principal: Principal, action: str, name: str, **context: Any) -> None:
        if self.platform is None:
            return
        await self.platform.audit.record_now(
            principal, action, f"registry_server:{name}", decision="allow", reason="", context=context
        )

    def on_change(self, listener: Any) -> None:
        """Call ``listener(name)`` after every write (the gateway refreshes its catalogue)."""
        self._listeners.append(listener)

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    # ---- reads -----------------------------------------------------------------------

    def _with_health(self, entries: list[Entry]) -> list[Entry]:
        if self.health:
            for e in entries:
                e.health = self.health.get((e.name, e.version))
        return entries

    async def list_servers(
        self, *, cursor: str | None = None, limit: int | None = None, search: str | None = None,
        updated_since: datetime | None = None, version: str | None = None, include_deleted: bool = False,
    ) -> tuple[list[Entry], str | None]:
        after: tuple[str, str] | None = None
        if cursor:
            raw = decode_cursor(cursor)
            if not isinstance(raw.get("n"), str) or not isinstance(raw.get("v"), str):
                raise BadRequest("cursor is not valid: pass back the nextCursor value unchanged")
            after = (raw["n"], raw["v"])
        size = clamp_limit(limit)
        if updated_since is not None:
            include_deleted = True  # the official rule: incremental sync must see deletions
        entries = await self.store.list_page(
            after=after, limit=size + 1, search=search or None, updated_since=updated_since,
            version=version or None, include_deleted=include_deleted,
        )
        next_cursor = None
        if len(entries) > size:
            entries = entries[:size]
            next_cursor = encode_cursor({"n": entries[-1].name, "v": entries[-1].version})
        return self._with_health(entries), next_cursor

    @staticmethod
    def _lookup_name(name: str, version: str | None = None) -> None:
        """On reads a malformed name or version cannot exist: answer 404 saying what is wrong."""
        try:
            check_name(name)
            if version is not None and version != "latest":
                check_version(version)
        except BadRequest as exc:
            raise NotFound(f"no such server or version: {exc.detail}") from exc

    async def versions(self, name: str, *, include_deleted: bool = False) -> list[Entry]:
        self._lookup_name(name)
        entries = await self.store.versions(name)
        if not entries:
            raise NotFound(f"server {name!r} is not in the registry")
        if not include_deleted:
            entries = [e for e in entries if e.status != "deleted"]
            if not entries:
                raise NotFound(f"server {name!r} is deleted; pass include_deleted=true to see it")
        return self._with_health(entries)

    async def get(self, name: str, version: str, *, include_deleted: bool = False) -> Entry:
        self._lookup_name(name, version)
        entry = await self.store.get(name, version)
        if entry is None or (entry.status == "deleted" and not include_deleted):
            raise NotFound(f"server {name!r} has no version {version!r}")
        return self._with_health([entry])[0]

    # ---- writes ----------------------------------------------------------------------

    async def _owner_check(self, conn: Any, principal: Principal, name: str, *, claim: bool) -> None:
        namespace = namespace_of(name)
        if claim:
            await self.store.claim_namespace(conn, namespace, principal.tenant_id, utcnow())
        owner = await self.store.namespace_owner(conn, namespace, lock=True)
        if owner is not None and owner != principal.tenant_id and not self.is_operator(principal):
            if self.platform is not None:
                self.platform.audit.record(principal, "registry:publish", f"registry_namespace:{namespace}",
                                           "deny", "namespace belongs to another tenant")
            raise Forbidden(f"namespace {namespace!r} belongs to another tenant; publish under your own namespace "
                            "(only the operator's admin may write in every namespace)")

    def is_operator(self, principal: Principal) -> bool:
        """The operator's admin may write in every namespace; a tenant's admin:* key only in its own."""
        return self.platform is not None and self.platform.policy.is_operator(principal)

    async def publish(self, principal: Principal, doc: Any, *, tenant_id: str | None = None,
                      status: str = "active", published_at: datetime | None = None, force: bool = False,
                      audit: bool = True) -> Entry:
        doc = validate_server_json(doc)
        name, version = doc["name"], doc["version"]
        await self._check(principal, "registry:publish", name, principal.tenant_id)
        tools = ((doc.get("_meta") or {}).get(GARRISON_META) or {}).get("tools")
        if tools is not None:
            await self.check_tool_change(name, version, tools, force)
        owner_tenant = tenant_id or principal.tenant_id
        now = utcnow()
        when = published_at or now
        try:
            async with self.db.engine.begin() as conn:
                await self._owner_check(conn, principal, name, claim=True)
                existing = await self.store.versions(name, conn)
                if any(e.version == version for e in existing):
                    raise Conflict(f"{name} {version} is already published; versions are immutable, "
                                   "publish a new version")
                current = next((e for e in existing if e.is_latest), None)
                is_latest = current is None or compare_versions(
                    version, current.version, when, current.published_at) > 0
                entry = Entry(
                    name=name, version=version, tenant_id=owner_tenant,
                    server_json=orjson.dumps(doc).decode(), status=status, status_message=None,
                    status_changed_at=when, published_at=when, updated_at=now, is_latest=is_latest,
                )
                if is_latest and current is not None:
                    await self.store.set_latest(conn, name, None, now)
                await self.store.insert_version(conn, new_id("rsv"), entry, _search_text(doc))
        except IntegrityError as exc:  # a concurrent publish of the same version won
            raise Conflict(f"{name} {version} is already published") from exc
        if tools is not None:
            await self.store.save_tool_list(name, version, tools, now)
        if audit:
            await self._audit(principal, "registry:publish", name, version=version)
        self._changed(name)
        return entry

    async def _existing(self, conn: Any, principal: Principal, name: str, version: str) -> tuple[Entry, list[Entry]]:
        check_name(name)
        check_version(version)
        entries = await self.store.versions(name, conn)
        entry = next((e for e in entries if e.version == version), None)
        if entry is None:
            raise NotFound(f"server {name!r} has no version {version!r}")
        await self._owner_check(conn, principal, name, claim=False)
        return entry, entries

    async def update(self, principal: Principal, name: str, version: str, doc: Any) -> Entry:
        """PUT: replace a version's server.json; its name and version cannot change."""
        doc = validate_server_json(doc)
        if doc["name"] != name or doc["version"] != version:
            raise BadRequest("the body's name and version must equal the ones in the URL; "
                             "publish a new version to change them")
        await self._check(principal, "registry:publish", name, principal.tenant_id)
        now = utcnow()
        async with self.db.engine.begin() as conn:
            entry, _ = await self._existing(conn, principal, name, version)
            entry.server_json = orjson.dumps(doc).decode()
            entry.updated_at = now
            await self.store.update_fields(conn, name, version, server_json=entry.server_json,
                                           search_text=_search_text(doc), updated_at=now)
        await self._audit(principal, "registry:update", name, version=version)
        self._changed(name)
        return entry

    async def delete(self, principal: Principal, name: str, version: str) -> Entry:
        """DELETE: remove a version for good; the newest remaining one becomes latest."""
        await self._check(principal, "registry:publish", name, principal.tenant_id)
        now = utcnow()
        async with self.db.engine.begin() as conn:
            entry, entries = await self._existing(conn, principal, name, version)
            await self.store.delete_version(conn, name, version)
            if entry.is_latest:
                rest = [e for e in entries if e.version != version]
                newest = self.store.newest_of(rest)
                await self.store.set_latest(conn, name, newest.version if newest else None, now)
        self.health.pop((name, version), None)
        await self._audit(principal, "registry:delete", name, version=version)
        self._changed(name)
        entry.status, entry.status_changed_at, entry.updated_at, entry.is_latest = "deleted", now, now, False
        return entry

    async def set_status(self, principal: Principal, name: str, version: str | None,
                         status: str, message: str | None) -> list[Entry]:
        """Status PATCH of one version, or of every version when ``version`` is None."""
        await self._check(principal, "registry:publish", name, principal.tenant_id)
        now = utcnow()
        async with self.db.engine.begin() as conn:
            if version is not None:
                _, entries = await self._existing(conn, principal, name, version)
            else:
                check_name(name)
                entries = await self.store.versions(name, conn)
                if not entries:
                    raise NotFound(f"server {name!r} is not in the registry")
                await self._owner_check(conn, principal, name, claim=False)
            targets = [e for e in entries if version is None or e.version == version]
            for e in targets:
                if e.status != status:
                    e.status_changed_at = now
                e.status, e.status_message, e.updated_at = status, message, now
                await self.store.update_fields(conn, name, e.version, status=status, status_message=message,
                                               status_changed_at=e.status_changed_at, updated_at=now)
        await self._audit(principal, "registry:status", name, version=version or "*", status=status)
        self._changed(name)
        return targets

    # ---- sync ------------------------------------------------------------------------

    async def import_entries(self, principal: Principal, items: list[Any]) -> dict[str, Any]:
        """Import server.json entries (bare or in the ServerResponse envelope); known versions are skipped."""
        from garrison.registry.bulk import bulk_import

        result = await bulk_import(self, principal, items)
        # One audit entry for the whole import rather than one per entry.
        await self._audit(principal, "registry:import", "*", imported=result["imported"],
                          skipped=result["skipped"], failed=result["failed"])
        return result

    async def export_entries(self, include_deleted: bool = True) -> list[dict[str, Any]]:
        entries = await self.store.all_entries(include_deleted)
        return [orjson.loads(render(e.envelope())) for e in entries]

