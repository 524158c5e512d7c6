"""gpus: configuration documents and workloads

Revision ID: gpus_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "gpus_0001"
down_revision = None
branch_labels = ("gpus",)
depends_on = "foundation_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gpu_config",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "gpu_workloads",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("principal_id", sa.String(64), nullable=True),
        sa.Column("queue", sa.String(63), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("placement", sa.Text, nullable=False),
        sa.Column("allocated", sa.Float, nullable=False),
        sa.Column("preemptions", sa.Integer, nullable=False),
        sa.Column("submitted_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("first_started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_gpu_workloads_tenant_state", "gpu_workloads", ["tenant_id", "state"])
    op.create_index("ix_gpu_workloads_tenant_submitted", "gpu_workloads", ["tenant_id", "submitted_at"])


def downgrade() -> None:
    op.drop_table("gpu_workloads")
    op.drop_table("gpu_config")
