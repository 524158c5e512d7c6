"""The journal of model and tool calls made by durable run steps: a retried step does not call again.

A LangGraph node calls the model or a tool itself, in the middle of a superstep; Temporal sees
the superstep (one activity), not the call. When a step fails after a call completed (its
worker died, it timed out) Temporal retries the step, and the node runs again from the last
checkpoint, making the same request. So each completed call is recorded, keyed by the run,
the step, a hash of the request and which identical request of the step it was; the retried
step's request gets the recorded answer: no second upstream call, no second entry in the
usage ledger or the audit log for a call that did not happen again (the tools gateway audits
the replay as one). A request that differs (the node took another path) is a new call.

Each execution of a step hands its clients ``x-garrison-step: <step>/<attempt>`` with the
run's headers (``config["configurable"]["garrison"]["headers"]``); the LLM gateway's service
passes calls carrying it through ``record_or_replay``, the tools gateway's ``tools/call``
through ``tool_call``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
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
JSON = "application/json"


@dataclass
class Slot:
    """Where one call of a run step is recorded, and what was recorded there already."""

    values: dict[str, Any]  # the row's key and owner
    recorded: tuple[str, bytes] | None  # (media type, body) of the call, when it completed before


class CallJournal:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Per run: how many times each (step, attempt, request) was seen, so the n-th identical
        # request of a retried step maps to the n-th recorded answer.
        self._seen: dict[str, dict[tuple[int, str, str], int]] = {}

    async def slot(self, principal: Principal, op: str, raw: bytes, headers: Mapping[str, str]) -> Slot | None:
        """The slot of this call, or None when it is not made by a run step."""
        run_id, scope = headers.get(RUN_HEADER), headers.get(STEP_HEADER)
        step_text, _, attempt = (scope or "").partition("/")
        if not run_id or not step_text.isdigit() or not attempt:
            return None
        step = int(step_text)
        digest = hashlib.sha256(op.encode() + b"\0" + raw).hexdigest()
        seen = self._seen.setdefault(run_id, {})
        occurrence = seen[(step, attempt, digest)] = seen.get((step, attempt, digest), 0) + 1
        key = and_(calls.c.run_id == run_id, calls.c.step == step, calls.c.request_hash == digest,
                   calls.c.occurrence == occurrence)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(calls.c.tenant_id, calls.c.principal_id, calls.c.media_type,
                                             calls.c.body).where(key))).first()
        values = {"run_id": run_id, "step": step, "request_hash": digest, "occurrence": occurrence,
                  "tenant_id": principal.tenant_id, "principal_id": principal.id}
        # Only the caller that made the call gets its answer back.
        mine = row is not None and row[0] == principal.tenant_id and row[1] == principal.id
        return Slot(values, (row[2], bytes(row[3])) if mine and row is not None else None)

    async def record_or_replay(self, principal: Principal, op: str, raw: bytes, headers: Mapping[str, str],
                               call: Callable[[], Awaitable[Response]]) -> Response:
        """A model call (an HTTP answer, streamed or not) of a run step."""
        slot = await self.slot(principal, op, raw, headers)
        if slot is None:
            return await call()
        if slot.recorded is not None:
            log.info("run %s step %s: model call answered from the journal (retried step)",
                     slot.values["run_id"], slot.values["step"])
            return Response(content=slot.recorded[1], media_type=slot.recorded[0], headers={REPLAYED_HEADER: "true"})
        response = await call()
        if response.status_code != 200:
            return response  # not completed: a retry calls again
        media_type = response.media_type or response.headers.get("content-type", JSON)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._recording(response.body_iterator, slot, media_type)
            return response
        await self.record(slot, media_type, bytes(response.body))
        return response

    async def tool_call(self, principal: Principal, op: str, arguments: Mapping[str, Any],
                        headers: Mapping[str, str],
                        call: Callable[[], Awaitable[tuple[dict[str, Any], bool]]]) -> tuple[dict[str, Any], bool]:
        """A ``tools/call`` of a run step; ``call`` answers (result, whether the tool answered it).

        Returns (result, replayed). Only a result the tool gave is recorded: garrison's own
        refusals and failures (denied, rate limited, timed out, unreachable) are tried again.
        """
        raw = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
        slot = await self.slot(principal, op, raw, headers)
        if slot is None:
            return (await call())[0], False
        if slot.recorded is not None:
            log.info("run %s step %s: tool call answered from the journal (retried step)",
                     slot.values["run_id"], slot.values["step"])
            return orjson.loads(slot.recorded[1]), True
        result, answered = await call()
        if answered:
            await self.record(slot, JSON, orjson.dumps(result))
        return result, False

    async def _recording(self, parts: AsyncIterable[Any], slot: Slot, media_type: str) -> AsyncIterator[Any]:
        """Passes a streamed answer on; records it once it has been sent whole."""
        sent: list[bytes] = []
        async for part in parts:
            sent.append(part.encode() if isinstance(part, str) else bytes(part))
            yield part
        await self.record(slot, media_type, b"".join(sent))

    async def record(self, slot: Slot, media_type: str, body: bytes) -> None:
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(calls).values(**slot.values, media_type=media_type, body=body,
                                                        created_at=utcnow()))
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
