"""The state layer inside garrison: Alembic branch `state`, tenant-scoped savers."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from garrison.db.migrate import current_tables
from garrison.platform import Platform
from garrison.state.service import StateService
from tests.state.test_saver import Steps


async def test_tables_come_from_the_state_migration_and_savers_are_tenant_scoped(platform: Platform) -> None:
    tables = await asyncio.to_thread(current_tables, platform.settings.resolved_database_url)
    assert {"state_checkpoints", "state_blobs", "state_writes", "state_memory_jobs"} <= tables
    async with platform.db.engine.connect() as conn:
        heads = {r[0] for r in await conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
    assert "state_0005" in heads  # the head of the state branch

    service: StateService = platform.services["state"]
    acme, other = service.saver("ten_acme"), service.saver("ten_other")
    steps = Steps(acme, "thread-1")
    cfg = await acme.aput(*steps.build({"messages": ["hi"]}))
    await acme.aput_writes(cfg, [("messages", ["there"])], "task-1")
    got = await acme.aget_tuple(cfg)
    assert got is not None and got.checkpoint["channel_values"] == {"messages": ["hi"]}
    assert got.pending_writes == [("task-1", "messages", ["there"])]
    assert await other.aget_tuple({"configurable": {"thread_id": "thread-1"}}) is None

    blocking = service.sync_saver("ten_acme")
    assert service.sync_saver("ten_acme") is blocking
    listed = await asyncio.to_thread(lambda: list(blocking.list({"configurable": {"thread_id": "thread-1"}})))
    assert [t.checkpoint["id"] for t in listed] == [got.checkpoint["id"]]


async def test_service_store_is_tenant_scoped_with_semantic_search(platform: Platform) -> None:
    service: StateService = platform.services["state"]
    acme = await asyncio.to_thread(service.store, "ten_acme")
    await acme.aput(("memories", "alice"), "m1", {"text": "Alice prefers window seats on flights"})
    await acme.aput(("memories", "alice"), "m2", {"text": "Alice's manager is Bob"})
    hits = await acme.asearch(("memories",), query="where does alice like to sit on a plane", limit=1)
    assert [h.key for h in hits] == ["m1"]
    other = service.store("ten_other")
    assert await other.asearch(("memories",), query="seats") == []


async def test_encryption_key_in_the_data_dir(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from garrison.config import Settings

    monkeypatch.setenv("GARRISON_STATE_ENCRYPT", "1")
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(data_dir=data, database_url=f"sqlite+aiosqlite:///{data / 'g.db'}")
    service = StateService(settings)
    try:
        key_file = data / "state.key"
        assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
        saver = service.sync_saver("ten_x")
        await asyncio.to_thread(saver.setup)
        cfg = await asyncio.to_thread(saver.put, *Steps(saver, "t").build({"secret": "plaintext-marker"}))
        with saver.engine.connect() as conn:
            raw = b"".join(bytes(r[0]) for r in conn.execute(sa.text("SELECT blob FROM state_blobs")))
        assert b"plaintext-marker" not in raw
        got = await asyncio.to_thread(saver.get_tuple, cfg)
        assert got is not None and got.checkpoint["channel_values"]["secret"] == "plaintext-marker"
        assert StateService(settings).encryption_key == service.encryption_key  # the same key next start
    finally:
        await service.stop()
