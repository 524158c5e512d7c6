"""Memory strategies: turn a session's events into long-term records with a model.

Like AgentCore Memory's built-in strategies: ``summary`` writes one record per
session into ``("summaries", actor)``; ``facts`` and ``preferences`` write one record
per line the model returns into ``("facts", actor)`` / ``("preferences", actor)``.
The model is called through garrison's LLM gateway as the caller (so admission,
budgets and metering apply), in a background task; jobs are kept in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import orjson

from garrison.core.errors import BadRequest, NotFound, ServiceUnavailable
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.state.memory import records
from garrison.state.memory.store import GarrisonStore

PROMPTS = {
    "summary": "Summarise this conversation in a few sentences for future reference. Reply with the summary only.",
    "facts": "List the durable facts about the user stated in this conversation, one per line, nothing else.",
    "preferences": "List the user's preferences stated in this conversation, one per line, nothing else.",
}
MAX_JOBS = 1000
MAX_TRANSCRIPT_CHARS = 60_000


class StrategyJobs:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, principal: Principal, store: GarrisonStore, llm: Any, strategy: str, actor_id: str,
               session_id: str, model: str) -> dict[str, Any]:
        if strategy not in PROMPTS:
            raise BadRequest(f"unknown strategy {strategy!r}: use one of {', '.join(PROMPTS)}")
        if llm is None:
            raise ServiceUnavailable("the LLM gateway layer is not running: strategies need a model")
        job: dict[str, Any] = {"job_id": new_id("mjb"), "tenant_id": principal.tenant_id, "strategy": strategy,
               "actor_id": actor_id, "session_id": session_id, "model": model, "status": "queued",
               "records": [], "error": None, "created_at": time.time()}
        self._jobs[job["job_id"]] = job
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._run(job, principal, store, llm))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _public(job)

    def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        job = self._jobs.get(job_id)
        if job is None or job["tenant_id"] != principal.tenant_id:
            raise NotFound(f"no memory job {job_id!r}")
        return _public(job)

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()

    async def _run(self, job: dict[str, Any], principal: Principal, store: GarrisonStore, llm: Any) -> None:
        job["status"] = "running"
        try:
            events = await records.list_events(store, job["actor_id"], job["session_id"], 1000)
            if not events:
                raise BadRequest("the session has no events")
            transcript = "\n".join(orjson.dumps(e.payload).decode() for e in events)[-MAX_TRANSCRIPT_CHARS:]
            body = {"model": job["model"], "max_tokens": 512, "messages": [
                {"role": "system", "content": PROMPTS[job["strategy"]]},
                {"role": "user", "content": transcript}]}
            resp = await llm.call(principal, "chat", orjson.dumps(body), {"content-type": "application/json"})
            reply = orjson.loads(resp.body)
            if resp.status_code != 200:
                raise RuntimeError(f"model call failed ({resp.status_code}): {reply.get('detail') or reply}")
            text = (reply["choices"][0]["message"].get("content") or "").strip()
            job["records"] = await self._store(store, job, text)
            job["status"] = "succeeded"
        except asyncio.CancelledError:
            job["status"], job["error"] = "cancelled", "garrison stopped"
            raise
        except Exception as exc:  # reported on the job, never lost
            job["status"], job["error"] = "failed", getattr(exc, "detail", None) or str(exc)
        job["finished_at"] = time.time()

    async def _store(self, store: GarrisonStore, job: dict[str, Any], text: str) -> list[dict[str, Any]]:
        actor, session, strategy = job["actor_id"], job["session_id"], job["strategy"]
        meta = {"strategy": strategy, "source_session": session, "model": job["model"]}
        if strategy == "summary":
            items = [((("summaries", actor)), session, {"text": text, **meta})]
        else:
            lines = [ln.strip().lstrip("-*• ").strip() for ln in text.splitlines()]
            items = [(((strategy, actor)), f"{session}-{i}", {"text": ln, **meta})
                     for i, ln in enumerate(x for x in lines if x)]
        for ns, key, value in items:
            await store.aput(ns, key, value)
        return [{"namespace": list(ns), "key": key} for ns, key, _v in items]


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "tenant_id"}
