"""The resource meter: CPU-seconds, memory GiB-seconds and GPU-seconds handed off by
other layers (the sandbox first), per tenant.

Entries go the same way as the usage ledger: a journal line on the caller's path, then
batched inserts with daily rollups in one transaction, replayed after a kill -9.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql, sqlite

from garrison.core.clock import aware
from garrison.metering.ledger import LedgerWriter
from garrison.metering.tables import resource_daily, resource_usage

# The unit each well-known resource is counted in; other resources must name their unit.
DEFAULT_UNITS = {"cpu": "cpu_second", "memory": "gib_second", "gpu": "gpu_second"}
NAME_MAX = 64


@dataclass(slots=True)
class ResourceEntry:
    id: str
    ts: datetime
    tenant_id: str
    source: str
    resource: str
    quantity: float
    unit: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["ts"] = self.ts.isoformat()
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> ResourceEntry:
        doc = orjson.loads(raw)
        doc["ts"] = aware(datetime.fromisoformat(doc["ts"]))
        return cls(**doc)


def checked(
    tenant_id: str, source: str, resource: str, quantity: float, unit: str | None,
    attributes: Mapping[str, Any] | None,
) -> tuple[str, float, dict[str, Any]]:
    """The unit, quantity and attributes to store; ValueError says what the caller got wrong."""
    for name, value in (("tenant_id", tenant_id), ("source", source), ("resource", resource)):
        if not isinstance(value, str) or not value or len(value) > NAME_MAX:
            raise ValueError(f"{name} must be a non-empty string of at most {NAME_MAX} characters")
    expected = DEFAULT_UNITS.get(resource)
    unit = unit or expected
    if not unit or len(unit) > NAME_MAX:
        raise ValueError(f"unit is required for resource {resource!r} (known: {DEFAULT_UNITS})")
    if expected is not None and unit != expected:
        raise ValueError(f"resource {resource!r} is counted in {expected}, not {unit}")
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
        raise ValueError("quantity must be a number")
    quantity = float(quantity)
    if not math.isfinite(quantity) or quantity < 0:
        raise ValueError("quantity must be a finite number, zero or more")
    attrs = dict(attributes or {})
    try:
        orjson.dumps(attrs)
    except TypeError as exc:
        raise ValueError(f"attributes must be JSON-serialisable: {exc}") from None
    return unit, quantity, attrs


class ResourceWriter(LedgerWriter):
    journal_prefix = "resources"

    def _from_json(self, raw: bytes) -> ResourceEntry:
        return ResourceEntry.from_json(raw)

    def _statements(self) -> tuple[Any, Any]:
        if self._stmts is None:
            dialect = postgresql if self.db.dialect == "postgresql" else sqlite
            insert = dialect.insert(resource_usage).on_conflict_do_nothing().returning(resource_usage.c.id)
            ins = dialect.insert(resource_daily)
            upsert = ins.on_conflict_do_update(
                index_elements=["day", "tenant_id", "source", "resource", "unit"],
                set_={c: resource_daily.c[c] + ins.excluded[c] for c in ("quantity", "records")},
            )
            self._stmts = (insert, upsert)
        return self._stmts

    async def _insert(self, entries: list[Any]) -> int:
        insert, upsert = self._statements()
        rows = [asdict(e) for e in entries]
        async with self.db.engine.begin() as conn:
            inserted = {row[0] for row in await conn.execute(insert, rows)}
            rollups = _rollups([r for r in rows if r["id"] in inserted])
            if rollups:
                await conn.execute(upsert, rollups)
            return len(inserted)


def _rollups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    acc: dict[tuple[date, str, str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["ts"].date(), r["tenant_id"], r["source"], r["resource"], r["unit"])
        row = acc.get(key)
        if row is None:
            row = acc[key] = {"day": key[0], "tenant_id": key[1], "source": key[2], "resource": key[3],
                              "unit": key[4], "quantity": 0.0, "records": 0}
        row["quantity"] += r["quantity"]
        row["records"] += 1
    return list(acc.values())
