"""The memory API's operations on a tenant's store: long-term records and short-term events.

Records live in the caller's namespaces. Events (AgentCore's short-term memory) are
records in the reserved namespace ``("_events", actor, session)``, keyed by a
time-ordered id and not embedded; callers cannot write that namespace as records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph.store.base import InvalidNamespaceError, Item

from garrison.core.errors import BadRequest, NotFound, PayloadTooLarge
from garrison.core.ids import new_id
from garrison.state.checkpoint.errors import InvalidConfig, ValueTooLarge
from garrison.state.schemas import EventIn, EventOut, RecordIn, RecordOut, SearchIn

if TYPE_CHECKING:  # the store module (numpy) is imported when a store is first used, not at start
    from garrison.state.memory.store import GarrisonStore

EVENTS = "_events"


def _out(item: Item) -> RecordOut:
    return RecordOut(namespace=list(item.namespace), key=item.key, value=item.value,
                     created_at=item.created_at.isoformat(), updated_at=item.updated_at.isoformat(),
                     score=getattr(item, "score", None))


class _Translate:
    """Store errors as problem+json: what the caller sent is what needs fixing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> None:
        if isinstance(exc, ValueTooLarge):
            raise PayloadTooLarge(str(exc)) from exc
        if isinstance(exc, (InvalidConfig, InvalidNamespaceError)):
            raise BadRequest(str(exc)) from exc


def _reserved(namespace: list[str]) -> None:
    if namespace and namespace[0] == EVENTS:
        raise BadRequest(f"the namespace root {EVENTS!r} is reserved for events: use /api/memory/events")


async def put_record(store: GarrisonStore, body: RecordIn) -> RecordOut:
    _reserved(body.namespace)
    ns = tuple(body.namespace)
    with _Translate():
        await store.aput(ns, body.key, body.value, index=None if body.index else False, ttl=body.ttl_minutes)
        item = await store.aget(ns, body.key, refresh_ttl=False)
    assert item is not None
    return _out(item)


async def get_record(store: GarrisonStore, namespace: list[str], key: str) -> RecordOut:
    with _Translate():
        item = await store.aget(tuple(namespace), key)
    if item is None:
        raise NotFound(f"no record {key!r} in namespace {'.'.join(namespace)!r}")
    return _out(item)


async def delete_record(store: GarrisonStore, namespace: list[str], key: str) -> None:
    _reserved(namespace)
    with _Translate():
        await store.adelete(tuple(namespace), key)


async def search(store: GarrisonStore, body: SearchIn) -> list[RecordOut]:
    with _Translate():
        items = await store.asearch(tuple(body.namespace_prefix), query=body.query, filter=body.filter,
                                    limit=body.limit, offset=body.offset)
    return [_out(i) for i in items if not (i.namespace and i.namespace[0] == EVENTS) or body.namespace_prefix]


async def namespaces(store: GarrisonStore, prefix: list[str], max_depth: int | None) -> list[list[str]]:
    with _Translate():
        found = await store.alist_namespaces(prefix=tuple(prefix) or None, max_depth=max_depth, limit=1000)
    return [list(ns) for ns in found if ns[0] != EVENTS or prefix]


async def add_event(store: GarrisonStore, body: EventIn) -> EventOut:
    event_id = new_id("mev")
    ns = (EVENTS, body.actor_id, body.session_id)
    with _Translate():
        await store.aput(ns, event_id, body.payload, index=False)
        item = await store.aget(ns, event_id)
    assert item is not None
    return EventOut(event_id=event_id, actor_id=body.actor_id, session_id=body.session_id, payload=item.value,
                    created_at=item.created_at.isoformat())


async def list_events(store: GarrisonStore, actor_id: str, session_id: str, limit: int) -> list[EventOut]:
    with _Translate():
        items = await store.asearch((EVENTS, actor_id, session_id), limit=limit)
    events = sorted(items, key=lambda i: i.key)  # ids are time-ordered
    return [EventOut(event_id=i.key, actor_id=actor_id, session_id=session_id, payload=i.value,
                     created_at=i.created_at.isoformat()) for i in events]
