"""MeteringService: prices, reservations, the ledger, budgets and reports.

The gateway calls `estimate` / `reserve` at admission and `record` at completion;
telemetry calls `record_external_usage` for usage seen in ingested spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, and_, delete, func, select

from garrison.core.clock import aware, utcnow
from garrison.core.errors import BadRequest, NotFound, ServiceUnavailable, TooManyRequests
from garrison.core.ids import new_id
from garrison.db import Database
from garrison.metering.budgets import (
    SCOPES,
    WINDOWS,
    BudgetBook,
    BudgetExceeded,
    BudgetState,
    Reservation,
    window_bounds,
)
from garrison.metering.ledger import LedgerWriter, UsageEntry
from garrison.metering.pricing import CustomPrice, PriceBook, Priced
from garrison.metering.resources import ResourceEntry, ResourceWriter, checked
from garrison.metering.shared import SharedBudgets, nano
from garrison.metering.tables import (
    budgets,
    model_prices,
    resource_daily,
    resource_usage,
    usage_daily,
    usage_ledger,
)

REPORT_GROUPS = {"tenant": "tenant_id", "key": "key_id", "model": "model", "agent": "agent", "day": "day"}
RESOURCE_GROUPS = {"tenant": "tenant_id", "source": "source", "resource": "resource", "day": "day"}


def _scopes(
    tenant_id: str, key_id: str | None, user: str | None, session_id: str | None, agent: str | None
) -> dict[str, str | None]:
    return {"tenant": tenant_id, "key": key_id, "user": user, "session": session_id, "agent": agent}



def _daily_window(query: Any, table: Any, tenant_id: str | None, since: date | None, until: date | None) -> Any:
    """A rollup query narrowed to a tenant (None: all) and to days from ``since`` to ``until``."""
    if tenant_id is not None:
        query = query.where(table.c.tenant_id == tenant_id)
    if since is not None:
        query = query.where(table.c.day >= since)
    if until is not None:
        query = query.where(table.c.day <= until)
    return query

class MeteringService:
    def __init__(
        self, db: Database, journal_dir: Path | None, *, flush_interval_s: float = 0.2, redis_url: str | None = None
    ) -> None:
        self.db = db
        self.prices = PriceBook()
        self.budgets = BudgetBook()
        # With Redis, reservations and spend are checked there, so processes sharing it
        # cannot overspend together; the local book still tracks this process's share.
        self.shared = SharedBudgets(redis_url) if redis_url else None
        self.ledger = LedgerWriter(db, journal_dir, flush_interval_s=flush_interval_s)
        self.resources = ResourceWriter(db, journal_dir, flush_interval_s=max(flush_interval_s, 0.2))

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()
        await self.ledger.start()
        await self.resources.start()
        await self._load_prices()
        await self._load_budgets()

    async def stop(self) -> None:
        if self.shared is not None:
            await self.shared.stop()
        await self.resources.stop()
        await self.ledger.stop()

    # ---- hot path --------------------------------------------------------------------

    def price(
        self,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_tokens: int = 0,
        gpu_seconds: float = 0.0,
        at: datetime | None = None,
        historic: bool = False,
    ) -> Priced:
        return self.prices.price(
            model,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            gpu_seconds=gpu_seconds,
            at=at or utcnow(),
            historic=historic,
        )

    async def reserve(
        self,
        tenant_id: str,
        *,
        model: str,
        provider: str | None,
        input_tokens: int,
        max_output_tokens: int,
        key_id: str | None = None,
        user: str | None = None,
        session_id: str | None = None,
        agent: str | None = None,
    ) -> Reservation:
        """Reserve the worst-case cost; 429 with x-should-retry: false when a budget is spent."""
        scopes = _scopes(tenant_id, key_id, user, session_id, agent)
        states = self.budgets.matching(tenant_id, scopes)
        if not states:
            return Reservation(Decimal(0))
        estimate = self.price(model, provider, input_tokens, max_output_tokens).cost_usd or Decimal(0)
        now = utcnow()
        if self.shared is None:
            try:
                return self.budgets.reserve(tenant_id, scopes, estimate, now)
            except BudgetExceeded as exc:
                raise _spent(exc.budget, exc.budget.spent, exc.budget.reserved) from None
        for b in states:
            b.roll(now)
        units = nano(estimate)
        items = [(self.shared.key(b.id, b.window_start), nano(b.limit_usd), nano(b.spent),
                  self.shared.ttl_ms(b.window_end, now)) for b in states]
        try:
            failed, spent, reserved = await self.shared.reserve(items, units)
        except Exception as exc:  # fail closed: without Redis no process can check the budget
            raise ServiceUnavailable(
                f"the shared budget store (Redis) did not answer ({type(exc).__name__}); retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        if failed:
            raise _spent(states[failed - 1], spent, reserved)
        reservation = self.budgets.hold(states, estimate)
        reservation.shared_keys = [k for k, *_ in items]
        reservation.units = units
        return reservation

    def release(self, reservation: Reservation) -> None:
        self.budgets.settle(reservation, None, utcnow())
        self._settle_shared(reservation, None, utcnow())

    def _settle_shared(self, reservation: Reservation, cost: Decimal | None, now: datetime) -> None:
        if self.shared is None or not reservation.shared_keys:
            return
        charged = [(self.shared.key(b.id, b.window_start), nano(b.spent), self.shared.ttl_ms(b.window_end, now))
                   for b in reservation.budgets]
        self.shared.settle_soon(reservation.shared_keys, charged, reservation.units, nano(cost or Decimal(0)))
        reservation.shared_keys = []

    def _charge_shared(self, tenant_id: str, scopes: dict[str, str | None], cost: Decimal, now: datetime) -> None:
        if self.shared is None:
            return
        states = self.budgets.matching(tenant_id, scopes)
        if states:
            charged = [(self.shared.key(b.id, b.window_start), nano(b.spent), self.shared.ttl_ms(b.window_end, now))
                       for b in states]
            self.shared.settle_soon([k for k, *_ in charged], charged, 0, nano(cost))

    def record(self, entry: UsageEntry, reservation: Reservation | None = None, *, gpu_seconds: float = 0.0) -> None:
        """Price an entry, settle its reservation and append it to the ledger (no I/O wait)."""
        if entry.cost_usd is None and entry.price_version is None:
            priced = self.price(
                entry.model,
                entry.provider,
                entry.input_tokens,
                entry.output_tokens,
                cached_tokens=entry.cached_tokens,
                gpu_seconds=gpu_seconds,
                at=entry.ts,
            )
            entry.cost_usd, entry.price_version = priced.cost_usd, priced.price_version
        if reservation is not None and reservation.budgets:
            self.budgets.settle(reservation, entry.cost_usd, entry.ts)
            self._settle_shared(reservation, entry.cost_usd, entry.ts)
        elif entry.cost_usd:
            scopes = _scopes(entry.tenant_id, entry.key_id, entry.user_id, entry.session_id, entry.agent)
            self.budgets.charge(entry.tenant_id, scopes, entry.cost_usd, entry.ts)
            self._charge_shared(entry.tenant_id, scopes, entry.cost_usd, entry.ts)
        self.ledger.append(entry)

    async def record_external_usage(
        self,
        tenant_id: str,
        *,
        model: str,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        ts: datetime | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        session_id: str | None = None,
        user: str | None = None,
        agent: str | None = None,
    ) -> None:
        """Usage seen in ingested spans; (trace_id, span_id) makes a replayed span count once."""
        when = aware(ts) or utcnow()
        priced = self.price(
            model, provider, input_tokens, output_tokens, cached_tokens=cached_tokens, at=when, historic=True
        )
        entry = UsageEntry(
            id=new_id("use"),
            ts=when,
            tenant_id=tenant_id,
            model=model,
            source="external",
            provider=provider,
            user_id=user,
            agent=agent,
            session_id=session_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
            cost_usd=priced.cost_usd,
            price_version=priced.price_version,
            trace_id=trace_id,
            span_id=span_id,
        )
        self.ledger.append(entry)

    # ---- resources (other layers hand these off) -------------------------------------

    def record_resource(
        self,
        tenant_id: str,
        source: str,
        resource: str,
        quantity: float,
        unit: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        *,
        ts: datetime | None = None,
    ) -> str:
        """Append one resource-usage record (no I/O wait; committed in the next batch).

        `resource` "cpu" is counted in cpu_second, "memory" in gib_second, "gpu" in
        gpu_second (unit may be left out for those); any other resource names its unit.
        Returns the record id. Raises ValueError for an empty name, a negative or
        non-finite quantity, a wrong unit or attributes that are not JSON.
        """
        unit, quantity, attrs = checked(tenant_id, source, resource, quantity, unit, attributes)
        entry = ResourceEntry(
            id=new_id("res"), ts=aware(ts) or utcnow(), tenant_id=tenant_id, source=source,
            resource=resource, quantity=quantity, unit=unit, attributes=attrs,
        )
        self.resources.append(entry)
        return entry.id

    async def resource_report(
        self,
        *,
        by: str,
        tenant_id: str | None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[dict[str, Any]]:
        """Resource totals grouped by tenant, source, resource or day (and always by unit)."""
        if by not in RESOURCE_GROUPS:
            raise BadRequest(f"by must be one of {', '.join(RESOURCE_GROUPS)}")
        await self.resources.drain()
        group = resource_daily.c[RESOURCE_GROUPS[by]]
        keys: list[Any] = [group.label("group")]
        if by != "resource":
            keys.append(resource_daily.c.resource)
        keys.append(resource_daily.c.unit)
        query = (
            select(*keys, func.sum(resource_daily.c.quantity).label("quantity"),
                   func.sum(resource_daily.c.records).label("records"))
            .group_by(*keys)
            .order_by(*keys)
        )
        query = _daily_window(query, resource_daily, tenant_id, since, until)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out = []
        for r in rows:
            g = r["group"]
            out.append({
                by: g.isoformat() if isinstance(g, date) else g,
                "resource": r["resource"] if by != "resource" else g,
                "unit": r["unit"],
                "quantity": round(float(r["quantity"] or 0), 6),
                "records": int(r["records"] or 0),
            })
        return out

    async def resource_entries(self, tenant_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        await self.resources.drain()
        query = select(resource_usage).order_by(resource_usage.c.id.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(resource_usage.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    # ---- prices ----------------------------------------------------------------------

    async def _load_prices(self) -> None:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(model_prices))).mappings().all()
        self.prices.set_custom([_price_from_row(r) for r in rows])

    async def set_price(
        self,
        model: str,
        *,
        input_per_mtok: Decimal,
        output_per_mtok: Decimal,
        cached_input_per_mtok: Decimal | None = None,
        gpu_second_usd: Decimal | None = None,
        valid_from: datetime | None = None,
    ) -> CustomPrice:
        now = utcnow()
        row = {
            "id": new_id("prc"),
            "model": model,
            "input_per_mtok": input_per_mtok,
            "output_per_mtok": output_per_mtok,
            "cached_input_per_mtok": cached_input_per_mtok,
            "gpu_second_usd": gpu_second_usd,
            "valid_from": aware(valid_from) or now,
            "created_at": now,
        }
        async with self.db.engine.begin() as conn:
            await conn.execute(model_prices.insert().values(**row))
        await self._load_prices()
        return _price_from_row(row)

    def list_prices(self) -> list[CustomPrice]:
        return [p for lst in self.prices.custom.values() for p in lst]

    async def delete_price(self, price_id: str) -> None:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(model_prices).where(model_prices.c.id == price_id))
        if result.rowcount == 0:
            raise NotFound(f"no custom price {price_id}")
        await self._load_prices()

    # ---- budgets ---------------------------------------------------------------------

    async def _load_budgets(self) -> None:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(select(budgets).where(budgets.c.active.is_(True)))).mappings().all()
        for r in rows:
            await self._activate(r)

    async def _activate(self, row: Any) -> BudgetState:
        start, end = window_bounds(row["window"], utcnow())
        state = BudgetState(
            id=row["id"],
            tenant_id=row["tenant_id"],
            scope=row["scope"],
            scope_id=row["scope_id"],
            window=row["window"],
            limit_usd=Decimal(row["limit_usd"]),
            window_start=start,
            window_end=end,
        )
        state.spent = await self._spent(state)
        self.budgets.add(state)
        return state

    async def _spent(self, state: BudgetState) -> Decimal:
        await self.ledger.drain()
        column = {
            "tenant": usage_ledger.c.tenant_id,
            "key": usage_ledger.c.key_id,
            "user": usage_ledger.c.user_id,
            "session": usage_ledger.c.session_id,
            "agent": usage_ledger.c.agent,
        }[state.scope]
        query = select(func.coalesce(func.sum(usage_ledger.c.cost_usd), 0)).where(
            and_(
                usage_ledger.c.tenant_id == state.tenant_id,
                column == state.scope_id,
                usage_ledger.c.ts >= state.window_start,
            )
        )
        async with self.db.engine.connect() as conn:
            return Decimal((await conn.execute(query)).scalar_one())

    async def create_budget(
        self, tenant_id: str, scope: str, scope_id: str, window: str, limit_usd: Decimal
    ) -> BudgetState:
        if scope not in SCOPES:
            raise BadRequest(f"scope must be one of {', '.join(SCOPES)}")
        if window not in WINDOWS:
            raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
        if limit_usd < 0:
            raise BadRequest("limit_usd must be zero or more")
        row = {
            "id": new_id("bud"),
            "tenant_id": tenant_id,
            "scope": scope,
            "scope_id": scope_id,
            "window": window,
            "limit_usd": limit_usd,
            "active": True,
            "created_at": utcnow(),
        }
        async with self.db.engine.begin() as conn:
            await conn.execute(budgets.insert().values(**row))
        return await self._activate(row)

    async def list_budgets(self, tenant_id: str | None) -> list[BudgetState]:
        now = utcnow()
        out = []
        for b in self.budgets.by_id.values():
            if tenant_id is None or b.tenant_id == tenant_id:
                b.roll(now)
                out.append(b)
        if self.shared is not None:
            await self.shared.drain()
            for b in out:  # every process's spend and reservations, not only this one's
                spent, reserved = await self.shared.read(self.shared.key(b.id, b.window_start))
                if spent is not None:
                    b.spent = spent
                b.reserved = reserved
        return sorted(out, key=lambda b: b.id)

    def get_budget(self, budget_id: str, tenant_id: str | None) -> BudgetState:
        b = self.budgets.by_id.get(budget_id)
        if b is None or (tenant_id is not None and b.tenant_id != tenant_id):
            raise NotFound(f"no budget {budget_id}")
        return b

    async def delete_budget(self, budget_id: str, tenant_id: str | None) -> None:
        self.get_budget(budget_id, tenant_id)
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(budgets).where(budgets.c.id == budget_id))
        self.budgets.remove(budget_id)

    # ---- reports ---------------------------------------------------------------------

    async def report(
        self,
        *,
        by: str,
        tenant_id: str | None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[dict[str, Any]]:
        """Totals grouped by tenant, key, model, agent or day, from the daily rollups
        (by agent version: from the ledger, which alone has the version)."""
        if by == "agent_version":
            return await self._report_by_version(tenant_id, since, until)
        if by not in REPORT_GROUPS:
            raise BadRequest(f"by must be one of {', '.join(REPORT_GROUPS)}")
        await self.ledger.drain()
        group = usage_daily.c[REPORT_GROUPS[by]]
        query = select(
            group.label("group"),
            func.sum(usage_daily.c.requests).label("requests"),
            func.sum(usage_daily.c.input_tokens).label("input_tokens"),
            func.sum(usage_daily.c.output_tokens).label("output_tokens"),
            func.sum(usage_daily.c.cached_tokens).label("cached_tokens"),
            func.sum(usage_daily.c.reasoning_tokens).label("reasoning_tokens"),
            func.sum(usage_daily.c.cost_usd).label("cost_usd"),
            func.sum(usage_daily.c.unpriced_requests).label("unpriced_requests"),
        ).group_by(group).order_by(group)
        query = _daily_window(query, usage_daily, tenant_id, since, until)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out = []
        for r in rows:
            g = r["group"]
            out.append(
                {
                    by: g.isoformat() if isinstance(g, date) else g,
                    "requests": int(r["requests"] or 0),
                    "input_tokens": int(r["input_tokens"] or 0),
                    "output_tokens": int(r["output_tokens"] or 0),
                    "cached_tokens": int(r["cached_tokens"] or 0),
                    "reasoning_tokens": int(r["reasoning_tokens"] or 0),
                    "cost_usd": str(Decimal(r["cost_usd"] or 0).quantize(Decimal("0.000001"))),
                    "unpriced_requests": int(r["unpriced_requests"] or 0),
                }
            )
        return out

    async def _report_by_version(
        self, tenant_id: str | None, since: date | None, until: date | None
    ) -> list[dict[str, Any]]:
        await self.ledger.drain()
        t = usage_ledger.c
        query = (
            select(
                t.agent, t.agent_version, func.count().label("requests"),
                func.sum(t.input_tokens).label("input_tokens"), func.sum(t.output_tokens).label("output_tokens"),
                func.sum(t.cached_tokens).label("cached_tokens"),
                func.sum(t.reasoning_tokens).label("reasoning_tokens"), func.sum(t.cost_usd).label("cost_usd"),
                func.sum(func.cast(t.cost_usd.is_(None), Integer)).label("unpriced_requests"),
            )
            .where(t.agent.is_not(None))
            .group_by(t.agent, t.agent_version)
            .order_by(t.agent, t.agent_version)
        )
        if tenant_id is not None:
            query = query.where(t.tenant_id == tenant_id)
        if since is not None:
            query = query.where(t.ts >= datetime.combine(since, datetime.min.time(), UTC))
        if until is not None:
            query = query.where(t.ts < datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            {
                "agent": r["agent"], "agent_version": r["agent_version"], "requests": int(r["requests"] or 0),
                "input_tokens": int(r["input_tokens"] or 0), "output_tokens": int(r["output_tokens"] or 0),
                "cached_tokens": int(r["cached_tokens"] or 0), "reasoning_tokens": int(r["reasoning_tokens"] or 0),
                "cost_usd": str(Decimal(r["cost_usd"] or 0).quantize(Decimal("0.000001"))),
                "unpriced_requests": int(r["unpriced_requests"] or 0),
            }
            for r in rows
        ]

    async def entries(self, tenant_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        await self.ledger.drain()
        query = select(usage_ledger).order_by(usage_ledger.c.id.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(usage_ledger.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]


def _spent(b: BudgetState, spent: Decimal, reserved: Decimal) -> TooManyRequests:
    return TooManyRequests(
        f"the {b.window} budget of {b.scope} {b.scope_id} is spent "
        f"(limit ${b.limit_usd:.4f}, spent ${spent:.4f}, reserved ${reserved:.4f}); "
        "raise the budget or wait for the next window",
        slug="budget-exceeded",
        headers={"x-should-retry": "false"},
        budget_id=b.id,
    )


def _price_from_row(r: Any) -> CustomPrice:
    def dec(v: Any) -> Decimal | None:
        return None if v is None else Decimal(v)

    return CustomPrice(
        id=r["id"],
        model=r["model"],
        input_per_mtok=Decimal(r["input_per_mtok"]),
        output_per_mtok=Decimal(r["output_per_mtok"]),
        cached_input_per_mtok=dec(r["cached_input_per_mtok"]),
        gpu_second_usd=dec(r["gpu_second_usd"]),
        valid_from=aware(r["valid_from"]) or datetime.now(UTC) - timedelta(days=1),
    )
