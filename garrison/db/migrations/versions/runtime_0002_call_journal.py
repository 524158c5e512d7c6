"""runtime: journal of model calls made by durable run steps

Revision ID: runtime_0002
Revises: runtime_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "runtime_0002"
down_revision = "runtime_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_call_journal",
        sa.Column("run_id", sa.String, primary_key=True),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("request_hash", sa.String, primary_key=True),
        sa.Column("occurrence", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String, nullable=False),
        sa.Column("principal_id", sa.String, nullable=False),
        sa.Column("media_type", sa.String, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runtime_call_journal")
