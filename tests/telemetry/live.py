"""Real servers on free ports in background threads: garrison itself, and a fake OpenAI upstream."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from garrison.config import Settings
from garrison.server import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def live_garrison(settings: Settings) -> Iterator[tuple[str, str, Any]]:
    """(base_url, admin_key, app) while uvicorn serves the whole platform."""
    app = create_app(settings)
    with serve(app) as url:
        yield url, settings.admin_key_path.read_text().strip(), app


USAGE = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49,
         "prompt_tokens_details": {"cached_tokens": 10}, "completion_tokens_details": {"reasoning_tokens": 0}}


def fake_openai() -> FastAPI:
    """Speaks the OpenAI chat completions protocol (JSON and SSE) with fixed usage."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body.get("model", "gpt-4o-mini")
        if body.get("stream"):
            def events() -> Iterator[str]:
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
                yield "data: " + _dumps({**base, "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]}) + "\n\n"
                yield "data: " + _dumps({**base, "choices": [
                    {"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}) + "\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield "data: " + _dumps({**base, "choices": [], "usage": USAGE}) + "\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
            "usage": USAGE,
        })

    return app


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value)
