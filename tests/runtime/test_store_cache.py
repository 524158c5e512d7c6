"""The runtime store keeps assistant and endpoint reads briefly: changes made here are read at once."""

from __future__ import annotations

from garrison.core.clock import utcnow


async def test_an_assistant_changed_or_deleted_here_is_read_as_changed_at_once(platform):
    store = platform.services["runtime"].store
    row = {"assistant_id": "a-1", "tenant_id": "t-1", "agent_id": "ag", "graph_id": "g", "name": "a",
           "description": None, "config": {"configurable": {"x": 1}}, "context": {}, "metadata": {}, "version": 1,
           "created_at": utcnow(), "updated_at": utcnow()}
    await store.put_assistant(row)
    first = await store.assistant("t-1", "a-1")
    assert first is not None and first["config"] == {"configurable": {"x": 1}}
    first["config"]["configurable"]["x"] = 99  # the caller's copy, not the store's
    again = await store.assistant("t-1", "a-1")
    assert again is not None and again["config"] == {"configurable": {"x": 1}}
    await store.put_assistant({**row, "config": {"configurable": {"x": 2}}, "version": 2})
    changed = await store.assistant("t-1", "a-1")
    assert changed is not None and changed["config"] == {"configurable": {"x": 2}} and changed["version"] == 2
    assert await store.assistant("t-2", "a-1") is None  # another tenant's
    assert await store.delete_assistant("t-1", "a-1")
    assert await store.assistant("t-1", "a-1") is None


async def test_an_endpoint_moved_here_is_read_moved_at_once(platform):
    store = platform.services["runtime"].store
    assert await store.endpoint("ag", "default") is None
    await store.set_endpoint("ag", "default", 1)
    assert await store.endpoint("ag", "default") == 1
    await store.set_endpoint("ag", "default", 2)
    assert await store.endpoint("ag", "default") == 2
    assert await store.endpoint("ag", "canary") is None
