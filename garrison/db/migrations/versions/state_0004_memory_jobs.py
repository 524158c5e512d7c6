"""state: memory strategy jobs survive restarts

Revision ID: state_0004
Revises: state_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "state_0004"
down_revision = "state_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_memory_jobs",
        sa.Column("job_id", sa.String, primary_key=True),
        sa.Column("tenant_id", sa.String, nullable=False),
        sa.Column("strategy", sa.String, nullable=False),
        sa.Column("actor_id", sa.String, nullable=False),
        sa.Column("session_id", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("records", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_state_memory_jobs_due", "state_memory_jobs", ["status", "next_attempt_at"])
    op.create_index("ix_state_memory_jobs_tenant", "state_memory_jobs", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_state_memory_jobs_tenant", "state_memory_jobs")
    op.drop_index("ix_state_memory_jobs_due", "state_memory_jobs")
    op.drop_table("state_memory_jobs")
