"""The real `openai` SDK against garrison, in front of the fake upstream, over real sockets."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture
async def sdk(add_model, fake, garrison_url, make_key):  # type: ignore[no-untyped-def]
    await add_model("llama", fake, kind="vllm", upstream_model="meta/llama-3-8b")
    key = await make_key(["llm:invoke"], tenant="acme")
    async with openai.AsyncOpenAI(base_url=garrison_url + "/v1", api_key=key, max_retries=0) as c:
        yield c


async def test_chat_non_streaming_returns_upstream_answer_and_usage(sdk, fake):
    resp = await sdk.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hello there world"}], max_tokens=5
    )
    assert resp.model == "llama"  # the alias, not the upstream's name
    assert resp.usage.completion_tokens == 5
    assert resp.usage.prompt_tokens == 3 + 3
    assert len(resp.choices[0].message.content.split()) == 5
    assert fake.stats.last_body["model"] == "meta/llama-3-8b"


async def test_chat_streaming_with_include_usage(sdk):
    stream = await sdk.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        assert chunk.model == "llama"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert len(text.split()) == 8
    assert usage is not None and usage.completion_tokens == 8


async def test_streaming_without_include_usage_hides_the_usage_chunk(sdk, fake):
    stream = await sdk.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "x"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # garrison asked the upstream for usage anyway, to account for it.
    assert fake.stats.last_body["stream_options"] == {"include_usage": True}


async def test_tool_calls_pass_through(sdk, fake):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    resp = await sdk.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "weather in Paris"}], tools=tools
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert resp.choices[0].finish_reason == "tool_calls"
    assert fake.stats.last_body["tools"] == tools
    stream = await sdk.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "weather in Paris"}], tools=tools, stream=True
    )
    names = [tc.function.name async for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert names == ["get_weather"]


async def test_completions_and_embeddings_and_models(sdk):
    c = await sdk.completions.create(model="llama", prompt="one two three", max_tokens=3)
    assert c.usage.prompt_tokens == 3 and c.usage.completion_tokens == 3
    e = await sdk.embeddings.create(model="llama", input=["a b", "c"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 8
    assert e.usage.prompt_tokens == 3
    models = await sdk.models.list()
    assert [m.id for m in models.data] == ["llama"]


async def test_unknown_model_is_404(sdk):
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "GET /v1/models" in str(info.value)
