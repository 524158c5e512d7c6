"""One model call: limits, budget reservation, admission, upstream exchange, accounting.

`Gateway.call` runs a request through, in order: model lookup and allowlist, policy,
RPM/TPM and parallel limits, the budget reservation, the fair queue, the upstream
(retries with backoff on connection errors and on 5xx before the first byte, other
replicas, then fallback models), and finally the accounting that always runs, whether
the call succeeded, failed, or the client went away: slot released, TPM reconciled,
reservation settled, one ledger entry, one span, metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from fastapi import Response
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from garrison.core.clock import utcnow
from garrison.core.errors import BadRequest, Forbidden, NotFound, Problem, TooManyRequests
from garrison.core.ids import new_id
from garrison.core.principal import Principal
from garrison.llm import metrics as m
from garrison.llm.admission import BANDS, NoReplica, QueueRejected, Scheduler
from garrison.llm.limits import Check, Limiter, LocalLimiter
from garrison.llm.requests import OPS, ParsedCall, allowed_models, int_attribute, parse_call, priority_band
from garrison.llm.settings import LLMSettings
from garrison.llm.streaming import EventStream
from garrison.llm.upstreams import ModelPool, Replica
from garrison.metering.ledger import UsageEntry
from garrison.policy import Resource

if TYPE_CHECKING:
    from garrison.metering.budgets import Reservation

log = logging.getLogger("garrison.llm")
tracer = trace.get_tracer("garrison.llm")


class BadGateway(Problem):
    status, slug, title = 502, "upstream-failed", "Upstream failed"


class UpstreamUnavailable(Problem):
    status, slug, title = 503, "upstream-unavailable", "No upstream available"


class _Retryable(Exception):
    def __init__(self, reason: str, *, count_failure: bool = True) -> None:
        super().__init__(reason)
        self.count_failure = count_failure


@dataclass
class Call:
    principal: Principal
    parsed: ParsedCall
    pool: ModelPool
    band: int
    started: float
    span: Any
    est_in: int
    est_total: int
    tpm_keys: list[tuple[str, int]] = field(default_factory=list)
    parallel_key: str | None = None
    reservation: Reservation | None = None
    agent: str | None = None
    agent_version: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    finished: bool = False
    reconcile: asyncio.Future[None] | None = None  # shared limits settling (Redis)


class Gateway:
    def __init__(
        self,
        *,
        settings: LLMSettings,
        pools: dict[str, ModelPool],
        scheduler: Scheduler,
        limiter: Limiter,
        http: aiohttp.ClientSession | None,
        metering: Any,
        policy: Any,
        audit: Any,
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.scheduler = scheduler
        self.limiter = limiter
        self.http = http
        self.metering = metering
        self.policy = policy
        self.audit = audit
        self._timeout_for: tuple[float, float] | None = None
        self._timeout = aiohttp.ClientTimeout()

    def _client_timeout(self) -> aiohttp.ClientTimeout:
        """Built once per settings value, not per call (settings may change at run time)."""
        s = self.settings
        key = (s.connect_timeout_s, s.read_timeout_s)
        if key != self._timeout_for:
            self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
            self._timeout_for = key
        return self._timeout

    # ---- admission -------------------------------------------------------------------

    def _deny(self, principal: Principal, model: str, reason: str, exc: Problem) -> Problem:
        m.REJECTIONS.labels(reason).inc()
        self.audit.record(principal, "llm:invoke", f"llm_model/{model}", "deny", f"{reason}: {exc.detail}")
        return exc

    async def call(
        self, principal: Principal, op: str, raw: bytes, headers: Mapping[str, str], state: Any = None
    ) -> Response:
        parsed = parse_call(op, raw, self.settings.max_body_bytes)
        model = parsed.model
        allow = allowed_models(principal)
        pool = self.pools.get(model)
        if pool is None:
            raise NotFound(f"model {model!r} is not served here; GET /v1/models lists the models you may use")
        if allow is not None and model not in allow:
            raise self._deny(
                principal, model, "allowlist",
                Forbidden(f"this key may not use model {model!r}; it may use: {', '.join(sorted(allow)) or 'none'}"),
            )
        await self.policy.check(principal, "llm:invoke", Resource("llm_model", model, principal.tenant_id))
        band = priority_band(principal, headers.get("x-garrison-priority"))
        est_in = parsed.prompt_tokens_estimate
        if pool.context_window and est_in > pool.context_window:
            raise BadRequest(
                f"the prompt is about {est_in} tokens and model {model} takes at most {pool.context_window}; "
                "shorten the prompt"
            )
        max_out = 0 if op == "embeddings" else (parsed.max_tokens or self.settings.default_max_tokens)
        call = Call(principal, parsed, pool, band, time.perf_counter(), None, est_in, est_in + max_out)
        call.agent = headers.get("x-garrison-agent") or principal.attributes.get("agent") or None
        call.agent_version = headers.get("x-garrison-agent-version") or None
        await self._limits(call)
        try:
            call.reservation = await self.metering.reserve(
                principal.tenant_id,
                model=model,
                provider=pool.provider,
                input_tokens=est_in,
                max_output_tokens=max_out,
                key_id=principal.key_id,
                user=principal.id,
                session_id=principal.session_id,
                agent=call.agent,
            ) if self.metering is not None else None
        except BaseException as exc:
            await self._undo_limits(call)
            if isinstance(exc, TooManyRequests):
                raise self._deny(principal, model, "budget", exc) from None
            raise
        self._start_span(call, headers, state)
        try:
            return await self._dispatch(call)
        except BaseException as exc:
            if not call.finished:
                self._finish(call, None, None, status="error", usage=None, ttft=None, error=exc)
            raise

    async def _limits(self, call: Call) -> None:
        p, pool = call.principal, call.pool
        who = p.key_id or p.id
        checks: list[Check] = []
        rpm, tpm = int_attribute(p, "rpm"), int_attribute(p, "tpm")
        if rpm:
            checks.append(Check(f"k:{who}:rpm", rpm, 1))
        if tpm:
            checks.append(Check(f"k:{who}:tpm", tpm, call.est_total))
            call.tpm_keys.append((f"k:{who}:tpm", tpm))
        if pool.tenant_rpm:
            checks.append(Check(f"t:{p.tenant_id}:{pool.name}:rpm", pool.tenant_rpm, 1))
        if pool.tenant_tpm:
            key = f"t:{p.tenant_id}:{pool.name}:tpm"
            checks.append(Check(key, pool.tenant_tpm, call.est_total))
            call.tpm_keys.append((key, pool.tenant_tpm))
        if pool.rpm:
            checks.append(Check(f"m:{pool.name}:rpm", pool.rpm, 1))
        if pool.tpm:
            checks.append(Check(f"m:{pool.name}:tpm", pool.tpm, call.est_total))
            call.tpm_keys.append((f"m:{pool.name}:tpm", pool.tpm))
        if checks:
            wait = await self.limiter.acquire(checks)
            if wait is not None:
                call.tpm_keys.clear()
                raise self._deny(
                    p, pool.name, "rate_limit",
                    TooManyRequests(
                        f"rate limit reached for model {pool.name}; retry in {wait:.2f}s",
                        retry_after_s=wait, slug="rate-limited",
                    ),
                )
        parallel = int_attribute(p, "max_parallel")
        if parallel:
            key = f"k:{who}:par"
            if not await self.limiter.enter(key, parallel):
                await self._undo_limits(call)
                raise self._deny(
                    p, pool.name, "parallel",
                    TooManyRequests(
                        f"this key already has {parallel} requests in flight; retry when one finishes",
                        retry_after_s=1.0, slug="too-many-parallel",
                    ),
                )
            call.parallel_key = key

    async def _undo_limits(self, call: Call) -> None:
        for key, limit in call.tpm_keys:
            await self.limiter.adjust(key, limit, -call.est_total)
        call.tpm_keys.clear()
        if call.parallel_key:
            await self.limiter.leave(call.parallel_key)
            call.parallel_key = None

    def _start_span(self, call: Call, headers: Mapping[str, str], state: Any) -> None:
        parsed = call.parsed
        ctx = propagate.extract(headers) if "traceparent" in headers else None
        p = call.principal
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": parsed.op,
            "gen_ai.request.model": parsed.model,
            "gen_ai.provider.name": call.pool.provider or "garrison",
            "garrison.gateway": True,
            "garrison.tenant_id": p.tenant_id,
            "garrison.priority": BANDS[call.band],
            "user.id": p.id,
        }
        # Who the call is for, under the names telemetry indexes (semconv AGENT, SESSION, USER), so a
        # trace query by agent or session finds the gateway's spans as it finds the ledger's entries.
        if call.agent:
            attributes["gen_ai.agent.name"] = call.agent
        if call.agent_version:
            attributes["garrison.agent_version"] = call.agent_version
        if p.session_id:
            attributes["gen_ai.conversation.id"] = p.session_id
        span = tracer.start_span(
            f"{'chat' if parsed.op == 'chat' else parsed.op} {parsed.model}",
            context=ctx,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        if parsed.max_tokens:
            span.set_attribute("gen_ai.request.max_tokens", parsed.max_tokens)
        call.span = span
        sc = span.get_span_context()
        if sc.is_valid:
            call.trace_id, call.span_id = f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
        else:
            call.trace_id = getattr(state, "trace_id", None) if state is not None else None
            call.span_id = os.urandom(8).hex()

    # ---- upstream --------------------------------------------------------------------

    def _payload(self, call: Call, replica: Replica) -> bytes:
        body = dict(call.parsed.body)
        body["model"] = replica.target_model
        body.pop("priority", None)  # a client never sets the upstream's priority
        if replica.priority_scheduling:
            body["priority"] = call.band
        if call.parsed.stream:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    def _headers(self, call: Call, replica: Replica) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if replica.api_key:
            headers["authorization"] = f"Bearer {replica.api_key}"
        if call.trace_id and call.span_id:
            headers["traceparent"] = f"00-{call.trace_id}-{call.span_id}-01"
        return headers

    async def _dispatch(self, call: Call) -> Response:
        pools = [call.pool] + [self.pools[f] for f in call.pool.fallbacks if f in self.pools]
        last = "no replica answered"
        for pool in pools:
            excluded: set[str] = set()
            for attempt in range(self.settings.retries + 1):
                if attempt:
                    await asyncio.sleep(self.settings.backoff_base_s * (2 ** (attempt - 1)))
                # Prefer replicas that have not failed this request; retry the same one when none is left.
                avoid = excluded if len(excluded) < len(pool.replicas) else set()
                try:
                    replica = await self.scheduler.acquire(pool, call.principal.tenant_id, call.band, avoid)
                except NoReplica as exc:
                    last = str(exc)
                    break  # nothing usable in this pool: next fallback
                except QueueRejected as exc:
                    m.REJECTIONS.labels(exc.reason).inc()
                    raise
                try:
                    return await self._exchange(call, pool, replica)
                except _Retryable as exc:
                    last = f"{replica.id}: {exc}"
                    m.UPSTREAM_ERRORS.labels(replica.id, "retryable").inc()
                    if exc.count_failure:
                        replica.breaker.failure(time.monotonic())
                    self.scheduler.release(pool, replica)
                    excluded.add(replica.id)
        m.REJECTIONS.labels("upstream").inc()
        raise UpstreamUnavailable(
            f"every upstream for model {call.pool.name} failed ({last}); retry later", headers={"Retry-After": "1"}
        )

    async def _exchange(self, call: Call, pool: ModelPool, replica: Replica) -> Response:
        assert self.http is not None, "the LLM service is not started"
        try:
            resp = await self.http.post(
                replica.base_url + OPS[call.parsed.op], data=self._payload(call, replica),
                headers=self._headers(call, replica), timeout=self._client_timeout(),
            )
        except TimeoutError as exc:
            raise _Retryable(f"timed out: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}") from None
        status_code = resp.status
        if status_code >= 500 or status_code == 429:
            resp.close()
            raise _Retryable(f"answered {status_code}", count_failure=status_code != 429)
        if call.parsed.stream and status_code == 200:
            def abandon() -> None:  # the response never started: close what the relay would have
                if not call.finished:
                    resp.close()
                    self._finish(call, pool, replica, status="cancelled", usage=None, ttft=None)

            return EventStream(
                self._relay(call, pool, replica, resp), on_close=abandon, headers={"x-garrison-replica": replica.id}
            )
        try:
            data = await resp.read()
        except TimeoutError as exc:
            resp.close()
            raise _Retryable(f"timed out: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            resp.close()
            raise _Retryable(f"response cut off: {type(exc).__name__}") from None
        resp.release()
        ttft = time.perf_counter() - call.started
        if status_code >= 400:
            # The upstream refused the request itself (bad parameters): the client's to fix.
            replica.breaker.success()
            self._finish(call, pool, replica, status="error", usage=None, ttft=None, upstream_status=status_code)
            await self._settled(call)
            return Response(
                content=data, status_code=status_code,
                media_type=resp.headers.get("content-type", "application/json"),
            )
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _Retryable("answered a body that is not JSON") from None
        usage = doc.get("usage") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and replica.target_model != pool.name and "model" in doc:
            doc["model"] = pool.name
            data = orjson.dumps(doc)
        replica.breaker.success()
        finish = None
        if isinstance(doc, dict) and isinstance(doc.get("choices"), list) and doc["choices"]:
            finish = doc["choices"][0].get("finish_reason")
        self._finish(call, pool, replica, status="ok", usage=usage, ttft=ttft,
                     response_id=doc.get("id") if isinstance(doc, dict) else None, finish_reason=finish)
        await self._settled(call)
        return Response(content=data, media_type="application/json", headers={"x-garrison-replica": replica.id})

    async def _relay(
        self, call: Call, pool: ModelPool, replica: Replica, resp: aiohttp.ClientResponse
    ) -> AsyncIterator[bytes]:
        """Forward SSE events, keep the usage, drop the usage chunk the client did not ask for."""
        rewrite = replica.target_model != pool.name
        want_usage = call.parsed.include_usage
        usage: dict[str, Any] | None = None
        chunks = 0
        ttft: float | None = None
        status = "cancelled"
        finish: str | None = None
        response_id: str | None = None
        done = False
        buf = b""

        def settle() -> None:
            if call.finished:
                return
            # Closing drops the upstream connection, which cancels the request there.
            if status == "ok":
                resp.release()
            else:
                resp.close()
            self._finish(call, pool, replica, status=status,
                         usage=usage or {"prompt_tokens": call.est_in, "completion_tokens": chunks},
                         ttft=ttft, response_id=response_id, finish_reason=finish)

        try:
            try:
                async for raw in resp.content.iter_any():
                    if ttft is None:
                        ttft = time.perf_counter() - call.started
                    buf += raw
                    out: list[bytes] = []
                    while True:
                        cut = buf.find(b"\n\n")
                        if cut < 0:
                            break
                        event, buf = buf[:cut], buf[cut + 2 :]
                        if not event.startswith(b"data:"):
                            out.append(event + b"\n\n")
                            continue
                        payload = event[5:].strip()
                        if payload == b"[DONE]":
                            done = True  # held back until the call is accounted
                            continue
                        try:
                            doc = orjson.loads(payload)
                        except orjson.JSONDecodeError:
                            out.append(event + b"\n\n")
                            continue
                        if not isinstance(doc, dict):
                            continue
                        u = doc.get("usage")
                        choices = doc.get("choices")
                        if u:
                            usage = u
                        if choices:
                            chunks += 1
                            response_id = response_id or doc.get("id")
                            finish = choices[0].get("finish_reason") or finish
                        elif u and not want_usage:
                            continue
                        if rewrite and "model" in doc:
                            doc["model"] = pool.name
                            out.append(b"data: " + orjson.dumps(doc) + b"\n\n")
                        else:
                            out.append(event + b"\n\n")
                    if out:
                        yield b"".join(out)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = "error"
                replica.breaker.failure(time.monotonic())
                m.UPSTREAM_ERRORS.labels(replica.id, "mid_stream").inc()
                tail = _error_event(f"the upstream connection broke mid-stream ({type(exc).__name__})", 502)
            else:
                if done:
                    status = "ok"
                    replica.breaker.success()
                    tail = b"data: [DONE]\n\n"
                else:
                    status = "error"
                    tail = _error_event("the upstream ended the stream before it was complete", 502)
            # Account before the last event, so the books are settled when the client sees the end.
            settle()
            if tail:
                yield tail
        finally:
            settle()

    # ---- accounting ------------------------------------------------------------------

    def _finish(
        self,
        call: Call,
        pool: ModelPool | None,
        replica: Replica | None,
        *,
        status: str,
        usage: dict[str, Any] | None,
        ttft: float | None,
        error: BaseException | None = None,
        upstream_status: int | None = None,
        response_id: str | None = None,
        finish_reason: str | None = None,
    ) -> None:
        if call.finished:
            return
        call.finished = True
        if pool is not None and replica is not None:
            self.scheduler.release(pool, replica)
        elapsed = time.perf_counter() - call.started
        model = pool.name if pool is not None else call.parsed.model  # a fallback is billed as itself
        inp = out = cached = reasoning = 0
        if usage:
            inp = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            out = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        if call.tpm_keys or call.parallel_key:
            if isinstance(self.limiter, LocalLimiter):
                # In process: settle now, so the key's next call already sees its slot free.
                for key, limit in call.tpm_keys:
                    self.limiter.adjust_now(key, limit, inp + out - call.est_total)
                if call.parallel_key:
                    self.limiter.leave_now(call.parallel_key)
            else:
                call.reconcile = asyncio.ensure_future(self._reconcile(call, inp + out))
        if self.metering is not None:
            if replica is None and not usage:
                # Never reached an upstream: nothing was used, only give the reservation back.
                if call.reservation is not None:
                    self.metering.release(call.reservation)
            else:
                entry = UsageEntry(
                    id=new_id("use"),
                    ts=utcnow(),
                    tenant_id=call.principal.tenant_id,
                    model=model,
                    status=status,
                    key_id=call.principal.key_id,
                    user_id=call.principal.id,
                    agent=call.agent,
                    agent_version=call.agent_version,
                    session_id=call.principal.session_id,
                    provider=call.pool.provider,
                    replica=replica.id if replica else None,
                    input_tokens=inp,
                    output_tokens=out,
                    cached_tokens=cached,
                    reasoning_tokens=reasoning,
                    latency_ms=round(elapsed * 1000, 3),
                    ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
                    trace_id=call.trace_id,
                    span_id=call.span_id,
                )
                self.metering.record(entry, call.reservation, gpu_seconds=elapsed)
        m.REQUESTS.labels(model, status).inc()
        m.DURATION.labels(model).observe(elapsed)
        if ttft is not None:
            m.TTFT.labels(model).observe(ttft)
        if inp:
            m.TOKENS.labels(model, "input").inc(inp)
        if out:
            m.TOKENS.labels(model, "output").inc(out)
        span = call.span
        if span is not None and span.is_recording():
            span.set_attribute("gen_ai.usage.input_tokens", inp)
            span.set_attribute("gen_ai.usage.output_tokens", out)
            if cached:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", cached)
            if reasoning:
                span.set_attribute("gen_ai.usage.reasoning.output_tokens", reasoning)
            span.set_attribute("gen_ai.response.model", model)
            if response_id:
                span.set_attribute("gen_ai.response.id", response_id)
            if finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
            if replica is not None:
                span.set_attribute("garrison.replica", replica.id)
            if status != "ok":
                span.set_status(Status(StatusCode.ERROR, str(error or upstream_status or status)))
        if span is not None:
            span.end()

    @staticmethod
    async def _settled(call: Call) -> None:
        """Shared limits are settled before the answer goes out (the next call sees them)."""
        if call.reconcile is not None:
            await call.reconcile

    async def _reconcile(self, call: Call, actual_tokens: int) -> None:
        with contextlib.suppress(Exception):  # a Redis hiccup must not break accounting
            for key, limit in call.tpm_keys:
                await self.limiter.adjust(key, limit, actual_tokens - call.est_total)
            if call.parallel_key:
                await self.limiter.leave(call.parallel_key)


def _error_event(message: str, code: int) -> bytes:
    doc = {"error": {"message": message, "type": "upstream_error", "code": code}}
    return b"data: " + orjson.dumps(doc) + b"\n\n"

