"""SQLite writes of the hot path: one writer connection, group commit.

SQLite has one writer at a time, and at ``synchronous=FULL`` each commit waits for
one fsync (1-3 ms on a VM disk, most of a put). Writers of this process queue here:
the thread that gets the writer lock commits every put and put_writes queued so far
in one transaction, so N concurrent puts cost one fsync, not N. Each caller returns
only once the transaction holding its rows has committed, so the durability of each
put is unchanged. A single writer sees no change: its batch is itself.

One connection does all these writes: its page cache stays current (16 writer
connections re-read the pages each other changed, ~10 reads per put).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# (sql, params, many): many=True runs executemany over a list of parameter sets.
Statement = tuple[str, Any, bool]


class _Entry:
    __slots__ = ("statements", "done", "error", "wake")

    def __init__(self, statements: list[Statement]) -> None:
        self.statements = statements
        self.done = False
        self.error: BaseException | None = None
        # Held until the leader wakes this writer: its batch committed, or it leads the next one.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """Leader/follower group commit.

    The first writer to arrive leads: it commits everything queued, then wakes each writer
    of that batch at once and hands the lead to the first writer that queued meanwhile.
    (Letting every writer take one shared lock in turn to find its entry committed made a
    chain of wake-ups, one after the other; with 16 threads writing, batches stayed at
    1.4 puts and each commit took three times as long.)
    """

    def __init__(self, open_connection: Callable[[], tuple[Any, Any]]) -> None:
        self._open = open_connection
        self._writer: tuple[Any, Any] | None = None  # (pool fairy, sqlite3 connection)
        self._lock = threading.Lock()  # held by the thread committing a batch
        self._pending: list[_Entry] = []
        self._pending_lock = threading.Lock()
        self._leading = False  # a writer leads: it is committing, or about to

    def write(self, statements: list[Statement]) -> None:
        """Run ``statements`` atomically and durably (as the connection's synchronous says)."""
        entry = _Entry(statements)
        with self._pending_lock:
            self._pending.append(entry)
            lead = not self._leading
            self._leading = True
        if not lead:
            entry.wake.acquire()
            if entry.done:
                if entry.error is not None:
                    raise entry.error
                return
        batch: list[_Entry] = []
        try:
            with self._lock:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        finally:
            with self._pending_lock:
                successor = self._pending[0] if self._pending else None
                if successor is None:
                    self._leading = False
            for other in batch:
                if other is not entry:
                    other.wake.release()
            if successor is not None:
                successor.wake.release()  # not done: it leads the next batch
        if entry.error is not None:
            raise entry.error

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer[0].close()
                self._writer = None

    def _commit(self, batch: list[_Entry]) -> None:
        try:
            self._run(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:  # retry each alone, so only the bad one fails (every statement is an idempotent upsert)
                for entry in batch:
                    self._commit([entry])
                return
        except BaseException as exc:  # interrupted: none of these rows is known to be committed
            for entry in batch:
                entry.error, entry.done = exc, True
            raise
        for entry in batch:
            entry.done = True

    def _run(self, batch: list[_Entry]) -> None:
        if self._writer is None:
            self._writer = self._open()
        con = self._writer[1]
        try:
            if len(batch) == 1 and len(batch[0].statements) == 1 and not batch[0].statements[0][2]:
                sql, params, _many = batch[0].statements[0]
                con.execute(sql, params)  # one statement: atomic on its own, no BEGIN / COMMIT
                return
            # IMMEDIATE: take the write lock now, so another process makes us wait (busy
            # timeout) instead of failing to upgrade a read transaction.
            con.execute("BEGIN IMMEDIATE")
            for sql, rows in _grouped(batch):
                if len(rows) == 1:
                    con.execute(sql, rows[0])
                else:
                    con.executemany(sql, rows)
            con.execute("COMMIT")
        except BaseException:
            fairy, self._writer = self._writer, None
            fairy[0].invalidate()  # unknown transaction state: never reuse
            raise


def _grouped(batch: list[_Entry]) -> list[tuple[str, list[Any]]]:
    """The batch's rows by statement, each statement once (one executemany, not one call a row).

    Rows of one statement keep their order; statements run in order of first appearance.
    Moving a row past another statement's is safe because no two statements here touch the
    same rows (blobs, checkpoints, regular and special writes have distinct keys)."""
    groups: dict[str, list[Any]] = {}
    for entry in batch:
        for sql, params, many in entry.statements:
            rows = groups.setdefault(sql, [])
            if many:
                rows.extend(params)
            else:
                rows.append(params)
    return list(groups.items())
