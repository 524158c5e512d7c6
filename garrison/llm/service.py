"""LLMService: model pools (persisted and live), health and load monitoring, the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from fastapi import Response

from garrison.core.errors import BadRequest, NotFound
from garrison.core.principal import Principal
from garrison.llm import metrics as m
from garrison.llm.admission import Scheduler
from garrison.llm.gateway import Gateway
from garrison.llm.limits import Limiter, LocalLimiter, RedisLimiter
from garrison.llm.requests import allowed_models
from garrison.llm.schemas import ModelIn, ModelOut, ModelUpdate, ReplicaOut
from garrison.llm.settings import LLMSettings
from garrison.llm.store import ModelStore
from garrison.llm.upstreams import Breaker, ModelPool, Replica, parse_load_metrics

log = logging.getLogger("garrison.llm")


class LLMService:
    def __init__(
        self,
        db: Any,
        *,
        settings: LLMSettings | None = None,
        redis_url: str | None = None,
        metering: Any = None,
        policy: Any = None,
        audit: Any = None,
    ) -> None:
        self.settings = s = settings or LLMSettings()
        self.store = ModelStore(db)
        self.pools: dict[str, ModelPool] = {}
        self.limiter: Limiter = RedisLimiter(redis_url) if redis_url else LocalLimiter()
        self.scheduler = Scheduler(
            queue_max=s.queue_max, queue_wait_s=s.queue_wait_s, available=self._available,
            usable=lambda r, now: r.healthy and r.breaker.allows(now),
        )
        self.scheduler.on_wait = lambda model, waited: m.QUEUE_WAIT.labels(model).observe(waited)
        self.http: aiohttp.ClientSession | None = None  # made in start(): it needs the running loop
        self.gateway = Gateway(
            settings=s, pools=self.pools, scheduler=self.scheduler, limiter=self.limiter, http=None,
            metering=metering, policy=policy, audit=audit,
        )
        self._monitor: asyncio.Task[None] | None = None
        self._last_health = 0.0

    def _available(self, replica: Replica, now: float) -> bool:
        s = self.settings
        return replica.available(now, s.metrics_stale_s, s.saturation_waiting, s.saturation_kv)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.max_connections, ttl_dns_cache=300),
            auto_decompress=False,  # bodies are relayed as the upstream sent them
            skip_auto_headers=("User-Agent",),
        )
        self.gateway.http = self.http
        await self.reload()
        self._monitor = asyncio.create_task(self._monitor_loop(), name="llm-monitor")

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self.http is not None:
            await self.http.close()
        await self.limiter.close()

    async def reload(self) -> None:
        """Rebuild the live pools from the store, keeping each replica's counters."""
        rows = await self.store.load_all()
        old = {r.id: r for p in self.pools.values() for r in p.replicas}
        fresh: dict[str, ModelPool] = {}
        for row in rows:
            settings = {
                "fallbacks": list(row["fallbacks"] or []), "context_window": row["context_window"],
                "provider": row["provider"], "rpm": row["rpm"], "tpm": row["tpm"], "tenant_rpm": row["tenant_rpm"],
                "tenant_tpm": row["tenant_tpm"],
            }
            pool = self.pools.get(row["name"]) or ModelPool(name=row["name"], **settings)
            for k, v in settings.items():  # the same object: calls in flight hold it
                setattr(pool, k, v)
            replicas: list[Replica] = []
            for r in row["replicas"]:
                live = old.get(r["id"])
                config = {
                    "base_url": r["base_url"].rstrip("/"), "kind": r["kind"], "upstream_model": r["upstream_model"],
                    "api_key": r["api_key"], "max_concurrency": r["max_concurrency"],
                    "priority_scheduling": bool(r["priority_scheduling"]),
                }
                if live is not None:
                    # The same object: requests in flight release the slot they took on it.
                    for k, v in config.items():
                        setattr(live, k, v)
                    replicas.append(live)
                    continue
                breaker = Breaker(self.settings.breaker_failures, self.settings.breaker_cooldown_s)
                replicas.append(Replica(id=r["id"], model=r["model"], breaker=breaker, **config))
            pool.replicas = replicas
            fresh[pool.name] = pool
        # Same dict object: the gateway holds it.
        self.pools.clear()
        self.pools.update(fresh)

    # ---- monitoring ------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.scrape_interval_s)
            try:
                await self.monitor_once()
            except Exception:
                log.exception("llm monitor round failed")

    async def monitor_once(self, *, health: bool | None = None) -> None:
        now = time.monotonic()
        replicas = [r for p in self.pools.values() for r in p.replicas]
        jobs = [self._scrape(r) for r in replicas if r.kind in ("vllm", "llamacpp")]
        if health or (health is None and now - self._last_health >= self.settings.health_interval_s):
            self._last_health = now
            jobs += [self._health(r) for r in replicas]
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)
        for pool in self.pools.values():
            self.scheduler.dispatch(pool)  # breakers cooled down, load dropped
            m.QUEUE_DEPTH.labels(pool.name).set(self.scheduler.depth(pool.name))

    @staticmethod
    def _root(replica: Replica) -> str:
        base = replica.base_url
        return base[:-3] if base.endswith("/v1") else base

    async def _get(self, url: str, headers: dict[str, str] | None, timeout_s: float) -> tuple[int, str]:
        assert self.http is not None
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.http.get(url, headers=headers, timeout=timeout) as resp:
            return resp.status, await resp.text()

    async def _scrape(self, replica: Replica) -> None:
        try:
            status, text = await self._get(self._root(replica) + "/metrics", None, self.settings.metrics_stale_s)
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return
        if status != 200:
            return
        replica.waiting, replica.kv_usage = parse_load_metrics(text)
        replica.scraped_at = time.monotonic()

    async def _health(self, replica: Replica) -> None:
        headers = {"authorization": f"Bearer {replica.api_key}"} if replica.api_key else None
        try:
            status, _ = await self._get(replica.base_url + "/models", headers, 5.0)
            replica.healthy = status < 500
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            replica.healthy = False

    # ---- admin -----------------------------------------------------------------------

    def list_models(self) -> list[ModelOut]:
        return [self._out(p) for p in sorted(self.pools.values(), key=lambda p: p.name)]

    def get_model(self, name: str) -> ModelOut:
        pool = self.pools.get(name)
        if pool is None:
            raise NotFound(f"no model {name}")
        return self._out(pool)

    def _out(self, pool: ModelPool) -> ModelOut:
        return ModelOut(
            name=pool.name, fallbacks=pool.fallbacks, context_window=pool.context_window, provider=pool.provider,
            rpm=pool.rpm, tpm=pool.tpm, tenant_rpm=pool.tenant_rpm, tenant_tpm=pool.tenant_tpm,
            queue_depth=self.scheduler.depth(pool.name),
            replicas=[
                ReplicaOut(
                    id=r.id, base_url=r.base_url, kind=r.kind, upstream_model=r.upstream_model,
                    max_concurrency=r.max_concurrency, priority_scheduling=r.priority_scheduling,
                    has_api_key=bool(r.api_key), in_flight=r.in_flight, healthy=r.healthy,
                    breaker=r.breaker.state, waiting=r.waiting, kv_cache_usage=r.kv_usage,
                )
                for r in pool.replicas
            ],
        )

    def _check_fallbacks(self, name: str, fallbacks: list[str] | None) -> None:
        for f in fallbacks or []:
            if f == name:
                raise BadRequest(f"model {name} cannot be its own fallback")

    async def add(self, body: ModelIn) -> ModelOut:
        url = urlsplit(body.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise BadRequest("base_url must be an http(s) URL such as http://10.0.0.5:8000/v1")
        self._check_fallbacks(body.model, body.fallbacks)
        model_fields = {
            k: v for k, v in body.model_dump(include=set(ModelUpdate.model_fields)).items() if v is not None
        }
        replica = {
            "base_url": body.base_url.rstrip("/"), "kind": body.kind, "upstream_model": body.upstream_model,
            "api_key": body.api_key, "max_concurrency": body.max_concurrency,
            "priority_scheduling": body.priority_scheduling,
        }
        await self.store.add_replica(body.model, model_fields, replica)
        await self.reload()
        return self.get_model(body.model)

    async def update(self, name: str, body: ModelUpdate) -> ModelOut:
        fields = body.model_dump(exclude_unset=True)
        self._check_fallbacks(name, fields.get("fallbacks"))
        if fields:
            await self.store.update_model(name, fields)
            await self.reload()
        return self.get_model(name)

    async def remove(self, name: str) -> None:
        await self.store.remove_model(name)
        await self.reload()

    async def remove_replica(self, name: str, replica_id: str) -> None:
        await self.store.remove_replica(name, replica_id)
        await self.reload()

    # ---- the OpenAI-compatible surface -----------------------------------------------

    def visible_models(self, principal: Principal) -> dict[str, Any]:
        allow = allowed_models(principal)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "garrison"}
            for name in sorted(self.pools)
            if allow is None or name in allow
        ]
        return {"object": "list", "data": data}

    # Set by the runtime layer (runtime/calls.py): a call from a durable run's step is recorded, and the
    # same call from a retry of that step is answered from the record, not sent (nor metered) again.
    call_journal: Any = None

    async def call(
        self, principal: Principal, op: str, raw: bytes, headers: Mapping[str, str], state: Any = None
    ) -> Response:
        journal = self.call_journal
        if journal is not None and "x-garrison-step" in headers:
            return await journal.record_or_replay(  # type: ignore[no-any-return]
                principal, op, raw, headers, lambda: self.gateway.call(principal, op, raw, headers, state))
        return await self.gateway.call(principal, op, raw, headers, state)
