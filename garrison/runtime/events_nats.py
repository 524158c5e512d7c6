"""Event streams on NATS JetStream (``GARRISON_RUNTIME_EVENTS_BACKEND=nats``), for many garrison processes.

One JetStream stream holds every event stream as its own subject
(``garrison.events.<hex of the stream name>``); offsets are JetStream sequence numbers,
increasing per stream (with gaps), so "replay after offset N" keeps its meaning.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from garrison.core.errors import ServiceUnavailable
from garrison.runtime import serde
from garrison.runtime.events import Event

STREAM = "GARRISON_EVENTS"
PREFIX = "garrison.events."


def subject(stream: str) -> str:
    return PREFIX + stream.encode().hex()


class NatsEvents:
    def __init__(self, url: str, poll_s: float = 0.25, stream: str = STREAM, max_age_s: float = 7 * 86400) -> None:
        self.url = url
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self.stream = stream
        self._nc: Any = None
        self._js: Any = None
        self._lock = asyncio.Lock()
        self._wakeups: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def _jetstream(self) -> Any:
        if self._js is not None:
            return self._js
        async with self._lock:
            if self._js is None:
                import nats
                from nats.js.api import StreamConfig

                try:
                    self._nc = await nats.connect(self.url, connect_timeout=3, max_reconnect_attempts=3)
                    js = self._nc.jetstream()
                    await js.add_stream(StreamConfig(name=self.stream, subjects=[PREFIX + ">"],
                                                    max_age=self.max_age_s))
                except Exception as exc:
                    raise ServiceUnavailable(f"NATS JetStream at {self.url} is unavailable: {exc}",
                                             slug="events-unavailable") from exc
                self._js = js
        return self._js

    async def publish(self, stream: str, event: str, data: Any, step: int | None = None) -> int:
        js = await self._jetstream()
        ack = await js.publish(subject(stream), serde.dumpb({"event": event, "data": data, "step": step}),
                               stream=self.stream)
        self.wake(stream)
        return int(ack.seq)

    def fresh(self, stream: str) -> None:
        return None

    async def count_step(self, stream: str, step: int) -> int:
        """How many events ``step`` has published already (read only when a step is retried)."""
        count, after = 0, 0
        while batch := await self.read(stream, after):
            count += sum(1 for event in batch if event.step == step)
            after = batch[-1].seq
        return count

    def wake(self, stream: str) -> None:
        wake = self._wakeups.pop(stream, None)
        if wake is not None:
            wake.set()

    async def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = await self._jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1,
                                ack_policy=AckPolicy.NONE, inactive_threshold=5.0)
        sub = await js.pull_subscribe(subject(stream), stream=self.stream, config=config)
        out: list[Event] = []
        try:
            while len(out) < limit:
                try:
                    msgs = await sub.fetch(min(limit - len(out), 256), timeout=0.05)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                for msg in msgs:
                    body = serde.loads(msg.data)
                    out.append(Event(int(msg.metadata.sequence.stream), body["event"], body["data"], body.get("step")))
        finally:
            await sub.unsubscribe()
        return out

    async def wait(self, stream: str) -> None:
        try:
            await asyncio.wait_for(self._wakeups[stream].wait(), self.poll_s)
        except TimeoutError:
            pass

    async def drop(self, stream: str) -> None:
        js = await self._jetstream()
        await js.purge_stream(self.stream, subject=subject(stream))

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = self._js = None
