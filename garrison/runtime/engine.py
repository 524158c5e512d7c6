"""Temporal for durable runs: the embedded dev server (or GARRISON_TEMPORAL_ADDRESS) and an in-process worker.

Started lazily: the first durable run (or unfinished runs found at start-up) brings it
up, so a platform that never runs an agent never pays for Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from garrison import __version__ as garrison_version
from garrison.core.errors import ServiceUnavailable
from garrison.runtime.temporal_server import EmbeddedTemporal
from garrison.runtime.workflows import AgentRunWorkflow

log = logging.getLogger("garrison.runtime.engine")


def task_queue_for(data_dir: Path) -> str:
    """Stable across restarts of one installation (a recovered run finds its worker), distinct between installations."""
    return "garrison-runtime-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


class TemporalEngine:
    def __init__(self, *, data_dir: Path, address: str | None, namespace: str, start_timeout_s: float,
                 activities: Sequence[Callable[..., Any]]) -> None:
        self.address = address
        self.namespace = namespace
        self.start_timeout_s = start_timeout_s
        self.task_queue = task_queue_for(data_dir)
        self.embedded = None if address else EmbeddedTemporal(data_dir / "temporal")
        self._activities = list(activities)
        self._client: Client | None = None
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failure: str | None = None
        self.identity = f"garrison-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @property
    def started(self) -> bool:
        return self._client is not None

    async def client(self) -> Client:
        """The connected client, starting Temporal and the worker on first call."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    await self._start()
                except Exception as exc:
                    await self._stop_parts()
                    self._failure = f"{type(exc).__name__}: {exc}"
                    log.error("Temporal is unavailable: %s", self._failure)
                    raise ServiceUnavailable(f"durable runs are unavailable: Temporal did not start ({exc})",
                                             slug="temporal-unavailable") from exc
        assert self._client is not None
        return self._client

    async def _start(self) -> None:
        began = time.monotonic()
        address = self.address
        if self.embedded is not None:
            # On the loop thread on purpose: PR_SET_PDEATHSIG follows the thread that forks.
            address = self.embedded.launch()
        assert address is not None
        client = await self._connect(address)
        self._worker = Worker(
            client, task_queue=self.task_queue, workflows=[AgentRunWorkflow], activities=self._activities,
            identity=self.identity,
            # Named, not derived: the default hashes the code of every loaded module (a second or
            # more at start-up, which a recovering garrison cannot spare).
            build_id=f"garrison-{garrison_version}",
            # garrison's workflow is deterministic by construction and imports nothing at run time;
            # the sandbox would re-import it per run for nothing.
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_concurrent_activities=64,
            # After a crash the next workflow task must not wait (default 5 s) for the dead worker's sticky queue.
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
            # Heartbeats carry cancellation to a running step: send them often enough to stop promptly.
            max_heartbeat_throttle_interval=timedelta(milliseconds=500),
            default_heartbeat_throttle_interval=timedelta(milliseconds=500),
        )
        self._worker_task = asyncio.create_task(self._worker.run(), name="garrison-temporal-worker")
        self._client = client
        log.info("Temporal ready at %s (task queue %s) in %.2f s", address, self.task_queue,
                 time.monotonic() - began)

    async def _connect(self, address: str) -> Client:
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.embedded is not None and self.embedded.exited() is not None:
                raise RuntimeError("the Temporal dev server exited: " + self.embedded.tail_log(800))
            try:
                client = await Client.connect(address, namespace=self.namespace)
                # The namespace answers, not just the port.
                await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=self.namespace))
                return client
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.1)
        raise RuntimeError(f"no Temporal at {address} after {self.start_timeout_s:.0f} s: {last}")

    async def release_orphaned_steps(self, run_ids: list[str]) -> int:
        """Fail, now, the steps that a dead garrison was running, so their retry starts at once.

        Only with the embedded server: this process is then the only worker of the task queue,
        so a step started by another identity belongs to a process that is gone. (Otherwise
        the heartbeat timeout finds them.)
        """
        if self.embedded is None or self._client is None:
            return 0
        from temporalio.api.enums.v1 import PendingActivityState
        from temporalio.exceptions import ApplicationError

        released = 0
        for run_id in run_ids:
            try:
                desc = await self._client.get_workflow_handle(run_id).describe()
            except Exception:
                continue
            for pending in desc.raw_description.pending_activities:
                if (pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                        and pending.last_worker_identity and pending.last_worker_identity != self.identity):
                    handle = self._client.get_async_activity_handle(workflow_id=run_id,
                                                                    run_id=None, activity_id=pending.activity_id)
                    with contextlib.suppress(Exception):
                        await handle.fail(ApplicationError("the garrison process running this step died"))
                        released += 1
        return released

    async def _stop_parts(self) -> None:
        worker, task = self._worker, self._worker_task
        self._worker = self._worker_task = None
        self._client = None
        if worker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.shutdown(), 15)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.embedded is not None:
            await self.embedded.stop()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_parts()

    def describe(self) -> dict[str, Any]:
        return {"address": self.address or (self.embedded.address if self.embedded and self.started else None),
                "mode": "cluster" if self.address else "embedded", "started": self.started,
                "task_queue": self.task_queue, "namespace": self.namespace, "failure": self._failure}
