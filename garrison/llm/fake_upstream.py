"""A deterministic fake OpenAI-compatible inference server, for tests and benchmarks.

It is a real HTTP server (uvicorn on a real socket) that speaks what vLLM speaks:
`/v1/chat/completions` (SSE streaming, `stream_options.include_usage`, tool calls),
`/v1/completions`, `/v1/embeddings`, `/v1/models`, and vLLM-style `/metrics`.
Output is a pure function of the request, so tests can assert exact tokens.

Fault injection for tests: `POST /fake/faults` with
`{"fail_status": 503, "fail_count": 2, "disconnect_after_chunks": 3, "waiting": 9,
"kv_cache_usage": 0.95, "ttft_ms": 50, "tokens_per_s": 100}`; `GET /fake/stats`
answers counters (requests, in flight, cancelled streams, priorities seen).

Run alone: `python -m garrison.llm.fake_upstream --port 9100 --ttft-ms 20 --tokens-per-s 200`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeConfig:
    ttft_ms: float = 0.0  # delay before the first token
    tokens_per_s: float = 0.0  # 0: every token at once
    completion_tokens: int = 8  # tokens produced when max_tokens does not cut shorter
    embedding_dims: int = 8
    priority_scheduling: bool = False  # like vLLM --scheduling-policy priority
    served_models: list[str] = field(default_factory=list)  # empty: any model name
    # Faults (tests set them through /fake/faults).
    fail_status: int = 0
    fail_count: int = 0  # how many requests fail with fail_status (0 with a status: all)
    disconnect_after_chunks: int = 0  # drop the connection mid-stream after N chunks
    waiting: int | None = None  # override of vllm:num_requests_waiting
    kv_cache_usage: float | None = None


@dataclass
class FakeStats:
    requests: int = 0
    in_flight: int = 0
    cancelled: int = 0
    completed: int = 0
    priorities: list[int] = field(default_factory=list)
    last_body: dict[str, Any] = field(default_factory=dict)


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def _message_text(messages: list[Any]) -> str:
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return " ".join(parts)


def prompt_tokens_for(messages: list[Any]) -> int:
    return count_tokens(_message_text(messages)) + 3 * len(messages)


def output_words(prompt: str, n: int) -> list[str]:
    """Deterministic words derived from the prompt: same prompt, same answer."""
    seed = hashlib.sha256(prompt.encode()).hexdigest()
    return [f"w{seed[i % 60:i % 60 + 4]}" for i in range(n)]


class FakeUpstream:
    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.stats = FakeStats()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Route("/fake/faults", self.faults, methods=["POST"]),
                Route("/fake/stats", self.get_stats, methods=["GET"]),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(self._task, 5)

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- helpers ---------------------------------------------------------------------

    def _fault(self) -> Response | None:
        c = self.config
        if c.fail_status and (c.fail_count == 0 or self.stats.requests <= c.fail_count):
            return JSONResponse({"error": {"message": "injected failure", "type": "fake"}}, c.fail_status)
        return None

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return JSONResponse({"error": {"message": "body is not JSON"}}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "body must be an object"}}, 400)
        self.stats.requests += 1
        self.stats.last_body = body
        priority = body.get("priority")
        if priority is not None:
            if not self.config.priority_scheduling and priority != 0:
                return JSONResponse(
                    {"error": {"message": "priority requires --scheduling-policy priority"}}, 400
                )
            self.stats.priorities.append(int(priority))
        model = body.get("model")
        if self.config.served_models and model not in self.config.served_models:
            return JSONResponse({"error": {"message": f"model {model!r} does not exist"}}, 404)
        return self._fault() or body

    def _n_tokens(self, body: dict[str, Any]) -> int:
        n = self.config.completion_tokens
        for key in ("max_completion_tokens", "max_tokens"):
            if isinstance(body.get(key), int):
                n = min(n, body[key])
                break
        return max(0, n)

    async def _pace(self, first: bool) -> None:
        c = self.config
        if first and c.ttft_ms:
            await asyncio.sleep(c.ttft_ms / 1000)
        elif not first and c.tokens_per_s:
            await asyncio.sleep(1 / c.tokens_per_s)

    # ---- endpoints -------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        messages = body.get("messages") or []
        prompt = _message_text(messages)
        usage = {
            "prompt_tokens": prompt_tokens_for(messages),
            "completion_tokens": self._n_tokens(body),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        tools = body.get("tools") or []
        tool_call = None
        if tools and body.get("tool_choice") != "none" and isinstance(tools[0], dict):
            name = (tools[0].get("function") or {}).get("name", "tool")
            tool_call = {
                "id": "call_" + hashlib.sha256(prompt.encode()).hexdigest()[:12],
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps({"echo": prompt[-64:]}).decode()},
            }
        words = output_words(prompt, usage["completion_tokens"])
        rid = "chatcmpl-" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        model = body.get("model", "")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._chat_stream(rid, model, words, tool_call, usage, include_usage),
                media_type="text/event-stream",
            )
        self.stats.in_flight += 1
        try:
            await self._pace(True)
            if self.config.tokens_per_s:
                await asyncio.sleep(len(words) / self.config.tokens_per_s)
        finally:
            self.stats.in_flight -= 1
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else " ".join(words)}
        if tool_call:
            message["tool_calls"] = [tool_call]
        self.stats.completed += 1
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}
                ],
                "usage": usage,
            }
        )

    async def _chat_stream(
        self,
        rid: str,
        model: str,
        words: list[str],
        tool_call: dict[str, Any] | None,
        usage: dict[str, int],
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            doc: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + orjson.dumps(doc) + b"\n\n"

        self.stats.in_flight += 1
        sent = 0
        try:
            await self._pace(True)
            yield chunk({"role": "assistant", "content": ""})
            if tool_call:
                yield chunk({"tool_calls": [{"index": 0, **tool_call}]})
            else:
                for i, word in enumerate(words):
                    if i:
                        await self._pace(False)
                    yield chunk({"content": (" " if i else "") + word})
                    sent += 1
                    if self.config.disconnect_after_chunks and sent >= self.config.disconnect_after_chunks:
                        raise ConnectionAbortedError("injected disconnect")
            yield chunk({}, "tool_calls" if tool_call else "stop")
            if include_usage:
                doc = {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + orjson.dumps(doc) + b"\n\n"
            yield b"data: [DONE]\n\n"
            self.stats.completed += 1
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.in_flight -= 1

    async def completions(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            prompt = " ".join(str(p) for p in prompt)
        prompt = str(prompt)
        n = self._n_tokens(body)
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        words = output_words(prompt, n)
        rid = "cmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:16]
        model = body.get("model", "")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            async def gen() -> AsyncIterator[bytes]:
                await self._pace(True)
                for i, word in enumerate(words):
                    if i:
                        await self._pace(False)
                    doc = {"id": rid, "object": "text_completion", "model": model,
                           "choices": [{"index": 0, "text": (" " if i else "") + word, "finish_reason": None}]}
                    yield b"data: " + orjson.dumps(doc) + b"\n\n"
                doc = {"id": rid, "object": "text_completion", "model": model,
                       "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
                yield b"data: " + orjson.dumps(doc) + b"\n\n"
                if include_usage:
                    doc = {"id": rid, "object": "text_completion", "model": model, "choices": [], "usage": usage}
                    yield b"data: " + orjson.dumps(doc) + b"\n\n"
                yield b"data: [DONE]\n\n"

            return StreamingResponse(gen(), media_type="text/event-stream")
        await self._pace(True)
        self.stats.completed += 1
        return JSONResponse(
            {
                "id": rid,
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "length", "logprobs": None}],
                "usage": usage,
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("input", "")
        if isinstance(inputs, str):
            inputs = [inputs]
        data = []
        tokens = 0
        for i, text in enumerate(inputs):
            text = str(text)
            tokens += count_tokens(text)
            digest = hashlib.sha256(text.encode()).digest()
            vec = [(digest[j % 32] - 128) / 128 for j in range(self.config.embedding_dims)]
            data.append({"object": "embedding", "index": i, "embedding": vec})
        self.stats.completed += 1
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(self, request: Request) -> Response:
        names = self.config.served_models or ["fake-model"]
        return JSONResponse(
            {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "fake"} for n in names]}
        )

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        c = self.config
        waiting = c.waiting if c.waiting is not None else 0
        kv = c.kv_cache_usage if c.kv_cache_usage is not None else min(1.0, self.stats.in_flight / 64)
        name = '{model_name="fake"}'
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{name} {self.stats.in_flight}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{name} {waiting}\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{name} {kv}\n"
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def faults(self, request: Request) -> Response:
        changes = orjson.loads(await request.body() or b"{}")
        for key, value in changes.items():
            if hasattr(self.config, key):
                setattr(self.config, key, value)
        if changes.get("reset_stats"):
            self.stats = FakeStats()
        return JSONResponse(asdict(self.config))

    async def get_stats(self, request: Request) -> Response:
        data = asdict(self.stats)
        data.pop("last_body")
        return JSONResponse(data)


def main() -> None:
    parser = argparse.ArgumentParser(description="Deterministic fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    parser.add_argument("--completion-tokens", type=int, default=8)
    parser.add_argument("--priority-scheduling", action="store_true")
    args = parser.parse_args()
    fake = FakeUpstream(
        FakeConfig(
            ttft_ms=args.ttft_ms,
            tokens_per_s=args.tokens_per_s,
            completion_tokens=args.completion_tokens,
            priority_scheduling=args.priority_scheduling,
        )
    )
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
