"""Every convention in use normalizes to the same canonical fields (no store needed)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from garrison.telemetry.normalize import Caps, normalize
from garrison.telemetry.otlp import RawSpan


def raw(name: str, attrs: dict[str, Any], *, status: int = 0, events: list | None = None) -> RawSpan:  # type: ignore[type-arg]
    now = time.time_ns()
    return RawSpan(trace_id="a" * 32, span_id="b" * 16, parent_span_id=None, name=name, otel_kind=3,
                   start_ns=now, end_ns=now + 5_000_000, status_code=status, status_message="",
                   attributes=attrs, resource={"service.name": "x"}, scope="s", events=events or [])


CASES = {
    "gen_ai 1.37+": ("chat gpt-4o", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 20, "gen_ai.usage.reasoning.output_tokens": 5,
        "gen_ai.conversation.id": "c1", "user.id": "u1",
    }),
    "gen_ai 1.36 and older": ("chat gpt-4o", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai",
        "gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 30,
        "gen_ai.usage.cache_read_input_tokens": 20, "gen_ai.usage.reasoning_tokens": 5,
        "gen_ai.conversation.id": "c1", "enduser.id": "u1",
    }),
    "OpenInference": ("ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.provider": "openai",
        "llm.token_count.prompt": 120, "llm.token_count.completion": 30,
        "llm.token_count.prompt_details.cache_read": 20, "llm.token_count.completion_details.reasoning": 5,
        "session.id": "c1", "user.id": "u1",
    }),
    "OpenLLMetry": ("openai.chat", {
        "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai",
        "gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 30,
        "gen_ai.usage.cache_read_input_tokens": 20, "gen_ai.usage.reasoning_tokens": 5,
        "traceloop.association.properties.session_id": "c1",
        "traceloop.association.properties.user_id": "u1",
    }),
    "Langfuse": ("generation", {
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "gpt-4o",
        "gen_ai.system": "openai",
        "langfuse.observation.usage_details": '{"input": 120, "output": 30, "cache_read_input_tokens": 20, '
                                              '"output_reasoning_tokens": 5}',
        "langfuse.session.id": "c1", "langfuse.user.id": "u1",
    }),
}


@pytest.mark.parametrize("convention", list(CASES))
def test_model_call_conventions_agree(convention: str) -> None:
    name, attrs = CASES[convention]
    row = normalize(raw(name, attrs), "t", Caps()).row
    assert row["kind"] == "model"
    assert (row["model"], row["provider"]) == ("gpt-4o", "openai")
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (
        120, 30, 20, 5)
    assert (row["session_id"], row["user_id"]) == ("c1", "u1")


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}, "agent"),
        ({"gen_ai.operation.name": "create_agent"}, "agent"),
        ({"gen_ai.operation.name": "invoke_workflow"}, "workflow"),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}, "tool"),
        ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "m"}, "model"),
        ({"openinference.span.kind": "TOOL", "tool.name": "t"}, "tool"),
        ({"openinference.span.kind": "RETRIEVER"}, "retrieval"),
        ({"openinference.span.kind": "CHAIN"}, "workflow"),
        ({"openinference.span.kind": "GUARDRAIL"}, "guardrail"),
        ({"openinference.span.kind": "AGENT"}, "agent"),
        ({"traceloop.span.kind": "workflow"}, "workflow"),
        ({"traceloop.span.kind": "tool", "traceloop.entity.name": "search"}, "tool"),
        ({"langfuse.observation.type": "tool"}, "tool"),
        ({"langfuse.observation.type": "retriever"}, "retrieval"),
        ({"mcp.method.name": "tools/call", "gen_ai.tool.name": "t"}, "tool"),
        ({"garrison.sandbox.id": "sbx_1"}, "sandbox"),
        ({"garrison.kind": "guardrail"}, "guardrail"),
        ({"http.method": "GET"}, "other"),
    ],
)
def test_span_kinds(attrs: dict[str, Any], kind: str) -> None:
    assert normalize(raw("span", attrs), "t", Caps()).row["kind"] == kind


def test_usage_only_on_model_calls() -> None:
    row = normalize(raw("invoke_agent", {"gen_ai.operation.name": "invoke_agent",
                                         "gen_ai.usage.input_tokens": 500}), "t", Caps()).row
    assert row["input_tokens"] == 0 and row["output_tokens"] == 0


def test_tool_names_across_conventions() -> None:
    a = normalize(raw("x", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                            "gen_ai.tool.call.id": "c"}), "t", Caps()).row
    b = normalize(raw("x", {"openinference.span.kind": "TOOL", "tool.name": "search"}), "t", Caps()).row
    c = normalize(raw("x", {"traceloop.span.kind": "tool", "traceloop.entity.name": "search"}), "t", Caps()).row
    assert a["tool_name"] == b["tool_name"] == c["tool_name"] == "search" and a["tool_call_id"] == "c"


@pytest.mark.parametrize(
    ("attrs", "status", "events", "expected"),
    [
        ({"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": ["content_filter"]}, 0, [],
         "model_refusal"),
        ({"gen_ai.operation.name": "chat", "gen_ai.response.refusal": "I can't help"}, 0, [], "model_refusal"),
        ({"gen_ai.operation.name": "execute_tool"}, 2, [], "tool_failure"),
        ({"gen_ai.operation.name": "chat", "error.type": "TimeoutError"}, 2, [], "timeout"),
        ({"gen_ai.operation.name": "execute_tool"}, 2,
         [{"name": "exception", "time_ns": 1, "attributes": {"exception.type": "httpx.ReadTimeout"}}], "timeout"),
        ({"garrison.kind": "guardrail", "garrison.guardrail.finding": "prompt_injection"}, 0, [],
         "prompt_injection"),
        ({"openinference.span.kind": "GUARDRAIL", "error.type": "PromptInjectionDetected"}, 2, [],
         "prompt_injection"),
        ({"gen_ai.operation.name": "chat"}, 2, [], "model_error"),
        ({"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": ["stop"]}, 0, [], None),
    ],
)
def test_error_classes(attrs: dict[str, Any], status: int, events: list, expected: str | None) -> None:  # type: ignore[type-arg]
    assert normalize(raw("s", attrs, status=status, events=events), "t", Caps()).row["error_class"] == expected


def test_content_is_split_off_and_kept_only_when_enabled() -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": '[{"role":"user"}]',
             "llm.output_messages.0.message.content": "hi", "input.value": "q", "gen_ai.request.model": "m"}
    off = normalize(raw("s", attrs), "t", Caps(capture_content=False))
    assert off.content is None
    stored = orjson.loads(off.row["attributes"])
    assert set(stored) == {"gen_ai.operation.name", "gen_ai.request.model"}
    on = normalize(raw("s", attrs), "t", Caps(capture_content=True, max_content_chars=16))
    assert on.content is not None
    assert on.content["input"]["gen_ai.input.messages"] == '[{"role":"user"}'  # capped at 16, flagged
    assert on.row["flags"] == "truncated"
    assert on.content["output"]["llm.output_messages.0.message.content"] == "hi"
    assert set(orjson.loads(on.row["attributes"])) == {"gen_ai.operation.name", "gen_ai.request.model",
                                                       "garrison.truncated_keys"}


def test_gateway_flag_and_hostile_values() -> None:
    row = normalize(raw("s", {"garrison.gateway": True, "gen_ai.usage.input_tokens": "-5",
                              "gen_ai.operation.name": "chat", "gen_ai.usage.output_tokens": "abc",
                              "gen_ai.request.model": ["m1", "m2"]}), "t", Caps()).row
    assert row["gateway"] is True
    assert row["input_tokens"] == 0 and row["output_tokens"] == 0
    assert row["model"] == "m1"
