"""Runtime tables: agents and their immutable versions, endpoints, assistants, threads, runs, events.

Run inputs and outputs live here, not in Temporal's history: a workflow carries only ids
(claim-check), so history stays small whatever the payload size.
"""

from __future__ import annotations

import sqlalchemy as sa

from garrison.db.engine import metadata

agents = sa.Table(
    "runtime_agents", metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("created_by", sa.String, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_runtime_agents_tenant_name"),
)

versions = sa.Table(
    "runtime_versions", metadata,
    sa.Column("agent_id", sa.String, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("descriptor", sa.Text, nullable=False),
    sa.Column("digest", sa.String, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("created_by", sa.String, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

endpoints = sa.Table(
    "runtime_endpoints", metadata,
    sa.Column("agent_id", sa.String, primary_key=True),
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

assistants = sa.Table(
    "runtime_assistants", metadata,
    sa.Column("assistant_id", sa.String, primary_key=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("agent_id", sa.String, nullable=False),
    sa.Column("graph_id", sa.String, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("context", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_runtime_assistants_tenant", "tenant_id", "graph_id"),
)

threads = sa.Table(
    "runtime_threads", metadata,
    sa.Column("thread_id", sa.String, primary_key=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("owner", sa.String, nullable=True),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_runtime_threads_tenant", "tenant_id", "created_at"),
)

runs = sa.Table(
    "runtime_runs", metadata,
    sa.Column("run_id", sa.String, primary_key=True),
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("thread_id", sa.String, nullable=False),
    sa.Column("assistant_id", sa.String, nullable=False),
    sa.Column("owner", sa.String, nullable=True),
    sa.Column("status", sa.String, nullable=False),
    # JSON: input, command, config, context, stream_mode, on_completion... (the claim-checked payload).
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("multitask_strategy", sa.String, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("steps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_runtime_runs_thread", "thread_id", "created_at"),
    sa.Index("ix_runtime_runs_status", "status"),
)

events = sa.Table(
    "runtime_events", metadata,
    sa.Column("stream", sa.String, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("event", sa.String, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

run_inputs = sa.Table(
    "runtime_run_inputs", metadata,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Model and tool calls made by durable run steps, recorded when they complete (runtime/calls.py): a step that
# is retried gets the recorded answer for the same request instead of calling (and paying) again.
calls = sa.Table(
    "runtime_call_journal", metadata,
    sa.Column("run_id", sa.String, primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("request_hash", sa.String, primary_key=True),  # sha-256 of the operation and request body
    sa.Column("occurrence", sa.Integer, primary_key=True),  # the n-th identical request of the step
    sa.Column("tenant_id", sa.String, nullable=False),
    sa.Column("principal_id", sa.String, nullable=False),
    sa.Column("media_type", sa.String, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
