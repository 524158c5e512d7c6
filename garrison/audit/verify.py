"""`garrison audit verify`: recompute the chain and hold it against the signed checkpoints.

Detects an edited row (hash mismatch), a deleted row (gap or broken link), and
truncation of the tail (a checkpoint names a row that is gone or differs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, select

from garrison.audit.chain import GENESIS, entry_hash
from garrison.audit.checkpoints import CheckpointFile
from garrison.audit.tables import audit_log
from garrison.db.engine import sync_url


@dataclass
class VerifyResult:
    ok: bool = True
    entries: int = 0
    last_seq: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.ok = False
        if len(self.problems) < 100:
            self.problems.append(message)


def verify(url: str, audit_dir: Path, progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Blocking: stream every row in seq order (run in a thread from async code)."""
    res = VerifyResult()
    hashes_at: dict[int, str] = {}
    cps = CheckpointFile(audit_dir)
    checkpoints = cps.read()
    wanted = {c.seq for c in checkpoints}
    engine = create_engine(sync_url(url))
    cols = [audit_log.c[n] for n in ("seq", "ts", "tenant_id", "principal_id", "action", "resource",
                                     "decision", "reason", "context", "prev_hash", "hash")]
    expected_seq, prev = 1, GENESIS
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=5000).execute(
                select(*cols).order_by(audit_log.c.seq))
            for seq, ts, ten, pid, act, resrc, dec, rsn, ctx, prev_hash, hash_ in result:
                if seq != expected_seq:
                    res.fail(f"entries {expected_seq}..{seq - 1} are missing (deleted rows)")
                if prev_hash != prev:
                    res.fail(f"entry {seq}: prev_hash does not match entry {seq - 1} (chain broken)")
                calc = entry_hash(seq, ts, ten, pid, act, resrc, dec, rsn, ctx, prev_hash)
                if calc != hash_:
                    res.fail(f"entry {seq}: content does not match its hash (edited row)")
                if seq in wanted:
                    hashes_at[seq] = hash_
                prev, expected_seq = hash_, seq + 1
                res.entries += 1
                res.last_seq = seq
                if progress and res.entries % 10000 == 0:
                    progress(res.entries)
    finally:
        engine.dispose()
    pub = cps.public_key()
    for cp in checkpoints:
        if cp.seq < 0:
            res.fail("checkpoint file has a malformed line")
            continue
        res.checkpoints += 1
        if pub is None or not CheckpointFile.valid(pub, cp):
            res.fail(f"checkpoint at entry {cp.seq}: signature is not valid")
            continue
        if cp.seq > res.last_seq:
            res.fail(f"checkpoint at entry {cp.seq} but the log ends at {res.last_seq} (truncated)")
        elif hashes_at.get(cp.seq) != cp.hash:
            res.fail(f"checkpoint at entry {cp.seq}: stored entry differs from the signed one")
    return res
