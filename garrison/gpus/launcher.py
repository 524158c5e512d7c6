"""The local launcher: runs a started workload's command on this host's GPUs.

The process sees only its GPUs (``CUDA_VISIBLE_DEVICES``) and its memory share
(``GARRISON_GPU_MEMORY_MIB`` / ``GARRISON_GPU_FRACTION``; a vLLM command also gets
``--gpu-memory-utilization`` from the fraction, since CUDA itself does not cap memory).
When it exits its GPUs go back to the pool; when its workload is preempted or cancelled
its process group is stopped. A workload that serves a model (``serve``) is registered as
an upstream of the LLM gateway once its port answers, and removed when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garrison.gpus.model import Workload

if TYPE_CHECKING:
    from garrison.gpus.service import GpuService

log = logging.getLogger("garrison.gpus.launcher")
STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 600.0


@dataclass(slots=True)
class Launched:
    workload_id: str
    proc: asyncio.subprocess.Process
    started_at: float
    env: dict[str, str]
    argv: list[str]
    stopping: bool = False
    registered: tuple[str, str] | None = None  # (model, base_url) in the LLM gateway
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def memory_env(w: Workload, gpu_memory: dict[str, int]) -> dict[str, str]:
    """The memory share of one member, as the process should cap itself."""
    if w.whole or not w.placement:
        return {}
    gpu_id, mib = w.placement[0]
    total = gpu_memory.get(gpu_id, mib)
    return {"GARRISON_GPU_MEMORY_MIB": str(mib), "GARRISON_GPU_FRACTION": f"{mib / total:.4f}"}


def with_vllm_cap(argv: list[str], env: dict[str, str]) -> list[str]:
    """vLLM preallocates 90 % of a GPU unless told its share."""
    fraction = env.get("GARRISON_GPU_FRACTION")
    is_vllm = any(Path(a).name == "vllm" or a.startswith("vllm.") for a in argv[:3])
    if not fraction or not is_vllm or any(a.startswith("--gpu-memory-utilization") for a in argv):
        return argv
    return [*argv, "--gpu-memory-utilization", fraction]


class LocalLauncher:
    def __init__(self, service: GpuService, logs: Path, *, node: str | None = None) -> None:
        self.service = service
        self.logs = logs
        self.node = node
        self.running: dict[str, Launched] = {}

    def local_node(self) -> str | None:
        if self.node:
            return self.node
        nodes = list(self.service.sched.cluster.nodes)
        return nodes[0] if len(nodes) == 1 else None

    async def on_cycle(self, started: list[Workload], stopped: list[Workload]) -> None:
        for w in stopped:
            await self.stop(w.id)
        for w in started:
            spec = self.service.launch_specs.get(w.id)
            if spec and spec.get("command") and w.id not in self.running:
                await self.launch(w, spec)

    async def launch(self, w: Workload, spec: dict[str, Any]) -> None:
        node = self.local_node()
        slots = self.service.sched.cluster.by_id
        if node is None or any(slots[g].spec.node != node for g, _ in w.placement if g in slots):
            await self.service.process_exited(w.id, None, f"the local launcher runs work on one node "
                                                          f"({node or 'ambiguous: set GARRISON_GPUS_NODE'}); "
                                                          f"this placement is elsewhere")
            return
        devices: list[str] = []
        for gpu_id, _ in w.placement:
            s = slots[gpu_id].spec
            name = s.uuid or str(s.index)
            if name not in devices:
                devices.append(name)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices), "GARRISON_WORKLOAD_ID": w.id,
               **memory_env(w, {g: slots[g].spec.memory_mib for g, _ in w.placement})}
        serve = spec.get("serve")
        if serve:
            env["PORT"] = str(serve["port"])
        argv = with_vllm_cap(list(spec["command"]), env)
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{w.id}.log"
        try:
            with log_path.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out, stderr=out,
                                                            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            await self.service.process_exited(w.id, None, f"could not start {argv[0]!r}: {exc}")
            return
        launched = Launched(w.id, proc, w.started_at or 0.0, env, argv)
        self.running[w.id] = launched
        launched.tasks.append(asyncio.create_task(self._wait(launched), name=f"gpus-wait-{w.id}"))
        if serve:
            launched.tasks.append(asyncio.create_task(self._register(launched, serve), name=f"gpus-serve-{w.id}"))

    async def _wait(self, launched: Launched) -> None:
        rc = await launched.proc.wait()
        await self._unregister(launched)
        self.running.pop(launched.workload_id, None)
        if not launched.stopping:
            await self.service.process_exited(launched.workload_id, rc, f"process exited with status {rc}")

    async def _register(self, launched: Launched, serve: dict[str, Any]) -> None:
        llm = self.service.platform.services.get("llm")
        if llm is None or not hasattr(llm, "add"):
            return  # no LLM gateway in this installation
        port = int(serve["port"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while loop.time() < deadline and launched.proc.returncode is None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.2)
        else:
            return
        from garrison.llm.schemas import ModelIn

        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            await llm.add(ModelIn(model=serve["model"], base_url=base_url, kind=serve.get("kind", "openai")))
        except Exception:  # the gateway refused: the workload still runs, say why in the log
            log.exception("could not register %s with the LLM gateway", launched.workload_id)
            return
        launched.registered = (serve["model"], base_url)

    async def _unregister(self, launched: Launched) -> None:
        llm = self.service.platform.services.get("llm")
        if launched.registered is None or llm is None:
            return
        model, base_url = launched.registered
        launched.registered = None
        with contextlib.suppress(Exception):
            for replica in llm.get_model(model).replicas:
                if replica.base_url == base_url:
                    await llm.remove_replica(model, replica.id)

    async def stop(self, workload_id: str) -> None:
        """Stop a workload's process group: SIGTERM, then SIGKILL after a grace period."""
        launched = self.running.pop(workload_id, None)
        if launched is None:
            return
        launched.stopping = True
        waiter, *others = launched.tasks
        for task in others:  # a registration still waiting for the port
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launched.proc.pid, sig)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), STOP_GRACE_S)
                break
            except TimeoutError:
                continue
        await waiter  # it unregisters the replica once the process is gone

    async def close(self) -> None:
        for wid in list(self.running):
            await self.stop(wid)

    def is_running(self, workload_id: str) -> bool:
        launched = self.running.get(workload_id)
        return launched is not None and launched.proc.returncode is None

