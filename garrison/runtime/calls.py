"""The journal of model calls made by durable run steps: a retried step does not call the model again.

A LangGraph node calls the model itself, in the middle of a superstep; Temporal sees the
superstep (one activity), not the call. When a step fails after a model call completed
(its worker died, it timed out) Temporal retries the step, and the node runs again from
the last checkpoint, making the same request. So each completed call is recorded, keyed
by the run, the step, a hash of the request and which identical request of the step it
was; the retried step's request gets the recorded answer: no second upstream call, no
second entry in the usage ledger. A request that differs (the node took another path)
is a new call.

Each execution of a step hands its model client ``x-garrison-step: <step>/<attempt>`` with
the run's headers (``config["configurable"]["garrison"]["headers"]``); the LLM gateway's
service passes calls carrying it through ``record_or_replay``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response, StreamingResponse

from garrison.core.clock import utcnow
from garrison.core.principal import Principal
from garrison.db import Database
from garrison.runtime.tables import calls

log = logging.getLogger("garrison.runtime.calls")

RUN_HEADER = "x-garrison-run"
STEP_HEADER = "x-garrison-step"
REPLAYED_HEADER = "x-garrison-replayed"


class CallJournal:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Per run: how many times each (step, attempt, request) was seen, so the n-th identical
        # request of a retried step maps to the n-th recorded answer.
        self._seen: dict[str, dict[tuple[int, str, str], int]] = {}

    async def record_or_replay(self, principal: Principal, op: str, raw: bytes, headers: Mapping[str, str],
                               call: Callable[[], Awaitable[Response]]) -> Response:
        run_id, scope = headers.get(RUN_HEADER), headers.get(STEP_HEADER)
        step_text, _, attempt = (scope or "").partition("/")
        if not run_id or not step_text.isdigit() or not attempt:
            return await call()
        step = int(step_text)
        digest = hashlib.sha256(op.encode() + b"\0" + raw).hexdigest()
        seen = self._seen.setdefault(run_id, {})
        occurrence = seen[(step, attempt, digest)] = seen.get((step, attempt, digest), 0) + 1
        key = and_(calls.c.run_id == run_id, calls.c.step == step, calls.c.request_hash == digest,
                   calls.c.occurrence == occurrence)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(calls.c.tenant_id, calls.c.principal_id, calls.c.media_type,
                                             calls.c.body).where(key))).first()
        if row is not None and row[0] == principal.tenant_id and row[1] == principal.id:
            log.info("run %s step %s: model call answered from the journal (retried step)", run_id, step)
            return Response(content=row[3], media_type=row[2], headers={REPLAYED_HEADER: "true"})
        response = await call()
        if response.status_code != 200:
            return response  # not completed: a retry calls again
        values = {"run_id": run_id, "step": step, "request_hash": digest, "occurrence": occurrence,
                  "tenant_id": principal.tenant_id, "principal_id": principal.id,
                  "media_type": response.media_type or response.headers.get("content-type", "application/json")}
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._recording(response.body_iterator, values)
            return response
        await self._record(values, bytes(response.body))
        return response

    async def _recording(self, parts: AsyncIterable[Any], values: dict[str, Any]) -> AsyncIterator[Any]:
        """Passes a streamed answer on; records it once it has been sent whole."""
        sent: list[bytes] = []
        async for part in parts:
            sent.append(part.encode() if isinstance(part, str) else bytes(part))
            yield part
        await self._record(values, b"".join(sent))

    async def _record(self, values: dict[str, Any], body: bytes) -> None:
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(calls).values(**values, body=body, created_at=utcnow()))
        except IntegrityError:
            pass  # recorded by an earlier attempt of the same step

    def may_have(self, run_id: str) -> None:
        """``run_id`` steps here after a crash or a retry: its earlier calls may be recorded."""
        self._seen.setdefault(run_id, {})

    async def forget(self, run_id: str) -> None:
        """The run has ended: its steps are not retried any more."""
        if self._seen.pop(run_id, None) is None:
            return  # no call of this run was recorded (by this process, or before it took the run over)
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(calls).where(calls.c.run_id == run_id))
