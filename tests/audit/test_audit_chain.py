"""The audit chain: batching, append-only store, verification against tampering."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from garrison.audit.verify import verify


async def _write(platform, n: int) -> None:
    for i in range(n):
        platform.audit.record(None, "test:write", f"thing/{i}", "allow", "because", {"i": i}, tenant_id="t")
    await platform.audit.flush()


def _verify(platform):
    return verify(platform.settings.resolved_database_url, platform.settings.data_dir / "audit")


async def _count(platform) -> int:
    async with platform.db.engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()


async def test_entries_are_flushed_within_100ms(platform):
    before = await _count(platform)
    platform.audit.record(None, "test:async", "thing/1", tenant_id="t")
    await asyncio.sleep(0.12)
    assert await _count(platform) == before + 1


async def test_chain_verifies_and_checkpoints_are_signed(platform):
    await _write(platform, 250)
    await platform.audit._checkpoint(force=True)
    res = _verify(platform)
    assert res.ok, res.problems
    assert res.entries >= 250 and res.checkpoints >= 1


async def test_application_cannot_update_or_delete_audit_rows(platform):
    await _write(platform, 3)
    for stmt in ("UPDATE audit_log SET reason = 'x' WHERE seq = 1", "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(Exception, match="append-only"):
            async with platform.db.engine.begin() as conn:
                await conn.execute(text(stmt))
    assert _verify(platform).ok


async def _drop_guards(platform) -> None:
    """What an attacker with DDL rights would do first."""
    async with platform.db.engine.begin() as conn:
        if platform.db.dialect == "postgresql":
            await conn.execute(text("DROP TRIGGER audit_log_no_update ON audit_log"))
        else:
            await conn.execute(text("DROP TRIGGER audit_log_no_update"))
            await conn.execute(text("DROP TRIGGER audit_log_no_delete"))


async def test_verify_detects_an_edited_row(platform):
    await _write(platform, 20)
    await _drop_guards(platform)
    async with platform.db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET decision = 'allow', reason = 'nothing to see' WHERE seq = 5"))
    res = _verify(platform)
    assert not res.ok
    assert any("entry 5" in p and "edited" in p for p in res.problems)


async def test_verify_detects_a_deleted_row(platform):
    await _write(platform, 20)
    await _drop_guards(platform)
    async with platform.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_log WHERE seq = 7"))
    res = _verify(platform)
    assert not res.ok
    assert any("missing" in p for p in res.problems)


async def test_verify_detects_truncation_against_the_checkpoint(platform):
    await _write(platform, 30)
    await platform.audit._checkpoint(force=True)
    last = platform.audit._last_seq
    await _drop_guards(platform)
    async with platform.db.engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE seq > {last - 5}"))
    res = _verify(platform)
    assert not res.ok
    assert any("truncated" in p for p in res.problems)


async def test_verify_detects_a_forged_checkpoint(platform):
    await _write(platform, 5)
    await platform.audit._checkpoint(force=True)
    path = platform.settings.data_dir / "audit" / "checkpoints.jsonl"
    path.write_text(path.read_text().replace('"hash": "', '"hash": "0', 1))
    res = _verify(platform)
    assert not res.ok


async def test_restart_continues_the_chain(settings):
    from garrison.platform import Platform

    p1 = Platform(settings)
    await p1.start()
    await _write(p1, 10)
    await p1.stop()
    p2 = Platform(settings)
    await p2.start()
    await _write(p2, 10)
    res = _verify(p2)
    await p2.stop()
    assert res.ok, res.problems
    assert res.entries >= 20


async def test_oversized_fields_are_clipped_not_lost(platform):
    platform.audit.record(None, "x" * 500, "r" * 5000, "deny", "why " * 5000, {"blob": "z" * 100_000},
                          tenant_id="t")
    await platform.audit.flush()
    rows = await platform.audit.tail(1)
    assert rows[-1]["action"].startswith("xxx") and len(rows[-1]["action"]) <= 128
    assert _verify(platform).ok


async def test_stop_during_a_background_write_keeps_every_entry(platform, caplog):
    """stop() cancels the flusher; one that was writing a batch finishes it first (a cancel inside
    the INSERT left SQLite's write lock held, so stop's own flush failed after the busy timeout)."""
    audit = platform.audit
    before = await _count(platform)
    for i in range(2000):
        audit.record(None, "test:stop", f"thing/{i}", "allow", "", {"i": i}, tenant_id="t")
    audit._wake.set()
    # Until the flusher is writing the batch (no event to wait on: it is the flusher's own state).
    while audit._pending and (audit._inflight is None or audit._inflight.done()):  # noqa: ASYNC110
        await asyncio.sleep(0)
    await audit.stop()  # the fixture's platform.stop() calls it again: a no-op then
    assert await _count(platform) == before + 2000
    assert not [r for r in caplog.records if r.name.startswith("garrison.audit") and r.levelname == "ERROR"], \
        "a flush at shutdown failed (database is locked)"
