"""Persistence of model pools and replicas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from garrison.core.clock import utcnow
from garrison.core.errors import Conflict, NotFound
from garrison.core.ids import new_id
from garrison.db import Database
from garrison.llm.tables import llm_models, llm_replicas


class ModelStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def load_all(self) -> list[dict[str, Any]]:
        """Every model with its replicas (oldest replica first)."""
        async with self.db.engine.connect() as conn:
            models = (await conn.execute(select(llm_models).order_by(llm_models.c.name))).mappings().all()
            replicas = (
                await conn.execute(select(llm_replicas).order_by(llm_replicas.c.created_at, llm_replicas.c.id))
            ).mappings().all()
        by_model: dict[str, list[dict[str, Any]]] = {}
        for r in replicas:
            by_model.setdefault(r["model"], []).append(dict(r))
        return [{**dict(m), "replicas": by_model.get(m["name"], [])} for m in models]

    async def add_replica(self, model: str, model_fields: dict[str, Any], replica: dict[str, Any]) -> str:
        """Create the model when new (or update its settings), then add one replica."""
        now = utcnow()
        rid = new_id("rep")
        async with self.db.engine.begin() as conn:
            existing = (
                await conn.execute(select(llm_models.c.name).where(llm_models.c.name == model))
            ).first()
            if existing is None:
                await conn.execute(
                    llm_models.insert().values(
                        name=model, created_at=now, **{"fallbacks": [], **model_fields}
                    )
                )
            elif model_fields:
                await conn.execute(update(llm_models).where(llm_models.c.name == model).values(**model_fields))
            dup = (
                await conn.execute(
                    select(llm_replicas.c.id).where(
                        llm_replicas.c.model == model, llm_replicas.c.base_url == replica["base_url"]
                    )
                )
            ).first()
            if dup is not None:
                raise Conflict(f"model {model} already has a replica at {replica['base_url']} ({dup[0]})")
            await conn.execute(llm_replicas.insert().values(id=rid, model=model, created_at=now, **replica))
        return rid

    async def update_model(self, model: str, fields: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(update(llm_models).where(llm_models.c.name == model).values(**fields))
        if result.rowcount == 0:
            raise NotFound(f"no model {model}")

    async def remove_model(self, model: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(llm_replicas).where(llm_replicas.c.model == model))
            result = await conn.execute(delete(llm_models).where(llm_models.c.name == model))
        if result.rowcount == 0:
            raise NotFound(f"no model {model}")

    async def remove_replica(self, model: str, replica_id: str) -> None:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                delete(llm_replicas).where(llm_replicas.c.model == model, llm_replicas.c.id == replica_id)
            )
        if result.rowcount == 0:
            raise NotFound(f"model {model} has no replica {replica_id}")
