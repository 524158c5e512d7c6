"""The in-sandbox runner of a deployed LangGraph graph: one superstep (or one state read) per request.

This file is copied into the version's sandbox template and runs there, under the sandbox's
Python, with the template's site-packages (garrison's own LangGraph and the version's code and
dependencies). It imports nothing from garrison. It serves port 8080 inside the sandbox, which
garrison reaches only through the relay:

``GET /ping``: ready. ``POST /invocations`` with one request serialized by LangGraph's
JsonPlusSerializer (``<type>\\n<bytes>``): ``{"op": "step"|"history"|"update", "ref", "config",
"checkpoints", ...}`` (a ``history`` request with ``"state": true`` asks for ``aget_state``, with
``"subgraphs"``). ``checkpoints`` are the thread's checkpoint tuples that garrison read from
its own checkpointer (newest first). They seed an in-memory saver; the graph runs against it; the
answer is a stream of frames (one per line, ``<type>:<base64>``): the stream items as they come,
then ``{"done": ..., "ops": [...], "states": [...]}`` with every checkpoint and write the step made,
in order, for garrison to write into its own checkpointer. Durability stays in garrison's store:
a sandbox killed mid-step loses nothing that was not already lost with the step. ``checkpoints``
may hold one tuple per checkpoint namespace (a subgraph's own, ``node:task_id``), so a subgraph
that interrupted resumes from its state; its new checkpoints come back in ``ops`` like the root's.
A step request with ``"fresh": true`` is a later superstep of a run, run for the first time: LangGraph is
told it does not resume (so its subgraphs take their input), and the first item's frame says
``"fresh": true`` (garrison's runtime/fresh_steps.py). With ``"breakpoints": true`` such a step keeps the
graph's compiled ``interrupt_before`` (garrison ends the run where it stops) and the last frame names the
graph's compiled breakpoints (``"breakpoints": {"before": [...], "after": [...]}``).

The graph's ``get_store()`` is ``GarrisonStore``: each operation is a call to garrison's LangGraph
Platform ``/store`` API through the sandbox's egress (``GARRISON_STORE_URL``), which sends the
session's token, so the store is the run's tenant's, with the run's owner's scopes.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import importlib.util
import json
import os
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

try:
    from langgraph._internal._constants import CONFIG_KEY_RESUMING
except ImportError:  # an older LangGraph in the template
    CONFIG_KEY_RESUMING = "__pregel_resuming"

SERDE = JsonPlusSerializer()
# No node has this name: interrupt_before that stops before none (an empty list means "the graph's").
NO_BREAKPOINTS = ["__garrison_no_breakpoint__"]
ROOT = Path(os.environ.get("GARRISON_AGENT_ROOT") or Path(__file__).resolve().parent / "__garrison_agent__")
_graphs: dict[str, Any] = {}
_lock = threading.Lock()
_loop = asyncio.new_event_loop()


def dumps(value: Any) -> bytes:
    kind, data = SERDE.dumps_typed(value)
    return kind.encode() + b":" + base64.b64encode(data) + b"\n"


def loads_request(body: bytes) -> Any:
    kind, _, data = body.partition(b"\n")
    return SERDE.loads_typed((kind.decode(), data))


def load(ref: str) -> Any:
    with _lock:
        if ref in _graphs:
            return _graphs[ref]
        file, _, variable = ref.partition(":")
        path = (ROOT / file).resolve()
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))  # the bundle's helper modules import by plain name
        spec = importlib.util.spec_from_file_location(f"garrison_agent_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        graph = getattr(module, variable)
        if hasattr(graph, "compile") and not hasattr(graph, "astream"):
            graph = graph.compile()
        _graphs[ref] = graph
        return graph


def _where(config: Any) -> dict[str, Any]:
    """Only what a checkpointer reads of a config (the step's own holds live objects)."""
    conf = config.get("configurable") or {}
    return {"configurable": {k: conf[k] for k in ("thread_id", "checkpoint_ns", "checkpoint_id") if k in conf}}


class RecordingSaver(InMemorySaver):
    """An in-memory saver that remembers, in order, what the step wrote (not what seeded it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[Any, ...]] = []
        self.recording = False

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        out = super().put(config, checkpoint, metadata, new_versions)
        if self.recording:
            self.ops.append(("put", _where(config), checkpoint, metadata, dict(new_versions)))
        return out

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        super().put_writes(config, writes, task_id, task_path)
        if self.recording:
            self.ops.append(("writes", _where(config), list(writes), task_id, task_path))

    def seed(self, thread_id: str, tuples: list[dict[str, Any]]) -> None:
        for tup in reversed(tuples):  # oldest first: a parent before its child
            cp = tup["checkpoint"]
            conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": tup.get("checkpoint_ns", "")}
            if tup.get("parent_id"):
                conf["checkpoint_id"] = tup["parent_id"]
            self.put({"configurable": conf}, cp, tup["metadata"], dict(cp.get("channel_versions") or {}))
            own = {**conf, "checkpoint_id": cp["id"]}
            by_task: dict[str, list[tuple[str, Any]]] = {}
            for task_id, channel, value in tup.get("writes") or []:
                by_task.setdefault(task_id, []).append((channel, value))
            for task_id, writes in by_task.items():
                self.put_writes({"configurable": own}, writes, task_id)


class StoreError(Exception):
    """garrison's store refused or failed an operation (the graph's error, as in-process)."""


class GarrisonStore(BaseStore):
    """LangGraph's BaseStore on garrison's ``/store`` API, reached through the sandbox's egress.

    Blocking calls (the standard library's http.client: nothing else is certain to be in the
    template), one connection per operation to the in-sandbox egress listener; ``abatch`` runs them
    in a worker thread so concurrent steps' graphs do not wait on each other. TTLs are not sent
    (garrison's store API keeps its own retention).
    """

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base, self.timeout_s = parts.path.rstrip("/"), timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, self.base + path, body=data, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status == 404 and method == "GET":
            return None
        if resp.status >= 300:
            try:
                detail = json.loads(raw).get("detail") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise StoreError(f"garrison's store answered {resp.status} to {method} {path.split('?')[0]}: "
                             f"{str(detail)[:500]}")
        return json.loads(raw) if raw else None

    @staticmethod
    def _item(raw: dict[str, Any], search: bool = False) -> Item:
        fields = {"namespace": tuple(raw["namespace"]), "key": raw["key"], "value": raw["value"],
                  "created_at": datetime.fromisoformat(raw["created_at"]),
                  "updated_at": datetime.fromisoformat(raw["updated_at"])}
        return SearchItem(**fields, score=raw.get("score")) if search else Item(**fields)

    def _one(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            found = self._call("GET", "/items?" + urlencode({"namespace": ".".join(op.namespace), "key": op.key}))
            return self._item(found) if found else None
        if isinstance(op, PutOp):
            target = {"namespace": list(op.namespace), "key": op.key}
            if op.value is None:
                self._call("DELETE", "/items", target)
            else:
                self._call("PUT", "/items", {**target, "value": op.value,
                                             **({"index": op.index} if op.index is not None else {})})
            return None
        if isinstance(op, SearchOp):
            body = {"namespace_prefix": list(op.namespace_prefix), "filter": op.filter, "limit": op.limit,
                    "offset": op.offset, "query": op.query}
            found = self._call("POST", "/items/search", body) or {}
            return [self._item(i, search=True) for i in found.get("items") or []]
        if isinstance(op, ListNamespacesOp):
            body = {"max_depth": op.max_depth, "limit": op.limit, "offset": op.offset}
            for cond in op.match_conditions or ():
                body.setdefault(cond.match_type, list(cond.path))  # the API takes one prefix, one suffix
            found = self._call("POST", "/namespaces", body) or {}
            return [tuple(n) for n in found.get("namespaces") or []]
        raise StoreError(f"unknown store operation {type(op).__name__}")

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._one(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))


STORE_URL = os.environ.get("GARRISON_STORE_URL")
STORE = GarrisonStore(STORE_URL) if STORE_URL else None


async def run(req: dict[str, Any], emit: Any) -> None:
    graph = load(req["ref"])
    saver = RecordingSaver()
    config = req["config"]
    saver.seed(config["configurable"]["thread_id"], req.get("checkpoints") or [])
    update: dict[str, Any] = {"checkpointer": saver}
    if STORE is not None:
        update["store"] = STORE
    bound = graph.copy(update=update)
    if req["op"] == "history" and req.get("state"):  # the thread's state (subgraphs' nested with "subgraphs")
        emit({"done": True, "ops": [], "states": [await bound.aget_state(config, subgraphs=bool(req.get("subgraphs")))]})
        return
    if req["op"] == "history":
        states = [s async for s in bound.aget_state_history(config, filter=req.get("filter"), before=req.get("before"),
                                                            limit=req.get("limit") or 2)]
        emit({"done": True, "ops": [], "states": states})
        return
    if req["op"] == "update":
        saver.recording = True
        new_config = await bound.aupdate_state(config, req.get("values"), as_node=req.get("as_node"))
        emit({"done": True, "ops": saver.ops, "states": [], "config": _where(new_config)})
        return
    saver.recording = True
    options: dict[str, Any] = {}
    mark = False  # the first item says the step ran fresh
    if req.get("fresh"):  # a later superstep run for the first time: not a resume (garrison's runtime/fresh_steps.py)
        config = {**config, "configurable": {**config["configurable"], CONFIG_KEY_RESUMING: False}}
        if not req.get("breakpoints"):  # a garrison that does not end a run at a compiled breakpoint
            options["interrupt_before"] = NO_BREAKPOINTS
        mark = True
    try:
        async for item in bound.astream(req.get("input"), config, stream_mode=req["stream_mode"],
                                        interrupt_after="*", subgraphs=bool(req.get("subgraphs")),
                                        context=req.get("context"), **options):
            emit({"item": item, "fresh": True} if mark else {"item": item})
            mark = False
        state = await bound.aget_state(config)
    except Exception as exc:  # the agent's own error: garrison records it on the run
        emit({"error": {"type": type(exc).__name__, "message": str(exc),
                        "traceback": traceback.format_exc()[-4000:]}, "ops": saver.ops})
        return
    done: dict[str, Any] = {"done": True, "ops": saver.ops, "states": [state]}
    if req.get("breakpoints"):  # the graph's compiled breakpoints: garrison ends the run at them
        done["breakpoints"] = {"before": _nodes(getattr(graph, "interrupt_before_nodes", None)),
                               "after": _nodes(getattr(graph, "interrupt_after_nodes", None))}
    emit(done)


def _nodes(found: Any) -> Any:
    return "*" if found == "*" else list(found or ())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: frames stream as made

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "Healthy"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-garrison-frames")
        self.end_headers()

        def emit(frame: Any) -> None:
            self.wfile.write(dumps(frame))
            self.wfile.flush()

        try:
            asyncio.run_coroutine_threadsafe(run(loads_request(body), emit), _loop).result()
        except BaseException as exc:  # loading failed, or a BaseException out of the graph
            # Not an Exception (a worker lost, as in-process): garrison retries the step.
            emit({"error": {"type": type(exc).__name__, "message": str(exc), "retry": not isinstance(exc, Exception),
                            "traceback": traceback.format_exc()[-4000:]}, "ops": []})


def check(refs: list[str]) -> int:
    """Deploy-time check, run in a throwaway sandbox: every graph of the version imports."""
    for ref in refs:
        try:
            load(ref)
        except BaseException as exc:  # noqa: BLE001 (reported to the deployer, whatever it is)
            print(f"{ref}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


def main() -> None:
    if sys.argv[1:2] == ["--check"]:
        sys.exit(check(sys.argv[2:]))
    threading.Thread(target=_loop.run_forever, daemon=True).start()
    port = int(os.environ.get("PORT") or 8080)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
