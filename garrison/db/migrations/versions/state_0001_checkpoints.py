"""state: LangGraph checkpoints, channel blobs once per version, pending writes

Revision ID: state_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "state_0001"
down_revision = None
branch_labels = ("state",)
depends_on = "foundation_0001"


def upgrade() -> None:
    op.create_table(
        "state_checkpoints",
        sa.Column("tenant_id", sa.String, primary_key=True),
        sa.Column("thread_id", sa.String, primary_key=True),
        sa.Column("checkpoint_ns", sa.String, primary_key=True),
        sa.Column("checkpoint_id", sa.String, primary_key=True),
        sa.Column("parent_checkpoint_id", sa.String, nullable=True),
        sa.Column("run_id", sa.String, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("checkpoint", sa.LargeBinary, nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("channel_versions", sa.Text, nullable=False),
    )
    op.create_index("ix_state_checkpoints_run", "state_checkpoints", ["tenant_id", "run_id"])
    op.create_table(
        "state_blobs",
        sa.Column("tenant_id", sa.String, primary_key=True),
        sa.Column("thread_id", sa.String, primary_key=True),
        sa.Column("checkpoint_ns", sa.String, primary_key=True),
        sa.Column("channel", sa.String, primary_key=True),
        sa.Column("version", sa.String, primary_key=True),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=True),
    )
    op.create_table(
        "state_writes",
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


def downgrade() -> None:
    op.drop_table("state_writes")
    op.drop_table("state_blobs")
    op.drop_table("state_checkpoints")
