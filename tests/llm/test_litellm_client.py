"""The litellm SDK as a client of garrison's OpenAI-compatible endpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
import litellm  # noqa: E402


@pytest.fixture
def db_url(tmp_path: Path) -> str:  # a client test: the store is not what it checks
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


async def test_litellm_sdk_chat_stream_and_errors(add_model, fake, garrison_url, make_key):
    await add_model("m", fake)
    key = await make_key(["llm:invoke"], tenant="acme", attributes={"allowed_models": ["m"]})
    kw = {"api_base": garrison_url + "/v1", "api_key": key, "num_retries": 0}
    resp = await litellm.acompletion(model="openai/m", messages=[{"role": "user", "content": "one two"}],
                                     max_tokens=3, **kw)
    assert resp.usage.completion_tokens == 3
    assert len(resp.choices[0].message.content.split()) == 3
    stream = await litellm.acompletion(model="openai/m", messages=[{"role": "user", "content": "x"}],
                                       stream=True, **kw)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert len(text.split()) == 8
    emb = await litellm.aembedding(model="openai/m", input=["a b"], **kw)
    assert len(emb.data[0]["embedding"]) == 8
    with pytest.raises(litellm.exceptions.NotFoundError):
        await litellm.acompletion(model="openai/unknown", messages=[{"role": "user", "content": "x"}], **kw)
