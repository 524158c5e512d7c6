"""Hostile and malformed input on /v1 and /api/llm: always a 4xx that says what to fix.

Validation happens before any store access, so these run on SQLite only.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


def chat(model: str = "m", **extra):  # type: ignore[no-untyped-def]
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


BAD_MODELS = [
    {"model": "m", "base_url": "ftp://x/v1"},
    {"model": "m", "base_url": "not a url at all"},
    {"model": "", "base_url": "http://x:1/v1"},
    {"model": "m", "base_url": "http://x:1/v1", "kind": "magic"},
    {"model": "m", "base_url": "http://x:1/v1", "max_concurrency": 0},
    {"model": "m", "base_url": "http://x:1/v1", "fallbacks": ["m"]},
    {"model": "m", "base_url": "http://x:1/v1", "surprise": 1},
]


async def test_bad_model_definitions_are_4xx(client):
    for body in BAD_MODELS:
        r = await client.post("/api/llm/models", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)


BAD_CHATS = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "'model'"),
    (b'{"model": 7, "messages": []}', "'model'"),
    (b'{"model": "m"}', "'messages'"),
    (b'{"model": "m", "messages": []}', "'messages'"),
    (b'{"model": "m", "messages": ["hi"]}', "messages[0]"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "content"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "'stream'"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": true}', "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": 1}', "stream_options"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}', "'tools'"),
    (b'\xff\xfe', "not valid JSON"),
]


async def test_malformed_chat_bodies_are_400(client, fake, add_model):
    await add_model("m", fake)
    for raw, fragment in BAD_CHATS:
        r = await client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, (raw, r.text)
        assert fragment in r.json()["detail"]
        assert r.json()["error"]["message"] == r.json()["detail"]
    assert fake.stats.requests == 0


async def test_bad_completion_and_embedding_inputs(client, fake, add_model):
    await add_model("m", fake)
    for path, body in [
        ("/v1/completions", {"model": "m", "prompt": {"x": 1}}),
        ("/v1/completions", {"model": "m", "prompt": []}),
        ("/v1/embeddings", {"model": "m", "input": [None]}),
        ("/v1/embeddings", {"model": "m", "input": "x", "stream": True}),
    ]:
        r = await client.post(path, json=body)
        assert r.status_code == 400, (path, body, r.text)


async def test_oversized_prompts(client, platform, fake, add_model):
    await add_model("m", fake, context_window=100)
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "word " * 1000}]})
    assert r.status_code == 400 and "shorten the prompt" in r.json()["detail"]
    platform.services["llm"].settings.max_body_bytes = 2048
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "x" * 5000}]})
    assert r.status_code == 413
    assert fake.stats.requests == 0


async def test_bad_priority_header_is_400(client, fake, add_model):
    await add_model("m", fake)
    r = await client.post("/v1/chat/completions", json=chat(), headers={"x-garrison-priority": "urgent"})
    assert r.status_code == 400 and "x-garrison-priority" in r.json()["detail"]


async def test_numbers_too_large_for_the_store_are_422(client, fake, add_model):
    await add_model("m", fake)
    r = await client.patch("/api/llm/models/m", json={"tpm": 268111739777, "tenant_rpm": 10**25})
    assert r.status_code == 422 and "tpm" in r.text
    r = await client.post("/api/llm/models", json={"model": "n", "base_url": fake.base_url, "rpm": 2**31})
    assert r.status_code == 422 and "rpm" in r.text
    assert (await client.patch("/api/llm/models/m", json={"tpm": 2**31 - 1})).status_code == 200
