"""runtime: agents, versions, endpoints, assistants, threads, runs, events

Revision ID: runtime_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "runtime_0001"
down_revision = None
branch_labels = ("runtime",)
depends_on = "foundation_0001"

TABLES = ("runtime_run_inputs", "runtime_events", "runtime_runs", "runtime_threads", "runtime_assistants",
          "runtime_endpoints", "runtime_versions", "runtime_agents")


def upgrade() -> None:
    op.create_table(
        'runtime_agents',
        sa.Column('id', sa.String, primary_key=True),
        sa.Column('tenant_id', sa.String, nullable=False),
        sa.Column('name', sa.String, nullable=False),
        sa.Column('created_by', sa.String, nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('tenant_id', 'name', name='uq_runtime_agents_tenant_name'),
    )
    op.create_table(
        'runtime_versions',
        sa.Column('agent_id', sa.String, primary_key=True),
        sa.Column('version', sa.Integer, primary_key=True),
        sa.Column('tenant_id', sa.String, nullable=False),
        sa.Column('kind', sa.String, nullable=False),
        sa.Column('descriptor', sa.Text, nullable=False),
        sa.Column('digest', sa.String, nullable=False),
        sa.Column('path', sa.Text, nullable=False),
        sa.Column('created_by', sa.String, nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'runtime_endpoints',
        sa.Column('agent_id', sa.String, primary_key=True),
        sa.Column('name', sa.String, primary_key=True),
        sa.Column('version', sa.Integer, nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'runtime_assistants',
        sa.Column('assistant_id', sa.String, primary_key=True),
        sa.Column('tenant_id', sa.String, nullable=False),
        sa.Column('agent_id', sa.String, nullable=False),
        sa.Column('graph_id', sa.String, nullable=False),
        sa.Column('name', sa.String, nullable=False),
        sa.Column('description', sa.Text, nullable=True),
        sa.Column('config', sa.Text, nullable=False),
        sa.Column('context', sa.Text, nullable=False),
        sa.Column('metadata', sa.Text, nullable=False),
        sa.Column('version', sa.Integer, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_runtime_assistants_tenant', 'runtime_assistants', ['tenant_id', 'graph_id'])
    op.create_table(
        'runtime_threads',
        sa.Column('thread_id', sa.String, primary_key=True),
        sa.Column('tenant_id', sa.String, nullable=False),
        sa.Column('owner', sa.String, nullable=True),
        sa.Column('status', sa.String, nullable=False),
        sa.Column('metadata', sa.Text, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_runtime_threads_tenant', 'runtime_threads', ['tenant_id', 'created_at'])
    op.create_table(
        'runtime_runs',
        sa.Column('run_id', sa.String, primary_key=True),
        sa.Column('tenant_id', sa.String, nullable=False),
        sa.Column('thread_id', sa.String, nullable=False),
        sa.Column('assistant_id', sa.String, nullable=False),
        sa.Column('owner', sa.String, nullable=True),
        sa.Column('status', sa.String, nullable=False),
        sa.Column('spec', sa.Text, nullable=False),
        sa.Column('metadata', sa.Text, nullable=False),
        sa.Column('multitask_strategy', sa.String, nullable=False),
        sa.Column('error', sa.Text, nullable=True),
        sa.Column('steps', sa.Integer, nullable=False, server_default='0'),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_runtime_runs_thread', 'runtime_runs', ['thread_id', 'created_at'])
    op.create_index('ix_runtime_runs_status', 'runtime_runs', ['status'])
    op.create_table(
        'runtime_events',
        sa.Column('stream', sa.String, primary_key=True),
        sa.Column('seq', sa.Integer, primary_key=True),
        sa.Column('event', sa.String, nullable=False),
        sa.Column('data', sa.Text, nullable=False),
        sa.Column('step', sa.Integer, nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'runtime_run_inputs',
        sa.Column('id', sa.String, primary_key=True),
        sa.Column('run_id', sa.String, nullable=False),
        sa.Column('value', sa.Text, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
