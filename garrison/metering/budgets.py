"""Budgets with reservations, held in memory on the request path.

A budget caps spend for one scope (tenant, key, user, session, agent) over a window
(day, week, month, total) computed from timestamps. Admission reserves the estimated
cost (prompt plus max_tokens); completion swaps the reservation for the real cost. A
request is refused when spent + reserved + estimate would pass the limit, so
concurrent requests cannot overspend by more than what is reserved in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

SCOPES = ("tenant", "key", "user", "session", "agent")
WINDOWS = ("day", "week", "month", "total")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_bounds(window: str, at: datetime) -> tuple[datetime, datetime | None]:
    """[start, end) of the window holding `at` (UTC calendar day, ISO week, month)."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return day, day + timedelta(days=1)
    if window == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if window == "month":
        start = day.replace(day=1)
        nxt = (start + timedelta(days=32)).replace(day=1)
        return start, nxt
    return EPOCH, None


@dataclass
class BudgetState:
    id: str
    tenant_id: str
    scope: str
    scope_id: str
    window: str
    limit_usd: Decimal
    spent: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    window_start: datetime = EPOCH
    window_end: datetime | None = None

    def roll(self, now: datetime) -> None:
        if self.window_end is not None and now >= self.window_end:
            self.window_start, self.window_end = window_bounds(self.window, now)
            self.spent = Decimal(0)

    @property
    def remaining(self) -> Decimal:
        return self.limit_usd - self.spent - self.reserved


@dataclass
class Reservation:
    amount: Decimal
    budgets: list[BudgetState] = field(default_factory=list)
    settled: bool = False
    shared_keys: list[str] = field(default_factory=list)  # Redis window keys (shared budgets)
    units: int = 0  # the amount in nano-dollars, as reserved in Redis


class BudgetExceeded(Exception):
    def __init__(self, budget: BudgetState) -> None:
        super().__init__(budget.id)
        self.budget = budget


class BudgetBook:
    def __init__(self) -> None:
        self._by_scope: dict[tuple[str, str, str], list[BudgetState]] = {}
        self.by_id: dict[str, BudgetState] = {}

    def add(self, state: BudgetState) -> None:
        self.by_id[state.id] = state
        self._by_scope.setdefault((state.tenant_id, state.scope, state.scope_id), []).append(state)

    def remove(self, budget_id: str) -> None:
        state = self.by_id.pop(budget_id, None)
        if state is not None:
            lst = self._by_scope.get((state.tenant_id, state.scope, state.scope_id), [])
            if state in lst:
                lst.remove(state)

    def matching(self, tenant_id: str, scopes: dict[str, str | None]) -> list[BudgetState]:
        if not self.by_id:
            return []
        found: list[BudgetState] = []
        for scope, scope_id in scopes.items():
            if scope_id:
                found.extend(self._by_scope.get((tenant_id, scope, scope_id), ()))
        return found

    def reserve(
        self, tenant_id: str, scopes: dict[str, str | None], amount: Decimal, now: datetime
    ) -> Reservation:
        states = self.matching(tenant_id, scopes)
        for s in states:
            s.roll(now)
            if s.spent + s.reserved + amount > s.limit_usd:
                raise BudgetExceeded(s)
        for s in states:
            s.reserved += amount
        return Reservation(amount, states)

    def hold(self, states: list[BudgetState], amount: Decimal) -> Reservation:
        """Record a reservation that was checked elsewhere (in Redis, across processes)."""
        for s in states:
            s.reserved += amount
        return Reservation(amount, states)

    def settle(self, reservation: Reservation, cost: Decimal | None, now: datetime) -> None:
        """Swap the reservation for the real cost (None: unpriced, nothing to charge)."""
        if reservation.settled:
            return
        reservation.settled = True
        for s in reservation.budgets:
            s.reserved -= reservation.amount
            s.roll(now)
            if cost:
                s.spent += cost

    def charge(self, tenant_id: str, scopes: dict[str, str | None], cost: Decimal, now: datetime) -> None:
        """Usage that was not reserved (seen in ingested spans) still counts."""
        for s in self.matching(tenant_id, scopes):
            s.roll(now)
            s.spent += cost
