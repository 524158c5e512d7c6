"""The Principal: who is calling, for which tenant, with which scopes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUPERUSER_SCOPE = "admin:*"


def scope_matches(granted: str, wanted: str) -> bool:
    """``resource:verb`` scopes; ``resource:*`` grants every verb of a resource."""
    if granted == wanted:
        return True
    g_res, _, g_verb = granted.partition(":")
    w_res, _, _ = wanted.partition(":")
    return g_verb == "*" and g_res == w_res


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    tenant_id: str
    kind: str  # user | service | agent
    scopes: frozenset[str]
    name: str = ""
    key_id: str | None = None
    token_id: str | None = None
    session_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return SUPERUSER_SCOPE in self.scopes

    def has_scope(self, wanted: str) -> bool:
        """``admin:*`` is the superuser scope and grants every other scope."""
        if self.is_admin:
            return True
        return any(scope_matches(g, wanted) for g in self.scopes)
