"""TelemetryService: ingest, self-tracing, queries, retention, forwarding, metering hand-off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson

from garrison.core.clock import utcnow
from garrison.core.errors import BadRequest, NotFound, PayloadTooLarge, Problem, ServiceUnavailable
from garrison.core.pagination import decode_cursor, encode_cursor
from garrison.core.principal import Principal
from garrison.db import Database
from garrison.telemetry import metrics, otlp, provider
from garrison.telemetry.config import TelemetrySettings
from garrison.telemetry.export import Forwarder
from garrison.telemetry.ingest import IngestQueue, QueueFull
from garrison.telemetry.normalize import DAY_NS, Caps, normalize
from garrison.telemetry.otlp import RawLog, RawSpan
from garrison.telemetry.pricing import cost_usd
from garrison.telemetry.store import SpanStore, TraceFilter, Written
from garrison.telemetry.views import (
    percentile,
    trace_summary_view,
    trace_view,
)

# garrison's own spans normalized per event-loop turn (see _queue_self_spans).
_SELF_SLICE = 64

log = logging.getLogger("garrison.telemetry")


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class TelemetryService:
    def __init__(self, db: Database, settings: TelemetrySettings | None = None, *,
                 metering: Any = None, audit: Any = None) -> None:
        self.settings = settings or TelemetrySettings()
        s = self.settings
        self.caps = Caps(max_attribute_chars=s.max_attribute_chars, max_attributes=s.max_attributes,
                         max_events=s.max_events, max_content_chars=s.max_content_chars,
                         capture_content=s.capture_content)
        self.store = SpanStore(db)
        self.metering = metering
        self.audit = audit
        self.queue = IngestQueue(self.store, max_spans=s.queue_max_spans, batch_spans=s.write_batch_spans,
                                 after_write=self._after_write)
        self.forwarder = Forwarder(s)
        self.inflight_bytes = 0
        self.decoding = 0  # requests between admission and queueing
        self._sink_token: int | None = None
        self._trace_tenants: dict[str, str] = {}  # recent own traces -> tenant
        self._self_slices = 0  # slices of exported own spans still to normalize (_queue_self_spans)
        self._retention_task: asyncio.Task[None] | None = None
        # Metering runs behind ingest: a bounded backlog, so a slow ledger delays acks only when it is full.
        self._meter_queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=256)
        self._meter_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, *, self_tracing: bool = True) -> None:
        await self.store.start()
        self.forwarder.configure(await self.store.exporters())
        self.queue.start()
        self.forwarder.start()
        if self_tracing:
            self._sink_token = provider.install(self._on_self_spans)
        self._retention_task = asyncio.create_task(self._retention_loop(), name="telemetry-retention")
        self._meter_task = asyncio.create_task(self._meter_loop(), name="telemetry-metering")

    async def stop(self) -> None:
        if self._sink_token is not None:
            provider.flush(2000)
            await asyncio.sleep(0)  # let the flushed spans' callbacks run on this loop
            await self._self_spans_queued()
            provider.uninstall(self._sink_token)
            self._sink_token = None
        if self._retention_task is not None:
            self._retention_task.cancel()
            try:
                await self._retention_task
            except asyncio.CancelledError:
                pass
        await self.queue.stop()
        if self._meter_task is not None:
            await self._meter_queue.join()
            self._meter_task.cancel()
            try:
                await self._meter_task
            except asyncio.CancelledError:
                pass
        await self.forwarder.stop()

    async def flush(self) -> None:
        """Write garrison's own finished spans and everything queued (tests, shutdown)."""
        await asyncio.to_thread(provider.flush, 5000)
        await asyncio.sleep(0.01)
        await self._self_spans_queued()
        await self.queue.drain()
        await self._meter_queue.join()

    # ------------------------------------------------------------ ingest

    def _rows(self, raws: list[RawSpan], tenant_id: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows, contents = [], []
        now = time.time_ns()
        for raw in raws:
            tenant = tenant_id or str(raw.attributes.get("garrison.tenant_id") or self.settings.system_tenant)
            norm = normalize(raw, tenant, self.caps, received_ns=now)
            row = norm.row
            if row["kind"] == "model" and (row["input_tokens"] or row["output_tokens"]):
                row["cost_usd"] = self._cost(row)
            rows.append(row)
            if norm.content is not None:
                contents.append({
                    "tenant_id": tenant, "trace_id": row["trace_id"], "span_id": row["span_id"],
                    "source": "span", "time_ns": row["start_ns"],
                    "body": orjson.dumps(norm.content, option=orjson.OPT_NON_STR_KEYS).decode(),
                })
        return rows, contents

    def _cost(self, row: dict[str, Any]) -> float | None:
        """Metering's prices (custom ones first) when that layer runs, else genai-prices."""
        price = getattr(self.metering, "price", None)
        if price is not None and row["model"]:
            try:
                priced = price(row["model"], row["provider"], row["input_tokens"], row["output_tokens"],
                               cached_tokens=min(row["cached_tokens"], row["input_tokens"]))
                return float(priced.cost_usd) if priced.cost_usd is not None else None
            except Exception:
                log.debug("metering could not price %s", row["model"], exc_info=True)
        return cost_usd(row["model"], row["provider"], row["input_tokens"], row["output_tokens"],
                        row["cached_tokens"])

    def admit(self, content_length: int | None) -> None:
        """Refuse early (before reading the body) when the queue or in-flight bytes are at their cap."""
        if self.queue.full():
            metrics.SPANS_REJECTED.labels("queue_full").inc()
            raise self._busy()
        if content_length is not None and content_length > self.settings.max_request_bytes:
            metrics.SPANS_REJECTED.labels("too_large").inc()
            raise PayloadTooLarge(f"request body exceeds {self.settings.max_request_bytes} bytes: "
                                  "send smaller batches")
        if self.decoding >= self.settings.max_concurrent_decodes:
            # Under overload, refusing before the body is read saves the CPU and memory a
            # decode would cost only to be refused by a full queue afterwards.
            metrics.SPANS_REJECTED.labels("busy").inc()
            raise self._busy()
        if self.inflight_bytes + (content_length or 0) > 8 * self.settings.max_request_bytes:
            metrics.SPANS_REJECTED.labels("inflight_bytes").inc()
            raise self._busy()

    @contextlib.asynccontextmanager
    async def admission(self, content_length: int | None) -> AsyncIterator[dict[str, bool]]:
        """A decoding slot, held from before the body is read until it is decoded (see release)."""
        self.admit(content_length)
        self.decoding += 1
        slot = {"held": True}
        try:
            yield slot
        finally:
            self.release(slot)

    def release(self, slot: dict[str, bool] | None) -> None:
        if slot is not None and slot["held"]:
            slot["held"] = False
            self.decoding -= 1

    def _busy(self) -> ServiceUnavailable:
        retry = self.settings.retry_after_s
        return ServiceUnavailable(f"telemetry ingest queue is full; retry after {retry} s",
                                  headers={"Retry-After": str(retry)})

    def _decode_spans(self, body: bytes, content_type: str | None, encoding: str | None,
                      tenant_id: str) -> tuple[otlp.Decoded, list[dict[str, Any]], list[dict[str, Any]], str]:
        kind = otlp.media_kind(content_type)
        data = otlp.decompress(body, encoding, self.settings.max_request_bytes)
        decoded = otlp.decode_traces(data, kind)
        if len(decoded.spans) > self.settings.max_spans_per_request:
            raise otlp.PayloadTooBig(self.settings.max_request_bytes)
        rows, contents = self._rows(decoded.spans, tenant_id)
        return decoded, rows, contents, kind

    async def ingest_traces(self, principal: Principal, body: bytes, content_type: str | None,
                            encoding: str | None, slot: dict[str, bool] | None = None,
                            ) -> tuple[str, int, int, list[str]]:
        """Decode, normalize and store; returns (media kind, accepted, rejected, errors)."""
        self.inflight_bytes += len(body)
        try:
            try:
                decoded, rows, contents, kind = await asyncio.to_thread(
                    self._decode_spans, body, content_type, encoding, principal.tenant_id)
            except otlp.UnsupportedMediaType as exc:
                metrics.SPANS_REJECTED.labels("media_type").inc()
                raise UnsupportedMediaType(str(exc)) from exc
            except otlp.PayloadTooBig as exc:
                metrics.SPANS_REJECTED.labels("too_large").inc()
                raise PayloadTooLarge(str(exc)) from exc
            except otlp.OtlpError as exc:
                metrics.SPANS_REJECTED.labels("malformed").inc()
                raise BadRequest(str(exc)) from exc
        finally:
            self.inflight_bytes -= len(body)
            self.release(slot)  # waiting for the commit needs no decoding slot
        metrics.SPANS_RECEIVED.labels("otlp").inc(len(rows))
        if decoded.rejected:
            metrics.SPANS_REJECTED.labels("invalid_span").inc(decoded.rejected)
        for row in rows:
            if row["flags"]:
                for flag in row["flags"].split(","):
                    metrics.SPANS_FLAGGED.labels(flag).inc()
        if rows or contents:
            try:
                await self.queue.submit(rows, contents)
            except QueueFull:
                metrics.SPANS_REJECTED.labels("queue_full").inc()
                raise self._busy() from None
            except Exception as exc:
                log.error("telemetry write failed: %s", exc)
                raise ServiceUnavailable("the span store could not write this batch; retry",
                                         headers={"Retry-After": str(self.settings.retry_after_s)}) from exc
        return kind, len(rows), decoded.rejected, decoded.errors

    def _decode_logs(self, body: bytes, content_type: str | None, encoding: str | None) -> tuple[list[RawLog], str]:
        kind = otlp.media_kind(content_type)
        data = otlp.decompress(body, encoding, self.settings.max_request_bytes)
        return otlp.decode_logs(data, kind), kind

    async def ingest_logs(self, principal: Principal, body: bytes, content_type: str | None,
                          encoding: str | None) -> tuple[str, int]:
        """GenAI events: stored as content of their span when capture is on, else counted only."""
        try:
            logs, kind = await asyncio.to_thread(self._decode_logs, body, content_type, encoding)
        except otlp.UnsupportedMediaType as exc:
            raise UnsupportedMediaType(str(exc)) from exc
        except otlp.PayloadTooBig as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except otlp.OtlpError as exc:
            raise BadRequest(str(exc)) from exc
        metrics.SPANS_RECEIVED.labels("otlp_logs").inc(len(logs))
        if not self.settings.capture_content:
            return kind, len(logs)
        contents = []
        for rec in logs:
            if rec.trace_id is None:
                continue
            body_json = orjson.dumps({"event": rec.event_name, "body": rec.body, "attributes": rec.attributes},
                                     option=orjson.OPT_NON_STR_KEYS).decode()[: self.settings.max_content_chars]
            contents.append({"tenant_id": principal.tenant_id, "trace_id": rec.trace_id, "span_id": rec.span_id,
                             "source": "log", "time_ns": rec.time_ns or time.time_ns(), "body": body_json})
        if contents:
            try:
                await self.queue.submit([], contents)
            except QueueFull:
                raise self._busy() from None
        return kind, len(logs)

    def _on_self_spans(self, raws: list[RawSpan]) -> None:
        """Runs on the event loop: garrison's own spans, never blocking the layer that made them.

        A span without ``garrison.tenant_id`` takes the tenant of another span of its trace
        (a gateway or runtime span up the tree usually carries it).
        """
        for raw in raws:
            tenant = raw.attributes.get("garrison.tenant_id")
            if tenant:
                self._trace_tenants[raw.trace_id] = str(tenant)
        for raw in raws:
            if not raw.attributes.get("garrison.tenant_id") and raw.trace_id in self._trace_tenants:
                raw.attributes["garrison.tenant_id"] = self._trace_tenants[raw.trace_id]
        while len(self._trace_tenants) > 10_000:
            self._trace_tenants.pop(next(iter(self._trace_tenants)))
        self._queue_self_spans(raws)

    def _queue_self_spans(self, raws: list[RawSpan]) -> None:
        """Normalize and queue garrison's own spans, a slice per loop turn: an export batch (a
        busy gateway's 200 ms: hundreds of spans) normalized in one callback held the event loop
        for several ms, which a request arriving then waited out (the gateway's p99)."""
        head, rest = raws[:_SELF_SLICE], raws[_SELF_SLICE:]
        rows, _ = self._rows(head, None)
        metrics.SPANS_RECEIVED.labels("self").inc(len(rows))
        if not self.queue.offer(rows):
            metrics.SELF_SPANS_DROPPED.inc(len(rows))
        if rest:
            self._self_slices += 1
            asyncio.get_running_loop().call_soon(self._next_self_slice, rest)

    def _next_self_slice(self, raws: list[RawSpan]) -> None:
        self._self_slices -= 1
        self._queue_self_spans(raws)

    async def _self_spans_queued(self) -> None:
        """Wait until the slices of exported own spans are all queued (flush, stop)."""
        while self._self_slices:  # noqa: ASYNC110 (a few loop turns: the slices are already scheduled)
            await asyncio.sleep(0)

    async def _after_write(self, written: Written) -> None:
        rows = written.rows
        for row in rows:
            if row["error_class"]:
                metrics.GEN_AI_ERRORS.labels(row["kind"], row["error_class"]).inc()
            if row["kind"] != "model":
                continue
            provider_name, model = row["provider"] or "", row["model"] or ""
            metrics.GEN_AI_DURATION.labels(provider_name, model, row["operation"] or "").observe(
                row["duration_ms"] / 1000)
            if row["input_tokens"]:
                metrics.GEN_AI_TOKENS.labels(provider_name, model, "input").inc(row["input_tokens"])
            if row["output_tokens"]:
                metrics.GEN_AI_TOKENS.labels(provider_name, model, "output").inc(row["output_tokens"])
        self.forwarder.offer(rows, written.contents)
        if self.metering is not None and self.settings.meter_ingested_usage:
            billable = [r for r in rows if r["kind"] == "model" and not r["gateway"] and r["model"]
                        and (r["input_tokens"] or r["output_tokens"])]
            if billable:
                await self._meter_queue.put(billable)

    async def _meter_loop(self) -> None:
        while True:
            rows = await self._meter_queue.get()
            try:
                await self._meter(rows)
            finally:
                self._meter_queue.task_done()

    async def _meter(self, rows: list[dict[str, Any]]) -> None:
        """Usage of model calls that did not go through garrison's gateway (it meters its own)."""
        if self.metering is None or not hasattr(self.metering, "record_external_usage"):
            return
        for row in rows:
            try:
                await self.metering.record_external_usage(
                    row["tenant_id"], model=row["model"], provider=row["provider"] or "unknown",
                    input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                    cached_tokens=row["cached_tokens"], reasoning_tokens=row["reasoning_tokens"],
                    ts=datetime.fromtimestamp(row["start_ns"] / 1e9, UTC), trace_id=row["trace_id"],
                    span_id=row["span_id"], session_id=row["session_id"], user=row["user_id"],
                    agent=row["agent_name"],
                )
                metrics.METERED.labels("ok").inc()
            except Exception:
                metrics.METERED.labels("failed").inc()
                log.exception("metering rejected usage of span %s", row["span_id"])

    # ------------------------------------------------------------ retention

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_interval_s)
            try:
                await self.apply_retention()
            except Exception:
                log.exception("telemetry retention failed")

    async def apply_retention(self) -> dict[str, int]:
        """Age first (whole day partitions on PostgreSQL), then size in bytes (oldest first)."""
        cutoff = time.time_ns() - int(self.settings.retention_days * DAY_NS)
        by_age = await self.store.drop_older_than(cutoff, whole_partitions=True)
        by_size = await self.store.enforce_max_bytes(self.settings.max_store_bytes)
        return {"dropped_by_age": by_age, "dropped_by_size": by_size,
                "stored_bytes": await self.store.stored_bytes()}

    # ------------------------------------------------------------ queries

    async def get_trace(self, principal: Principal, trace_id: str) -> dict[str, Any]:
        trace_id = trace_id.lower()
        rows, contents = await self.store.trace(principal.tenant_id, trace_id)
        if not rows:
            raise NotFound(f"trace {trace_id} not found")
        return trace_view(trace_id, rows, contents)

    async def list_traces(self, principal: Principal, f: TraceFilter, limit: int,
                          cursor: str | None) -> dict[str, Any]:
        before = None
        if cursor:
            c = decode_cursor(cursor)
            if not isinstance(c.get("s"), int) or not isinstance(c.get("t"), str):
                raise BadRequest("cursor is not valid: pass back the nextCursor value unchanged")
            before = (c["s"], c["t"])
        rows = await self.store.list_traces(principal.tenant_id, f, limit=limit + 1, before=before)
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor({"s": last["start_ns"], "t": last["trace_id"]})
        return {"traces": [trace_summary_view(r) for r in page], "nextCursor": next_cursor}

    async def session(self, principal: Principal, session_id: str, limit: int) -> dict[str, Any]:
        rows = await self.store.session_traces(principal.tenant_id, session_id, limit)
        if not rows:
            raise NotFound(f"session {session_id} not found")
        traces = [trace_summary_view(r) for r in rows]
        return {
            "session_id": session_id,
            "trace_count": len(traces),
            "cost_usd": round(sum(t["cost_usd"] or 0.0 for t in traces), 10),
            "input_tokens": sum(t["input_tokens"] for t in traces),
            "output_tokens": sum(t["output_tokens"] for t in traces),
            "traces": traces,
        }

    async def usage_summary(self, principal: Principal, since: datetime, until: datetime) -> dict[str, Any]:
        # Clamped to what a 64-bit nanosecond column holds (year 0090 or 3426 is a valid query).
        since_ns = max(0, min(int(since.timestamp() * 1e9), 2**63 - 1))
        until_ns = max(0, min(int(until.timestamp() * 1e9), 2**63 - 1))
        if until_ns <= since_ns:
            raise BadRequest("until must be after since")
        days = await self.store.cost_by_model_by_day(principal.tenant_id, since_ns // DAY_NS, until_ns // DAY_NS)
        durations = await self.store.model_durations(principal.tenant_id, since_ns, until_ns)
        by_model: dict[str, list[float]] = defaultdict(list)
        for model, ms in durations:
            by_model[model].append(ms)
        latency = {}
        for model, values in by_model.items():
            values.sort()
            latency[model] = {"calls": len(values), "p50_ms": percentile(values, 0.5),
                              "p95_ms": percentile(values, 0.95), "max_ms": round(values[-1], 3)}
        for d in days:
            d["date"] = datetime.fromtimestamp(d.pop("day") * 86400, UTC).date().isoformat()
            d["cost_usd"] = round(d["cost_usd"], 10)
            d["duration_ms_sum"] = round(d["duration_ms_sum"], 3)
        return {"cost_by_model_by_day": days, "latency_by_model": latency,
                "cost_usd": round(sum(d["cost_usd"] for d in days), 10)}

    # ------------------------------------------------------------ exporters

    async def set_exporter(self, principal: Principal, endpoint: str, headers: dict[str, str],
                           enabled: bool, include_content: bool = False) -> dict[str, Any]:
        await self.store.set_exporter(principal.tenant_id, endpoint, headers, enabled, utcnow(), include_content)
        self.forwarder.configure(await self.store.exporters())
        return self.exporter_view(principal.tenant_id)

    def exporter_view(self, tenant_id: str) -> dict[str, Any]:
        target = self.forwarder.configs.get(tenant_id)
        if target is None:
            raise NotFound("no OTLP exporter is configured for this tenant")
        # Header values may hold credentials: show only their names.
        return {"endpoint": target["endpoint"], "enabled": target["enabled"],
                "include_content": bool(target["include_content"]),
                # Content leaves garrison only when it was captured at all.
                "content_captured": self.settings.capture_content,
                "header_names": sorted(target["headers"])}

    async def delete_exporter(self, principal: Principal) -> None:
        if not await self.store.delete_exporter(principal.tenant_id):
            raise NotFound("no OTLP exporter is configured for this tenant")
        self.forwarder.configure(await self.store.exporters())
