"""Steps of a sandboxed LangGraph version: the graph's code runs in the thread's session sandbox.

A version deployed with ``isolation = "sandbox"`` (agent.toml, or GARRISON_RUNTIME_GRAPH_ISOLATION
for every LangGraph version) never has its graph imported by a durable step in garrison's
process. Each (tenant, agent version, thread) gets a session sandbox (runtime/sessions.py: sticky,
idle and lifetime limits, a token scoped to the thread, egress only to garrison's /v1 and /mcp)
running runtime/sandbox_runner.py. ``SandboxedGraph`` stands in for the compiled graph in the
step activity (runtime/executor.py): it reads the thread's checkpoints from garrison's
checkpointer, sends them in with the step, streams the items back, and writes the step's
checkpoints and writes into garrison's checkpointer before the step returns, so durability and
the "no completed step twice" rule stay garrison's. What comes back from the sandbox is decoded
with LangGraph's strict allowlist (messages, LangGraph types), never arbitrary classes.

A sandbox that dies under a step (SIGKILL, OOM, its lifetime) raises ``SandboxLost``, which is
not an agent error: Temporal retries the step, and the retry starts a fresh sandbox.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from opentelemetry import trace
from pydantic_settings import SettingsConfigDict

from garrison.config import LayerSettings
from garrison.runtime.attribution import traceparent_of
from garrison.runtime.fresh_steps import is_fresh, plain
from garrison.sandbox.relay import RelayError

if TYPE_CHECKING:
    from garrison.runtime.service import RuntimeService
    from garrison.runtime.sessions import Session, SessionManager

log = logging.getLogger("garrison.runtime.sandboxed_steps")
TRUSTED = JsonPlusSerializer()  # what garrison sends in (its own checkpoints)
STRICT = JsonPlusSerializer(allowed_msgpack_modules=None)  # what the sandbox sends back


class GraphIsolationSettings(LayerSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_RUNTIME_GRAPH_", extra="ignore")

    # The default for LangGraph versions whose agent.toml does not say: "sandbox" runs the graph in
    # a session sandbox per thread (an ISV's code never runs in garrison's process unless someone
    # chose that); "process" runs it in garrison's worker (trusted first-party graphs, faster).
    isolation: Literal["process", "sandbox"] = "sandbox"
    # False: an agent.toml asking for isolation = "process" is refused at deploy (operators who
    # host third-party agents make every LangGraph version run in sandboxes).
    allow_process: bool = True


class SandboxLost(BaseException):  # noqa: N818 (what happened, not an error of the agent)
    """The step's sandbox died under it: not the agent's error, so the step is retried."""


def _agent_error(kind: str, message: str) -> Exception:
    # Named as the agent's own exception, so the run's error reads the same as in-process.
    cls = type(kind if kind.isidentifier() else "AgentError", (Exception,), {})
    return cls(message)


def _encode(value: Any) -> bytes:
    kind, data = TRUSTED.dumps_typed(value)
    return kind.encode() + b"\n" + data


def _decode(line: bytes) -> Any:
    kind, _, data = line.strip().partition(b":")
    return STRICT.loads_typed((kind.decode(), base64.b64decode(data)))


def _tuple_in(tup: Any) -> dict[str, Any]:
    parent = (tup.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    return {"checkpoint": tup.checkpoint, "metadata": tup.metadata, "parent_id": parent,
            "checkpoint_ns": tup.config["configurable"].get("checkpoint_ns", ""),
            "writes": [list(w) for w in tup.pending_writes or []]}


async def subgraph_tuples(saver: Any, root: Any, page: int = 16) -> list[Any]:
    """The latest checkpoint tuple of each subgraph namespace (``node:task_id``, nested with ``|``)
    that a step from the root checkpoint ``root`` left behind: a subgraph that interrupted (or failed)
    resumes from it when its task runs again. Only a root checkpoint with pending writes can have any
    (an interrupted or failed task writes there), so an ordinary step costs no read at all.

    Such checkpoints name ``root`` as their root parent (LangGraph's ``metadata["parents"][""]``) and,
    made after it, have larger ids: the thread's checkpoints of every namespace are read newest
    first, a page at a time, down to ``root``. ``root`` may itself be a subgraph's checkpoint (a state
    read that names its namespace): then its own subgraphs' are those that name it under its namespace.
    """
    if not root.pending_writes:
        return []
    root_id = root.checkpoint["id"]
    root_ns = root.config["configurable"].get("checkpoint_ns") or ""
    where = {"configurable": {"thread_id": root.config["configurable"]["thread_id"]}}  # no namespace: all
    latest: dict[str, Any] = {}
    before: dict[str, Any] | None = None
    while True:
        got = [t async for t in saver.alist(where, before=before, limit=page)]
        for tup in got:
            conf = tup.config["configurable"]
            if conf["checkpoint_id"] <= root_id:
                return list(latest.values())
            ns = conf.get("checkpoint_ns") or ""
            if ns and ns not in latest and (tup.metadata or {}).get("parents", {}).get(root_ns) == root_id:
                latest[ns] = tup
        if len(got) < page:
            return list(latest.values())
        before = {"configurable": {"checkpoint_id": got[-1].config["configurable"]["checkpoint_id"]}}
        page *= 2


async def persistent_tuples(saver: Any, thread_id: str, have: set[str]) -> list[Any]:
    """The latest checkpoint tuple (with its pending writes) of each namespace of the thread's persistent
    subgraphs (compiled with ``checkpointer=True``: one history per thread under a namespace without task
    ids, ``node`` or ``node|child``), but those in ``have``: a step that runs such a subgraph goes on from
    its state, as in-process. One read of the thread's namespaces, then one per persistent namespace: a
    thread without any sends nothing more. A saver that cannot list namespaces sends none."""
    find = getattr(saver, "apersistent_namespaces", None)
    if find is None:
        return []
    out = []
    for ns in await find(thread_id):
        if ns not in have:
            tup = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}})
            if tup is not None:
                out.append(tup)
    return out


async def _with_subgraphs(saver: Any, root: Any) -> list[Any]:
    """``root``, the latest checkpoints of the subgraphs that a step from it left behind (``subgraph_tuples``)
    and those of the thread's persistent subgraphs (``persistent_tuples``): what a step or a nested state
    read sends in."""
    tuples = [root, *await subgraph_tuples(saver, root)]
    have = {t.config["configurable"].get("checkpoint_ns") or "" for t in tuples}
    return tuples + await persistent_tuples(saver, root.config["configurable"]["thread_id"], have)


def _item(raw: Any) -> tuple[Any, ...]:
    """A stream item as LangGraph yields it (the wire made its tuples lists)."""
    item = tuple(raw)
    chunk = item[-1]
    if isinstance(chunk, dict) and isinstance(chunk.get("__interrupt__"), list):
        chunk = {**chunk, "__interrupt__": tuple(chunk["__interrupt__"])}
    if len(item) == 3:
        return tuple(item[0]), item[1], chunk
    return item[0], chunk


def _root_values(item: tuple[Any, ...]) -> bool:
    return item[0] == "values" if len(item) == 2 else item[0] == () and item[1] == "values"


class SandboxedGraph:
    """What the step activity needs of a compiled graph, executed in the session sandbox."""

    def __init__(self, manager: SessionManager, sess: Session, saver: Any, ref: str) -> None:
        self.manager = manager
        self.sess = sess
        self.saver = saver
        self.ref = ref
        self._state: Any = None
        self._fresh_applied = False  # the runner marked the step's first item: it ran the step fresh
        # The graph's compiled breakpoints, as the runner named them after the step (none: a runner
        # deployed before garrison ended runs at them; runtime/fresh_steps.py's breakpoint_stop).
        self.interrupt_before_nodes: Any = []
        self.interrupt_after_nodes: Any = []

    async def _call(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        sess, sbx = self.sess, self.sess.sandbox
        if sess.relay is None or not sess.alive():
            raise SandboxLost(f"the sandbox of thread {sess.session_id} is gone")
        span = trace.get_current_span()  # the step's: the graph's calls that carry no traceparent join it
        sess.traceparent = traceparent_of(span) if span.get_span_context().is_valid else None
        sess.active += 1
        try:
            resp = await sess.relay.request(self.manager.settings.agent_port, "POST", "/invocations",
                                            [("content-type", "application/x-garrison-request")],
                                            _encode(request), self.manager.settings.invoke_timeout_s)
            buf = b""
            async for chunk in resp.body:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line:
                        yield _decode(line)
            if buf.strip():
                yield _decode(buf)
        except RelayError as exc:
            reason = self.manager._note_ended(sess, sbx) if not sess.alive() or exc.kind == "SandboxGone" else None
            raise SandboxLost(f"the sandbox {sbx.id} of thread {sess.session_id} ended ({reason or exc}); "
                              "the step is retried in a fresh one") from None
        finally:
            sess.active -= 1

    async def _finish(self, frame: dict[str, Any]) -> None:
        """The step's checkpoints and writes, in the order it made them, into garrison's checkpointer."""
        for op in frame.get("ops") or []:
            if op[0] == "put":
                await self.saver.aput(op[1], op[2], op[3], op[4])
            else:
                await self.saver.aput_writes(op[1], op[2], op[3], op[4])

    async def _run(self, request: dict[str, Any]) -> AsyncIterator[Any]:
        ended = False
        try:
            async for frame in self._call(request):
                if "item" in frame:
                    if frame.get("fresh"):
                        self._fresh_applied = True
                    yield _item(frame["item"])
                    continue
                ended = True
                await self._finish(frame)
                if "error" in frame:
                    err = frame["error"]
                    log.info("sandboxed step failed: %s", err.get("traceback", ""))
                    if err.get("retry"):
                        raise SandboxLost(f"{err['type']}: {err['message']}")
                    raise _agent_error(err["type"], err["message"])
                states = frame.get("states") or []
                self._state = states[0] if states else None
                found = frame.get("breakpoints")
                if isinstance(found, dict):
                    self.interrupt_before_nodes = found.get("before") or []
                    self.interrupt_after_nodes = found.get("after") or []
                yield ("__done__", frame)
        finally:
            if not ended and self.sess.alive():
                # Cancelled, or the caller stopped reading: the step must not go on in the sandbox.
                # In the background: a second cancellation must not stop the sandbox's ending halfway.
                self.manager.service.spawn(self.manager.end(self.sess, "step_cancelled"))
        if not ended:
            raise SandboxLost("the sandbox answered without finishing the step")

    async def astream(self, graph_input: Any, config: dict[str, Any], *, stream_mode: list[str],
                      interrupt_after: Any = "*", subgraphs: bool = False,
                      context: Any = None, interrupt_before: Any = None) -> AsyncIterator[Any]:
        """One step in the sandbox. A step that continues its run for the first time (``config`` from
        runtime/fresh_steps.py's ``fresh_config``) goes as ``"fresh": true`` with the config without the
        flag, and the runner applies it (``interrupt_before`` stays the graph's: the one given here is not sent).
        A runner built into an older version's template ignores it and resumes, streaming the state it
        resumes from first: without the runner's mark on the first item, that item is dropped here, so the
        executor sees the same stream either way."""
        tup = await self.saver.aget_tuple(config)
        tuples = await _with_subgraphs(self.saver, tup) if tup is not None else []
        fresh = is_fresh(config)
        request = {"op": "step", "ref": self.ref, "config": plain(config) if fresh else config, "input": graph_input,
                   "stream_mode": stream_mode, "subgraphs": subgraphs, "context": context,
                   "checkpoints": [_tuple_in(t) for t in tuples]}
        if fresh:
            request["fresh"] = True
        request["breakpoints"] = True  # a fresh step keeps the compiled interrupt_before; name them after it
        self._fresh_applied, first = False, True
        async for item in self._run(request):
            if item[0] == "__done__":
                continue
            if first:
                first = False
                if fresh and not self._fresh_applied and _root_values(item):
                    continue  # an older runner resumed: the state it resumed from
            yield item

    async def _last(self, request: dict[str, Any]) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        async for item in self._run(request):
            if item[0] == "__done__":
                frame = item[1]
        return frame

    async def aget_state(self, config: dict[str, Any], *, subgraphs: bool = False) -> Any:
        """The graph's ``aget_state`` in the sandbox, on the checkpoint that ``config`` names (the
        latest by default) and, with ``subgraphs``, the latest checkpoint of each subgraph namespace
        the step from it left behind (``subgraph_tuples``) and of each persistent subgraph's
        (``persistent_tuples``), so a task's nested state is the subgraph's own, as in-process.

        Sent as a ``history`` request marked ``state``: a runner built into an older version's
        template ignores the mark and answers the checkpoint's history entry (the root's state,
        the subgraph tasks named by reference only) instead of taking an unknown op for a step."""
        if self._state is not None and not subgraphs:
            return self._state  # computed in the sandbox at the end of the step
        tup = await self.saver.aget_tuple(config)
        if tup is None:
            from langgraph.types import StateSnapshot

            return StateSnapshot({}, (), config, None, None, None, (), ())  # type: ignore[arg-type]  # no checkpoint yet
        tuples = await _with_subgraphs(self.saver, tup) if subgraphs else [tup]
        frame = await self._last({"op": "history", "state": True, "subgraphs": subgraphs, "ref": self.ref,
                                  "config": config, "limit": 1, "filter": None, "before": None,
                                  "checkpoints": [_tuple_in(t) for t in tuples]})
        return (frame.get("states") or [None])[0]

    async def aget_state_history(self, config: dict[str, Any], *, filter: dict[str, Any] | None = None,
                                 before: dict[str, Any] | None = None, limit: int | None = 2) -> AsyncIterator[Any]:
        tuples = [t async for t in self.saver.alist(config, filter=filter, before=before, limit=limit)]
        if not tuples:
            return
        frame = await self._last({"op": "history", "ref": self.ref, "config": config, "limit": limit,
                                  "filter": filter, "before": before, "checkpoints": [_tuple_in(t) for t in tuples]})
        for state in frame.get("states") or []:
            yield state

    async def aupdate_state(self, config: dict[str, Any], values: Any, as_node: str | None = None) -> Any:
        tup = await self.saver.aget_tuple(config)
        frame = await self._last({"op": "update", "ref": self.ref, "config": config, "values": values,
                                  "as_node": as_node, "checkpoints": [_tuple_in(tup)] if tup is not None else []})
        return frame["config"]


def isolation_for(service: RuntimeService) -> StepIsolation:
    """The runtime service's StepIsolation, made on first use."""
    found: StepIsolation | None = getattr(service, "_step_isolation", None)
    if found is None:
        found = StepIsolation(service)
        service._step_isolation = found  # type: ignore[attr-defined]
    return found


