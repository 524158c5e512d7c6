"""garrison's own spans land in the store in process; ingested usage reaches metering once."""

from __future__ import annotations

import httpx
from opentelemetry import trace

from garrison.telemetry import provider
from tests.telemetry.spans import new_trace_id, protobuf_request, span

PB = {"content-type": "application/x-protobuf"}


async def test_own_spans_are_stored_under_their_tenant(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    tenant = platform.identity.default_tenant_id
    tracer = trace.get_tracer("garrison.tests")
    with tracer.start_as_current_span("gateway.chat", attributes={
        "garrison.tenant_id": tenant, "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5,
        "garrison.gateway": True,
    }) as parent:
        trace_id = format(parent.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("sandbox.run_code"):  # no tenant: inherits the trace's
            pass
    await platform.services["telemetry"].flush()
    got = (await client.get(f"/api/traces/{trace_id}")).json()
    [root] = got["spans"]
    assert root["kind"] == "model" and root["gateway"] is True
    assert [c["kind"] for c in root["children"]] == ["sandbox"]


async def test_a_large_export_batch_is_stored_whole(client: httpx.AsyncClient, platform) -> None:  # type: ignore[no-untyped-def]
    # Own spans are normalized a slice per loop turn (service._queue_self_spans); flush() still
    # returns only once every slice of the batch is stored.
    from garrison.telemetry.service import _SELF_SLICE

    tenant = platform.identity.default_tenant_id
    tracer = trace.get_tracer("garrison.tests")
    with tracer.start_as_current_span("gateway.batch", attributes={"garrison.tenant_id": tenant}) as parent:
        trace_id = format(parent.get_span_context().trace_id, "032x")
        for i in range(3 * _SELF_SLICE + 5):
            with tracer.start_as_current_span(f"step {i}", attributes={"garrison.tenant_id": tenant}):
                pass
    await platform.services["telemetry"].flush()
    got = (await client.get(f"/api/traces/{trace_id}")).json()
    [root] = got["spans"]
    assert len(root["children"]) == 3 * _SELF_SLICE + 5


async def test_provider_is_installed_once_per_process(platform) -> None:  # type: ignore[no-untyped-def]
    from garrison.db import Database
    from garrison.telemetry.service import TelemetryService

    before = trace.get_tracer_provider()
    sinks = provider.sink_count()
    second = TelemetryService(Database(platform.settings.resolved_database_url))
    await second.start()
    try:
        assert trace.get_tracer_provider() is before
        assert provider.sink_count() == sinks + 1
    finally:
        await second.stop()
        await second.store.db.dispose()
    assert provider.sink_count() == sinks


async def test_ingested_usage_is_metered_once_and_gateway_spans_are_not(client: httpx.AsyncClient,
                                                                         platform) -> None:  # type: ignore[no-untyped-def]
    tid = new_trace_id()
    model = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 30}
    outside = span(tid, "chat gpt-4o-mini", model)
    through_gateway = span(tid, "chat gpt-4o-mini", {**model, "garrison.gateway": True})
    body = protobuf_request([outside, through_gateway])
    for _ in range(2):  # a replay must not meter twice
        assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 200
    await platform.services["telemetry"].flush()
    got = (await client.get(f"/api/traces/{tid}")).json()
    assert got["summary"]["input_tokens"] == 600  # both are in the span store
    metering = platform.services.get("metering")
    if metering is None:
        return  # without metering, usage is kept in the span store only (asserted above)
    await metering.ledger.drain()
    entries = await metering.entries(platform.identity.default_tenant_id, limit=100)
    span_ids = [e.get("span_id") for e in entries if e.get("trace_id") == tid]
    assert span_ids == [outside["span_id"]]
