"""Identity: tenants, principals, API keys and session tokens.

Authentication is on every request's hot path, so verified keys are cached in memory
(revocation in this process clears the entry at once; other processes see it within
``CACHE_TTL_S``), and last-used times are written in batches. An entry past half its TTL is
reloaded in the background while it is still served, and a key has at most one load in flight,
so expiry does not send every concurrent request to the database at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from garrison.core.clock import aware, rfc3339, utcnow
from garrison.core.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from garrison.core.ids import new_id
from garrison.core.principal import SUPERUSER_SCOPE, Principal
from garrison.core.signing import load_or_create_ed25519, write_private
from garrison.db import Database
from garrison.identity import keys as keyfmt
from garrison.identity.tables import api_keys, principals, tenants
from garrison.identity.tokens import TokenSigner, looks_like_jwt

log = logging.getLogger("garrison.identity")
DEFAULT_TENANT = "default"
CACHE_TTL_S = 5.0
REFRESH_AFTER_S = CACHE_TTL_S / 2  # reload ahead of expiry; never serve an entry older than the TTL
PRINCIPAL_KINDS = ("user", "service", "agent")


@dataclass
class _CachedKey:
    secret_hash: str
    principal: Principal
    expires_at: datetime | None
    revoked: bool
    loaded: float


class IdentityService:
    def __init__(self, db: Database, data_dir: Path, *, token_max_ttl_s: int) -> None:
        self.db = db
        self.data_dir = data_dir
        self.token_max_ttl_s = token_max_ttl_s
        self.signer = TokenSigner(load_or_create_ed25519(data_dir / "keys" / "token-signing.key"))
        self._cache: dict[str, _CachedKey] = {}
        self._loading: dict[str, asyncio.Task[_CachedKey | None]] = {}  # one load per key
        self._tokens: dict[str, tuple[Principal, float]] = {}
        self._last_used: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self.default_tenant_id: str = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_last_used_loop(), name="garrison-key-last-used")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight is not None:  # the loop's write the cancel found under way ends first
            with contextlib.suppress(Exception):
                await self._inflight
        if self._loading:  # key reads in flight end before the engine is disposed
            await asyncio.gather(*self._loading.values(), return_exceptions=True)
        try:
            await self._flush_last_used()
        except Exception:  # last-used times are advisory; never fail a shutdown over them
            log.warning("could not record keys' last-used times at shutdown", exc_info=True)

    # -- bootstrap ---------------------------------------------------------------------------
    async def bootstrap(self, admin_key_path: Path) -> str | None:
        """First start: default tenant and an admin key, written to ``admin.key`` (0600)."""
        existing = await self.tenant_by_name(DEFAULT_TENANT)
        if existing:
            self.default_tenant_id = existing["id"]
            return None
        tenant = await self.create_tenant(DEFAULT_TENANT)
        self.default_tenant_id = tenant["id"]
        _, key = await self.create_key(tenant["id"], principal_name="admin", name="bootstrap admin",
                                       scopes=[SUPERUSER_SCOPE], kind="user")
        write_private(admin_key_path, (key + "\n").encode())
        return key

    # -- tenants -----------------------------------------------------------------------------
    async def create_tenant(self, name: str) -> dict[str, Any]:
        name = name.strip()
        if not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
            raise BadRequest("tenant name must be 1-128 characters of letters, digits, '-', '_' or '.'")
        if await self.tenant_by_name(name):
            raise Conflict(f"tenant {name!r} already exists")
        row = {"id": new_id("ten"), "name": name, "created_at": utcnow(), "disabled": False}
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(tenants), row)
        except IntegrityError:
            # A concurrent request created it between the check above and this insert.
            raise Conflict(f"tenant {name!r} already exists") from None
        return row

    async def tenant_by_name(self, name: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(tenants).where(tenants.c.name == name))).mappings().first()
        return dict(row) if row else None

    async def resolve_tenant(self, ref: str) -> dict[str, Any]:
        """A tenant by id or by name."""
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                select(tenants).where((tenants.c.id == ref) | (tenants.c.name == ref))
            )).mappings().first()
        if not row:
            raise NotFound(f"tenant {ref!r} does not exist")
        return dict(row)

    async def list_tenants(self) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(tenants).order_by(tenants.c.created_at))).mappings().all()
        return [dict(r) for r in rows]

    # -- principals and keys -----------------------------------------------------------------
    async def _principal_row(self, tenant_id: str, name: str, kind: str) -> dict[str, Any]:
        if kind not in PRINCIPAL_KINDS:
            raise BadRequest(f"principal kind must be one of {', '.join(PRINCIPAL_KINDS)}")
        query = select(principals).where((principals.c.tenant_id == tenant_id) & (principals.c.name == name))
        try:
            async with self.db.engine.begin() as conn:
                row = (await conn.execute(query)).mappings().first()
                if row:
                    return dict(row)
                new = {"id": new_id("prn"), "tenant_id": tenant_id, "kind": kind, "name": name,
                       "created_at": utcnow()}
                await conn.execute(insert(principals), new)
                return new
        except IntegrityError:
            # A concurrent request inserted the same new principal first (uq_principals_tenant_name).
            async with self.db.engine.connect() as conn:
                row = (await conn.execute(query)).mappings().first()
            if row is None:
                raise
            return dict(row)

    async def create_key(self, tenant_id: str, *, principal_name: str, name: str, scopes: list[str],
                         kind: str = "service", ttl_s: int | None = None,
                         attributes: dict[str, Any] | None = None, rotated_from: str | None = None,
                         ) -> tuple[dict[str, Any], str]:
        bad = [s for s in scopes if not keyfmt.valid_scope(s)]
        if bad or not scopes:
            raise BadRequest(f"scopes must be 'resource:verb' (e.g. registry:read); bad: {bad or 'none given'}")
        if ttl_s is not None and ttl_s <= 0:
            raise BadRequest("ttl must be positive")
        prn = await self._principal_row(tenant_id, principal_name, kind)
        key_id, key, digest = keyfmt.new_key()
        now = utcnow()
        row = {
            "id": key_id, "tenant_id": tenant_id, "principal_id": prn["id"], "name": name,
            "secret_hash": digest, "scopes": sorted(set(scopes)), "attributes": attributes or {},
            "created_at": now, "expires_at": now + timedelta(seconds=ttl_s) if ttl_s else None,
            "revoked_at": None, "last_used_at": None, "rotated_from": rotated_from,
        }
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(api_keys), row)
        return self._public(row, prn), key

    def _public(self, row: dict[str, Any], prn: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k != "secret_hash"}
        for k in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            out[k] = rfc3339(aware(out.get(k)))
        if prn:
            out["principal"] = {"id": prn["id"], "name": prn["name"], "kind": prn["kind"]}
        return out

    async def get_key(self, key_id: str) -> dict[str, Any]:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                select(api_keys, principals.c.name.label("p_name"), principals.c.kind.label("p_kind"))
                .join(principals, principals.c.id == api_keys.c.principal_id)
                .where(api_keys.c.id == key_id))).mappings().first()
        if not row:
            raise NotFound(f"key {key_id!r} does not exist")
        d = dict(row)
        prn = {"id": d["principal_id"], "name": d.pop("p_name"), "kind": d.pop("p_kind")}
        return self._public(d, prn) | {"_secret_hash": row["secret_hash"]}

    async def list_keys(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        q = (select(api_keys, principals.c.name.label("p_name"), principals.c.kind.label("p_kind"))
             .join(principals, principals.c.id == api_keys.c.principal_id).order_by(api_keys.c.created_at))
        if tenant_id:
            q = q.where(api_keys.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            prn = {"id": d["principal_id"], "name": d.pop("p_name"), "kind": d.pop("p_kind")}
            out.append(self._public(d, prn))
        return out

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        key = await self.get_key(key_id)
        if key["revoked_at"] is None:
            async with self.db.engine.begin() as conn:
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=utcnow()))
        self._cache.pop(key_id, None)
        self._loading.pop(key_id, None)  # a load that read the row before the revoke must not store it
        self._tokens = {t: v for t, v in self._tokens.items() if v[0].key_id != key_id}
        key = await self.get_key(key_id)
        key.pop("_secret_hash", None)
        return key

    async def rotate_key(self, key_id: str) -> tuple[dict[str, Any], str]:
        """A new secret with the same principal, scopes and attributes; the old key is revoked."""
        old = await self.get_key(key_id)
        if old["revoked_at"] is not None:
            raise Conflict(f"key {key_id} is revoked; create a new key instead")
        ttl = None
        if old["expires_at"]:
            remaining = datetime.fromisoformat(old["expires_at"].replace("Z", "+00:00")) - utcnow()
            ttl = max(1, int(remaining.total_seconds()))
        row, key = await self.create_key(old["tenant_id"], principal_name=old["principal"]["name"],
                                         name=old["name"], scopes=old["scopes"], kind=old["principal"]["kind"],
                                         ttl_s=ttl, attributes=old["attributes"], rotated_from=key_id)
        await self.revoke_key(key_id)
        return row, key

    # -- authentication ----------------------------------------------------------------------
    async def authenticate(self, credential: str) -> Principal:
        if looks_like_jwt(credential):
            return await self._authenticate_token(credential)
        parsed = keyfmt.parse_key(credential)
        if parsed is None:
            raise Unauthorized("credential is neither a garrison API key (gk_...) nor a session token")
        key_id, secret = parsed
        entry = await self._key_entry(key_id)
        if entry is None or not keyfmt.secret_matches(secret, entry.secret_hash):
            raise Unauthorized("API key is not valid")
        self._check_usable(entry)
        self._last_used[key_id] = utcnow()
        return entry.principal

    def _check_usable(self, entry: _CachedKey) -> None:
        if entry.revoked:
            raise Unauthorized("API key has been revoked")
        if entry.expires_at is not None and entry.expires_at <= utcnow():
            raise Unauthorized("API key has expired")

    async def _key_entry(self, key_id: str) -> _CachedKey | None:
        entry = self._cache.get(key_id)
        if entry is not None:
            age = time.monotonic() - entry.loaded
            if age < CACHE_TTL_S:
                if age >= REFRESH_AFTER_S and key_id not in self._loading:
                    self._load(key_id)  # background: this request keeps the still-valid entry
                return entry
        # shield: a request cancelled while waiting must not cancel the load others share.
        return await asyncio.shield(self._loading.get(key_id) or self._load(key_id))

    def _load(self, key_id: str) -> asyncio.Task[_CachedKey | None]:
        task = asyncio.create_task(self._read_key(key_id), name="garrison-key-load")
        self._loading[key_id] = task
        task.add_done_callback(lambda t: self._load_done(key_id, t))
        return task

    def _load_done(self, key_id: str, task: asyncio.Task[_CachedKey | None]) -> None:
        if self._loading.get(key_id) is task:
            del self._loading[key_id]
        if not task.cancelled() and task.exception() is not None:  # retrieved, so a background one is logged
            log.warning("could not load API key %s", key_id, exc_info=task.exception())

    async def _read_key(self, key_id: str) -> _CachedKey | None:
        started = time.monotonic()  # the entry is as old as the read's start, not its end
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                select(api_keys, principals.c.kind.label("p_kind"), principals.c.name.label("p_name"),
                       tenants.c.disabled.label("t_disabled"))
                .join(principals, principals.c.id == api_keys.c.principal_id)
                .join(tenants, tenants.c.id == api_keys.c.tenant_id)
                .where(api_keys.c.id == key_id))).mappings().first()
        current = self._loading.get(key_id) is asyncio.current_task()  # False once revoked meanwhile
        if row is None:
            if current:
                self._cache.pop(key_id, None)
            return None
        principal = Principal(
            id=row["principal_id"], tenant_id=row["tenant_id"], kind=row["p_kind"],
            scopes=frozenset(row["scopes"]), name=row["p_name"], key_id=key_id,
            attributes=dict(row["attributes"] or {}),
        )
        entry = _CachedKey(row["secret_hash"], principal, aware(row["expires_at"]),
                           row["revoked_at"] is not None or bool(row["t_disabled"]), started)
        if current:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key_id] = entry
        return entry

    async def _authenticate_token(self, token: str) -> Principal:
        hit = self._tokens.get(token)
        now = time.time()
        if hit is None:
            try:
                claims = self.signer.verify(token)
            except jwt.ExpiredSignatureError as exc:
                raise Unauthorized("session token has expired") from exc
            except jwt.PyJWTError as exc:
                raise Unauthorized("session token is not valid") from exc
            principal = Principal(
                id=claims["sub"], tenant_id=claims["tid"], kind="agent", scopes=frozenset(claims["scp"]),
                name=claims.get("nam") or "", key_id=claims.get("pky"), token_id=claims["jti"],
                session_id=claims.get("sid"),
            )
            if len(self._tokens) > 100_000:
                self._tokens.clear()
            self._tokens[token] = hit = (principal, float(claims["exp"]))
        principal, exp = hit
        if exp <= now:
            self._tokens.pop(token, None)
            raise Unauthorized("session token has expired")
        if principal.key_id:  # a token dies with the key that minted it
            parent = await self._key_entry(principal.key_id)
            if parent is None:
                raise Unauthorized("session token's parent key no longer exists")
            self._check_usable(parent)
        return principal

    def mint_token(self, principal: Principal, *, scopes: list[str] | None, ttl_s: int,
                   session_id: str | None = None, name: str | None = None) -> dict[str, Any]:
        """A narrower, short-lived token for an agent session; never wider than the caller."""
        wanted = sorted(set(scopes)) if scopes else sorted(principal.scopes)
        bad = [s for s in wanted if not keyfmt.valid_scope(s)]
        if bad:
            raise BadRequest(f"scopes must be 'resource:verb'; bad: {bad}")
        wider = [s for s in wanted if not principal.has_scope(s)]
        if wider:
            raise Forbidden(f"a token cannot carry scopes its minter lacks: {wider}")
        if not 1 <= ttl_s <= self.token_max_ttl_s:
            raise BadRequest(f"ttl_s must be between 1 and {self.token_max_ttl_s} seconds")
        token, claims = self.signer.mint(sub=principal.id, tenant_id=principal.tenant_id, scopes=wanted,
                                         ttl_s=ttl_s, parent_key=principal.key_id, session_id=session_id,
                                         name=name or principal.name)
        return {"token": token, "token_id": claims["jti"], "scopes": wanted, "session_id": session_id,
                "expires_at": rfc3339(datetime.fromtimestamp(claims["exp"], tz=utcnow().tzinfo))}

    # -- last-used bookkeeping ---------------------------------------------------------------
    async def _flush_last_used_loop(self) -> None:
        while True:
            await asyncio.sleep(5)
            # Shielded: a cancel (stop()) inside the UPDATE would leave the aiosqlite connection
            # holding SQLite's write lock, and stop()'s own flush then waited out the 10 s busy timeout.
            self._inflight = asyncio.ensure_future(self._flush_last_used())
            with contextlib.suppress(Exception):
                await asyncio.shield(self._inflight)

    async def _flush_last_used(self) -> None:
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        async with self.db.engine.begin() as conn:
            for key_id, ts in batch.items():
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=ts))
