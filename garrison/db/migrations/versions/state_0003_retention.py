"""state: per-tenant checkpoint retention policies

Revision ID: state_0003
Revises: state_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "state_0003"
down_revision = "state_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_retention",
        sa.Column("tenant_id", sa.String, primary_key=True),
        sa.Column("keep_last", sa.Integer, nullable=True),
        sa.Column("max_age_s", sa.Float, nullable=True),
        sa.Column("idle_thread_s", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_state_checkpoints_created", "state_checkpoints", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_state_checkpoints_created", "state_checkpoints")
    op.drop_table("state_retention")
