"""Retention: per-tenant policies that keep checkpoint storage bounded, and storage stats.

A policy combines up to three rules, applied in this order:

- ``idle_thread_s``: drop whole threads whose newest checkpoint is older than this;
- ``max_age_s``: drop checkpoints older than this, but never a namespace's newest one
  (a thread keeps its current state until it is idle);
- ``keep_last``: keep only the newest N checkpoints per thread and namespace.

Blobs no remaining checkpoint references go with them (see ``ops.delete_checkpoints``).
Threads that use a DeltaChannel are skipped by ``keep_last`` and ``max_age_s`` (their
values are rebuilt from ancestors) and reported as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from garrison.state.checkpoint import ops
from garrison.state.checkpoint.saver import GarrisonSaver
from garrison.state.tables import blobs as B
from garrison.state.tables import checkpoints as C
from garrison.state.tables import writes as W

BATCH = 2000


class Policy(BaseModel):
    keep_last: int | None = Field(default=None, ge=1, le=1_000_000,
                                  description="Keep the newest N checkpoints per thread and namespace.")
    max_age_s: float | None = Field(default=None, gt=0, description="Drop checkpoints older than this.")
    idle_thread_s: float | None = Field(default=None, gt=0,
                                        description="Drop threads with no checkpoint newer than this.")

    def is_empty(self) -> bool:
        return self.keep_last is None and self.max_age_s is None and self.idle_thread_s is None


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def stats(saver: GarrisonSaver) -> dict[str, Any]:
    """Row counts and stored bytes of the saver's tenant."""
    t = saver.tenant_id
    with saver.engine.connect() as conn:
        cp = conn.execute(sa.select(
            sa.func.count(), sa.func.count(sa.distinct(C.c.thread_id)),
            sa.func.coalesce(sa.func.sum(sa.func.length(C.c.checkpoint) + sa.func.length(C.c.meta)
                                         + sa.func.length(C.c.channel_versions)), 0),
            sa.func.min(C.c.created_at), sa.func.max(C.c.created_at),
        ).where(C.c.tenant_id == t)).one()
        bl = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(B.c.blob)), 0))
                          .where(B.c.tenant_id == t)).one()
        wr = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(W.c.blob)), 0))
                          .where(W.c.tenant_id == t)).one()
    return {
        "tenant_id": t, "threads": cp[1], "checkpoints": cp[0], "blobs": bl[0], "writes": wr[0],
        "bytes": int(cp[2]) + int(bl[1]) + int(wr[1]),
        "checkpoint_bytes": int(cp[2]), "blob_bytes": int(bl[1]), "write_bytes": int(wr[1]),
        "oldest": cp[3], "newest": cp[4],
    }


def _threads(saver: GarrisonSaver) -> list[str]:
    with saver.engine.connect() as conn:
        return list(conn.execute(sa.select(C.c.thread_id).distinct().where(C.c.tenant_id == saver.tenant_id))
                    .scalars())


def apply(saver: GarrisonSaver, policy: Policy, *, now: float | None = None,
          progress: Progress | None = None) -> dict[str, Any]:
    """Apply ``policy`` to the saver's tenant (blocking: run it in a worker thread)."""
    now = time.time() if now is None else now
    before = stats(saver)
    report: dict[str, Any] = {"threads_dropped": 0, "checkpoints_dropped": 0, "skipped_delta_threads": []}
    if policy.idle_thread_s is not None:
        cutoff = now - policy.idle_thread_s
        with saver.engine.connect() as conn:
            idle = list(conn.execute(sa.select(C.c.thread_id).where(C.c.tenant_id == saver.tenant_id)
                                     .group_by(C.c.thread_id).having(sa.func.max(C.c.created_at) < cutoff))
                        .scalars())
        for start in range(0, len(idle), BATCH):
            saver._write(ops.delete_threads(saver.scope, idle[start:start + BATCH]))
            if progress:
                progress("idle threads", min(len(idle), start + BATCH), len(idle))
        report["threads_dropped"] = len(idle)
    if policy.max_age_s is not None:
        report["checkpoints_dropped"] += _drop_older(saver, now - policy.max_age_s, report, progress)
    if policy.keep_last is not None:
        threads = _threads(saver)
        for i, thread_id in enumerate(threads, 1):
            try:
                report["checkpoints_dropped"] += saver._write(
                    ops.prune(saver.scope, [thread_id], "keep_latest", policy.keep_last), snapshot=True) or 0
            except NotImplementedError:
                report["skipped_delta_threads"].append(thread_id)
            if progress and (i % 100 == 0 or i == len(threads)):
                progress("keep last", i, len(threads))
    after = stats(saver)
    report.update(bytes_before=before["bytes"], bytes_after=after["bytes"],
                  checkpoints_before=before["checkpoints"], checkpoints_after=after["checkpoints"])
    return report


def _drop_older(saver: GarrisonSaver, cutoff: float, report: dict[str, Any], progress: Progress | None) -> int:
    newer = sa.alias(C, "newer")
    has_newer = sa.exists().where(
        newer.c.tenant_id == C.c.tenant_id, newer.c.thread_id == C.c.thread_id,
        newer.c.checkpoint_ns == C.c.checkpoint_ns, newer.c.checkpoint_id > C.c.checkpoint_id)
    with saver.engine.connect() as conn:
        rows = conn.execute(sa.select(C.c.thread_id, C.c.checkpoint_ns, C.c.checkpoint_id, C.c.meta).where(
            C.c.tenant_id == saver.tenant_id, C.c.created_at < cutoff, has_newer)).all()
    delta = {r[0] for r in rows if "counters_since_delta_snapshot" in r[3] or "delta_writes_versioned" in r[3]}
    report["skipped_delta_threads"].extend(sorted(delta))
    doomed = [(r[0], r[1], r[2]) for r in rows if r[0] not in delta]
    for start in range(0, len(doomed), BATCH):
        saver._write(ops.delete_checkpoints(saver.scope, doomed[start:start + BATCH]), snapshot=True)
        if progress:
            progress("older than max age", min(len(doomed), start + BATCH), len(doomed))
    return len(doomed)
