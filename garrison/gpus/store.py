"""Persistence of the GPU layer: configuration documents and workload rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update

from garrison.core.clock import aware, utcnow
from garrison.db import Database
from garrison.gpus.model import State, Workload
from garrison.gpus.tables import gpu_config, gpu_workloads

ACTIVE = (State.pending.value, State.running.value)


def ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def epoch(value: datetime | None) -> float | None:
    value = aware(value)
    return None if value is None else value.timestamp()


def spec_of(w: Workload, launch: dict[str, Any]) -> dict[str, Any]:
    return {"name": w.name, "priority_class": w.priority_class.value, "gpus": w.gpus, "fraction": w.fraction,
            "memory_mib": w.memory_mib, "gang_size": w.gang_size, "preemptible": w.preemptible,
            "min_runtime_s": w.min_runtime_s, "topology": w.topology.value,
            "topology_required": w.topology_required, "command": launch.get("command"),
            "serve": launch.get("serve"), "owner": w.owner}


def state_of(w: Workload) -> dict[str, Any]:
    return {"state": w.state.value, "reason": w.reason[:4000], "reason_code": w.reason_code[:32],
            "placement": json.dumps(w.placement), "allocated": w.allocated, "preemptions": w.preemptions,
            "started_at": ts(w.started_at), "first_started_at": ts(w.first_started_at),
            "finished_at": ts(w.finished_at), "metered_until": ts(w.metered_until)}


class GpuStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_config(self, key: str) -> Any:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(gpu_config.c.value).where(gpu_config.c.key == key))).first()
        return json.loads(row[0]) if row else None

    async def put_config(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        async with self.db.engine.begin() as conn:
            done = await conn.execute(update(gpu_config).where(gpu_config.c.key == key)
                                      .values(value=text, updated_at=utcnow()))
            if not done.rowcount:
                await conn.execute(insert(gpu_config).values(key=key, value=text, updated_at=utcnow()))

    async def insert(self, w: Workload, principal_id: str | None, launch: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(gpu_workloads).values(
                id=w.id, tenant_id=w.tenant_id, principal_id=principal_id, queue=w.queue,
                spec=json.dumps(spec_of(w, launch)), submitted_at=ts(w.submitted_at), **state_of(w)))

    async def save_states(self, workloads: list[Workload]) -> None:
        if not workloads:
            return
        async with self.db.engine.begin() as conn:
            for w in workloads:
                await conn.execute(update(gpu_workloads).where(gpu_workloads.c.id == w.id).values(**state_of(w)))

    async def get(self, workload_id: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(gpu_workloads).where(gpu_workloads.c.id == workload_id))).mappings().first()
        return dict(row) if row else None

    async def active(self) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(gpu_workloads).where(gpu_workloads.c.state.in_(ACTIVE))
                                       .order_by(gpu_workloads.c.submitted_at))).mappings().all()
        return [dict(r) for r in rows]

    async def page(self, tenant_id: str, *, state: str | None, queue: str | None, limit: int,
                   after: tuple[datetime, str] | None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the (submitted_at, id) of the last row already seen."""
        t = gpu_workloads.c
        query = select(gpu_workloads).where(t.tenant_id == tenant_id)
        if state:
            query = query.where(t.state == state)
        if queue:
            query = query.where(t.queue == queue)
        if after is not None:
            query = query.where(or_(t.submitted_at < after[0], and_(t.submitted_at == after[0], t.id < after[1])))
        query = query.order_by(t.submitted_at.desc(), t.id.desc()).limit(limit)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]