class StepIsolation:
    """The hooks: a sandboxed stand-in for the graph of a sandboxed version (its runs' steps, its
    threads' state reads and updates), else None (the graph runs in garrison's process)."""

    def __init__(self, service: RuntimeService) -> None:
        self.service = service
        self._descriptors: dict[tuple[str, int], dict[str, Any]] = {}  # versions are immutable

    async def descriptor(self, agent_id: str, number: int) -> dict[str, Any]:
        found = self._descriptors.get((agent_id, number))
        if found is None:
            row = await self.service.store.version(agent_id, number)
            found = self._descriptors[(agent_id, number)] = dict(row["descriptor"]) if row else {}
        return found

    async def graph_for(self, run: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        from garrison.runtime.sessions import manager

        spec = run["spec"]
        descriptor = await self.descriptor(spec["agent_id"], spec["version"])
        if descriptor.get("isolation") != "sandbox":
            return None
        sessions = manager(self.service)
        credentials = self.service.runs.credentials
        agent = await credentials.agent_name(spec["agent_id"])
        sess = await sessions.graph_session(run, agent)
        config = dict(spec.get("config") or {})
        configurable = {**(config.get("configurable") or {}), "thread_id": run["thread_id"]}
        if spec.get("checkpoint_id"):
            configurable["checkpoint_id"] = spec["checkpoint_id"]
        garrison = await credentials.for_run(run)
        # Inside the sandbox garrison is the egress listener, and the credential is the session's token.
        garrison.update(llm_base_url=f"http://127.0.0.1:{sess.egress_port}/v1",
                        mcp_url=f"http://127.0.0.1:{sess.egress_port}/mcp/", token=sessions.current_token(sess))
        configurable["garrison"] = garrison
        config["configurable"] = configurable
        config["metadata"] = {**(config.get("metadata") or {}), **(run["metadata"] or {}), "run_id": run["run_id"],
                              "thread_id": run["thread_id"], "assistant_id": run["assistant_id"],
                              "graph_id": spec["graph_id"]}
        saver = self.service.state.saver(run["tenant_id"])
        return SandboxedGraph(sessions, sess, saver, spec["ref"]), config

    async def thread_graph(self, tenant_id: str, assistant: dict[str, Any], number: int, ref: str,
                           thread: dict[str, Any]) -> SandboxedGraph | None:
        """For the threads API: reading or updating a sandboxed version's thread state imports its
        graph in the thread's sandbox, never here."""
        from garrison.runtime.sessions import manager

        descriptor = await self.descriptor(assistant["agent_id"], number)
        if descriptor.get("isolation") != "sandbox":
            return None
        agent = await self.service.runs.credentials.agent_name(assistant["agent_id"])
        # The thread's owner already passed the API's checks; the sandbox gets the thread's session. No
        # scopes named: an open session keeps its run's, a new one gets SESSION_SCOPES until a run comes.
        run = {"tenant_id": tenant_id, "thread_id": thread["thread_id"], "owner": thread.get("owner"),
               "spec": {"agent_id": assistant["agent_id"], "version": number}}
        sessions = manager(self.service)
        sess = await sessions.graph_session(run, agent)
        return SandboxedGraph(sessions, sess, self.service.state.saver(tenant_id), ref)


class SandboxedVersion:
    """What ``RuntimeService.load`` returns for a sandboxed version: binding it (``graphs.bind``) gives
    a reader of a thread's state that works in the thread's sandbox (e.g. a run's final values read
    after it ended in another process), so nothing imports the graph here."""

    def __init__(self, service: RuntimeService, agent_id: str, number: int, ref: str) -> None:
        self.service, self.agent_id, self.number, self.ref = service, agent_id, number, ref
        self.saver: Any = None

    def copy(self, update: dict[str, Any]) -> SandboxedVersion:
        bound = SandboxedVersion(self.service, self.agent_id, self.number, self.ref)
        bound.saver = update.get("checkpointer")
        return bound

    async def _graph(self, config: dict[str, Any]) -> SandboxedGraph:
        tenant = self.saver.tenant_id
        thread_id = config["configurable"]["thread_id"]
        thread = await self.service.store.thread(tenant, thread_id) or {"thread_id": thread_id, "owner": None}
        graph = await isolation_for(self.service).thread_graph(tenant, {"agent_id": self.agent_id}, self.number,
                                                               self.ref, thread)
        if graph is None:
            raise RuntimeError(f"version {self.number} is marked sandboxed but its descriptor is not")
        return graph

    async def aget_state(self, config: dict[str, Any], *, subgraphs: bool = False) -> Any:
        return await (await self._graph(config)).aget_state(config, subgraphs=subgraphs)

    async def aget_state_history(self, config: dict[str, Any], **kw: Any) -> AsyncIterator[Any]:
        async for state in (await self._graph(config)).aget_state_history(config, **kw):
            yield state

    async def aupdate_state(self, config: dict[str, Any], values: Any, as_node: str | None = None) -> Any:
        return await (await self._graph(config)).aupdate_state(config, values, as_node=as_node)
