"""Memory strategies: turn a session's events into long-term records with a model.

Like AgentCore Memory's built-in strategies: ``summary`` writes one record per
session into ``("summaries", actor)``; ``facts`` and ``preferences`` write one record
per line the model returns into ``("facts", actor)`` / ``("preferences", actor)``.
The model is called through garrison's LLM gateway as the caller (so admission,
budgets and metering apply).

Jobs are rows in ``state_memory_jobs``, so one queued before a crash or a restart
runs afterwards. A background worker claims due jobs with a conditional UPDATE (safe
with several garrison processes on one database) and holds a lease while it runs
one; a job whose lease lapses (its process died) is claimed again. A failure that
retrying can fix (the model or the gateway unavailable, a 5xx, a 429) is retried
with exponential backoff up to ``max_attempts``; one that it can't (no events,
unknown model, a 4xx) fails at once. The status, attempts and last error are on the job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from garrison.core.errors import BadRequest, NotFound, ServiceUnavailable
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.state.checkpoint.engine import WRITE_OPTION
from garrison.state.memory import records
from garrison.state.tables import memory_jobs as J

if TYPE_CHECKING:  # the store module (numpy) is imported when a store is first used, not at start
    from garrison.state.memory.store import GarrisonStore

log = logging.getLogger("garrison.state.memory")

PROMPTS = {
    "summary": "Summarise this conversation in a few sentences for future reference. Reply with the summary only.",
    "facts": "List the durable facts about the user stated in this conversation, one per line, nothing else.",
    "preferences": "List the user's preferences stated in this conversation, one per line, nothing else.",
}
MAX_TRANSCRIPT_CHARS = 60_000
MAX_RUNNING = 4
_PUBLIC = ("job_id", "strategy", "actor_id", "session_id", "model", "status", "attempts", "max_attempts",
           "error", "created_at", "updated_at", "next_attempt_at", "finished_at")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Permanent(Exception):
    """A failure that another attempt would repeat."""


def _principal_json(p: Principal) -> str:
    return orjson.dumps({"id": p.id, "tenant_id": p.tenant_id, "kind": p.kind, "scopes": sorted(p.scopes),
                         "name": p.name, "key_id": p.key_id, "token_id": p.token_id, "session_id": p.session_id,
                         "attributes": p.attributes}, default=str).decode()


def _principal(text: str) -> Principal:
    d = orjson.loads(text)
    return Principal(id=d["id"], tenant_id=d["tenant_id"], kind=d["kind"], scopes=frozenset(d["scopes"]),
                     name=d.get("name", ""), key_id=d.get("key_id"), token_id=d.get("token_id"),
                     session_id=d.get("session_id"), attributes=d.get("attributes") or {})


class StrategyJobs:
    """Durable strategy jobs and the worker that runs them."""

    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        self._engine = engine
        self._store_for: Callable[[str], GarrisonStore] | None = None
        self._llm: Callable[[], Any] = lambda: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.max_attempts = int(_env_float("GARRISON_MEMORY_JOB_ATTEMPTS", 5))
        self.retry_s = _env_float("GARRISON_MEMORY_JOB_RETRY_S", 5.0)  # first backoff; doubles per attempt
        self.lease_s = _env_float("GARRISON_MEMORY_JOB_LEASE_S", 600.0)
        self.poll_s = _env_float("GARRISON_MEMORY_JOB_POLL_S", 2.0)

    def start(self, store_for: Callable[[str], GarrisonStore], llm: Callable[[], Any]) -> None:
        """Run the worker: it picks up jobs left queued (or running) by an earlier process."""
        self._store_for, self._llm = store_for, llm
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    # -- API ---------------------------------------------------------------------------

    async def submit(self, principal: Principal, strategy: str, actor_id: str, session_id: str,
                     model: str) -> dict[str, Any]:
        if strategy not in PROMPTS:
            raise BadRequest(f"unknown strategy {strategy!r}: use one of {', '.join(PROMPTS)}")
        if self._llm() is None:
            raise ServiceUnavailable("the LLM gateway layer is not running: strategies need a model")
        now = time.time()
        row = {"job_id": new_id("mjb"), "tenant_id": principal.tenant_id, "strategy": strategy,
               "actor_id": actor_id, "session_id": session_id, "model": model,
               "principal": _principal_json(principal), "status": "queued", "attempts": 0,
               "max_attempts": self.max_attempts, "error": None, "records": None, "created_at": now,
               "updated_at": now, "next_attempt_at": now, "lease_until": None, "finished_at": None}
        async with self._write() as conn:
            await conn.execute(sa.insert(J).values(**row))
        self._wake.set()
        return _public(row)

    async def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        async with self._engine().connect() as conn:
            row = (await conn.execute(sa.select(J).where(J.c.job_id == job_id,
                                                         J.c.tenant_id == principal.tenant_id))).mappings().first()
        if row is None:
            raise NotFound(f"no memory job {job_id!r}")
        return _public(dict(row))

    async def wait(self, timeout_s: float = 60.0) -> None:
        """Until no job is due or running (tests and shutdown drains)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.time()
            async with self._engine().connect() as conn:
                busy = (await conn.execute(sa.select(sa.func.count()).where(
                    sa.or_(J.c.status == "running", sa.and_(J.c.status == "queued", J.c.next_attempt_at <= now)))
                )).scalar()
            if not busy and not self._tasks:
                return
            self._wake.set()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- worker ------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction (BEGIN IMMEDIATE on SQLite)."""
        async with self._engine().connect() as conn:
            conn = await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    async def _loop(self) -> None:
        while True:
            try:
                for job in await self._claim(MAX_RUNNING - len(self._tasks)):
                    task = asyncio.get_running_loop().create_task(self._run(job))
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly unreachable: try again next round
                log.exception("memory job worker: claiming jobs failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # a slot is free

    async def _claim(self, slots: int) -> list[dict[str, Any]]:
        if slots <= 0:
            return []
        now = time.time()
        due = sa.or_(sa.and_(J.c.status == "queued", J.c.next_attempt_at <= now),
                     sa.and_(J.c.status == "running", J.c.lease_until < now))
        async with self._engine().connect() as conn:
            ids = list((await conn.execute(sa.select(J.c.job_id).where(due).order_by(J.c.next_attempt_at)
                                           .limit(slots))).scalars())
        claimed = []
        for job_id in ids:
            async with self._write() as conn:
                # Conditional on still being due: another process may have claimed it meanwhile.
                got = await conn.execute(sa.update(J).where(J.c.job_id == job_id, due).values(
                    status="running", attempts=J.c.attempts + 1, lease_until=now + self.lease_s, updated_at=now))
                if got.rowcount == 1:
                    row = (await conn.execute(sa.select(J).where(J.c.job_id == job_id))).mappings().one()
                    claimed.append(dict(row))
        return claimed

    async def _run(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        try:
            found = await self._attempt(job)
        except asyncio.CancelledError:
            # garrison stopping: the job goes back to the queue, this attempt not counted.
            await asyncio.shield(self._finish(job_id, status="queued", attempts=job["attempts"] - 1,
                                              next_attempt_at=time.time(), lease_until=None))
            raise
        except Exception as exc:  # reported on the job, never lost
            error = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            if isinstance(exc, Permanent) or job["attempts"] >= job["max_attempts"]:
                await self._finish(job_id, status="failed", error=error, finished_at=time.time(), lease_until=None)
            else:
                delay = min(3600.0, self.retry_s * 2 ** (job["attempts"] - 1))
                log.info("memory job %s attempt %d failed (%s); retrying in %.1fs", job_id, job["attempts"],
                         error, delay)
                await self._finish(job_id, status="queued", error=error, next_attempt_at=time.time() + delay,
                                   lease_until=None)
            return
        await self._finish(job_id, status="succeeded", error=None, records=orjson.dumps(found).decode(),
                           finished_at=time.time(), lease_until=None)

    async def _finish(self, job_id: str, **values: Any) -> None:
        async with self._write() as conn:
            await conn.execute(sa.update(J).where(J.c.job_id == job_id).values(updated_at=time.time(), **values))

    async def _attempt(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        llm = self._llm()
        if llm is None or self._store_for is None:
            raise ServiceUnavailable("the LLM gateway layer is not running")
        principal = _principal(job["principal"])
        store = self._store_for(job["tenant_id"])
        events = await records.list_events(store, job["actor_id"], job["session_id"], 1000)
        if not events:
            raise Permanent("the session has no events")
        transcript = "\n".join(orjson.dumps(e.payload).decode() for e in events)[-MAX_TRANSCRIPT_CHARS:]
        body = {"model": job["model"], "max_tokens": 512, "messages": [
            {"role": "system", "content": PROMPTS[job["strategy"]]},
            {"role": "user", "content": transcript}]}
        try:
            resp = await llm.call(principal, "chat", orjson.dumps(body), {"content-type": "application/json"})
        except Exception as exc:
            status = getattr(exc, "status", 500)
            if status < 500 and status != 429:
                raise Permanent(getattr(exc, "detail", None) or str(exc)) from exc
            raise
        try:
            reply = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            reply = {"detail": bytes(resp.body[:200]).decode(errors="replace")}
        if resp.status_code != 200:
            msg = f"model call failed ({resp.status_code}): {reply.get('detail') or reply}"
            if resp.status_code < 500 and resp.status_code != 429:
                raise Permanent(msg)
            raise RuntimeError(msg)
        text = (reply["choices"][0]["message"].get("content") or "").strip()
        return await _store_records(store, job, text)


async def _store_records(store: GarrisonStore, job: dict[str, Any], text: str) -> list[dict[str, Any]]:
    actor, session, strategy = job["actor_id"], job["session_id"], job["strategy"]
    meta = {"strategy": strategy, "source_session": session, "model": job["model"]}
    if strategy == "summary":
        items = [((("summaries", actor)), session, {"text": text, **meta})]
    else:
        lines = [ln.strip().lstrip("-*• ").strip() for ln in text.splitlines()]
        items = [(((strategy, actor)), f"{session}-{i}", {"text": ln, **meta})
                 for i, ln in enumerate(x for x in lines if x)]
    for ns, key, value in items:  # keyed by session: a repeated attempt overwrites, never duplicates
        await store.aput(ns, key, value)
    return [{"namespace": list(ns), "key": key} for ns, key, _v in items]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in _PUBLIC}
    out["records"] = orjson.loads(row["records"]) if row.get("records") else []
    return out
