"""State tables: checkpoints, channel values stored once per version, pending writes.

Every row carries ``tenant_id`` so one database serves many tenants; standalone
savers use the tenant ``default``. Each index costs every put a b-tree insert (and a
WAL page on SQLite), so checkpoints have only the primary key and the run index that
``delete_for_runs`` needs; retention's age pass scans the tenant's rows instead.
The tables keep their rowid on SQLite: WITHOUT ROWID was measured slower here (rows
near 1 KB spill to overflow pages).
"""

from __future__ import annotations

import sqlalchemy as sa

from garrison.db.engine import metadata

checkpoints = sa.Table(
    "state_checkpoints",
    metadata,
    sa.Column("tenant_id", sa.String, primary_key=True),
    sa.Column("thread_id", sa.String, primary_key=True),
    sa.Column("checkpoint_ns", sa.String, primary_key=True),
    sa.Column("checkpoint_id", sa.String, primary_key=True),
    sa.Column("parent_checkpoint_id", sa.String, nullable=True),
    sa.Column("run_id", sa.String, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("type", sa.String, nullable=False),
    sa.Column("checkpoint", sa.LargeBinary, nullable=False),
    # JSON text: metadata (filterable in SQL) and {channel: version} (joins blobs in SQL).
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("channel_versions", sa.Text, nullable=False),
    sa.Index("ix_state_checkpoints_run", "tenant_id", "run_id"),
)

blobs = sa.Table(
    "state_blobs",
    metadata,
    sa.Column("tenant_id", sa.String, primary_key=True),
    sa.Column("thread_id", sa.String, primary_key=True),
    sa.Column("checkpoint_ns", sa.String, primary_key=True),
    sa.Column("channel", sa.String, primary_key=True),
    sa.Column("version", sa.String, primary_key=True),
    sa.Column("type", sa.String, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=True),
)

writes = sa.Table(
    "state_writes",
    metadata,
    sa.Column("tenant_id", sa.String, primary_key=True),
    sa.Column("thread_id", sa.String, primary_key=True),
    sa.Column("checkpoint_ns", sa.String, primary_key=True),
    sa.Column("checkpoint_id", sa.String, primary_key=True),
    sa.Column("task_id", sa.String, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("type", sa.String, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
    sa.Column("task_path", sa.String, nullable=False, server_default=""),
)

CHECKPOINT_TABLES = [checkpoints, blobs, writes]

# -- long-term memory store (LangGraph BaseStore) ---------------------------------------

store_items = sa.Table(
    "state_store_items",
    metadata,
    sa.Column("tenant_id", sa.String, primary_key=True),
    sa.Column("prefix", sa.String, primary_key=True),  # namespace labels joined by "."
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("ttl_minutes", sa.Float, nullable=True),
    sa.Index("ix_state_store_items_expiry", "tenant_id", "expires_at"),
)

store_vectors = sa.Table(
    "state_store_vectors",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("prefix", sa.String, nullable=False),
    sa.Column("key", sa.String, nullable=False),
    sa.Column("field", sa.String, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),  # float32, unit length
    sa.Index("ix_state_store_vectors_item", "tenant_id", "prefix", "key"),
)

STORE_TABLES = [store_items, store_vectors]

# -- retention ----------------------------------------------------------------------------

retention = sa.Table(
    "state_retention",
    metadata,
    sa.Column("tenant_id", sa.String, primary_key=True),
    sa.Column("keep_last", sa.Integer, nullable=True),
    sa.Column("max_age_s", sa.Float, nullable=True),
    sa.Column("idle_thread_s", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# -- memory strategy jobs (events -> records through a model) ---------------------------

memory_jobs = sa.Table(
    "state_memory_jobs",
    metadata,
    sa.Column("job_id", sa.String, primary_key=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("strategy", sa.String, nullable=False),
    sa.Column("actor_id", sa.String, nullable=False),
    sa.Column("session_id", sa.String, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("principal", sa.Text, nullable=False),  # JSON: the caller the model call runs as
    sa.Column("status", sa.String, nullable=False),  # queued | running | succeeded | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("records", sa.Text, nullable=True),  # JSON list of {namespace, key}
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),  # a running job whose lease lapsed is run again
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index("ix_state_memory_jobs_due", "status", "next_attempt_at"),
    sa.Index("ix_state_memory_jobs_tenant", "tenant_id", "created_at"),
)
