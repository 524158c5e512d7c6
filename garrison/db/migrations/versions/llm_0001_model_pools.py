"""llm: model pools and replicas

Revision ID: llm_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "llm_0001"
down_revision = None
branch_labels = ("llm",)
depends_on = "foundation_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "llm_models",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("fallbacks", sa.JSON, nullable=False),
        sa.Column("context_window", sa.Integer, nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.Integer, nullable=True),
        sa.Column("tenant_rpm", sa.Integer, nullable=True),
        sa.Column("tenant_tpm", sa.Integer, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "llm_replicas",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "model",
            sa.String(200),
            sa.ForeignKey("llm_models.name", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("base_url", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("upstream_model", sa.String(200), nullable=True),
        sa.Column("api_key", sa.String(1000), nullable=True),
        sa.Column("max_concurrency", sa.Integer, nullable=False),
        sa.Column("priority_scheduling", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("llm_replicas")
    op.drop_table("llm_models")
