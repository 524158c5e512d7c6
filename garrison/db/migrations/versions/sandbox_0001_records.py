"""sandbox: sandbox records (history that survives a restart)

Revision ID: sandbox_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "sandbox_0001"
down_revision = None
branch_labels = ("sandbox",)
depends_on = "foundation_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("principal_id", sa.String(64), nullable=True),
        sa.Column("template", sa.String(40), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("isolation", sa.String(16), nullable=False),
        sa.Column("limits", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("pooled", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("killed_reason", sa.String(32), nullable=True),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("cpu_seconds", sa.Float, nullable=True),
        sa.Column("memory_peak_mib", sa.Float, nullable=True),
        sa.Column("memory_gib_seconds", sa.Float, nullable=True),
    )
    op.create_index("ix_sandboxes_tenant_created", "sandboxes", ["tenant_id", "created_at"])
    op.create_index("ix_sandboxes_status", "sandboxes", ["status"])


def downgrade() -> None:
    op.drop_table("sandboxes")
