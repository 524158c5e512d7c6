"""registry: namespaces, server versions, tool lists, health history

Revision ID: registry_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "registry_0001"
down_revision = None
branch_labels = ("registry",)
depends_on = "foundation_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registry_namespaces",
        sa.Column("namespace", sa.String(200), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "registry_versions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("server_json", sa.Text, nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("status_changed_at", TS, nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("is_latest", sa.Boolean, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_registry_versions_name_version"),
    )
    op.create_index("ix_registry_versions_updated_at", "registry_versions", ["updated_at"])
    op.create_index("ix_registry_versions_latest_name", "registry_versions", ["is_latest", "name"])
    op.create_table(
        "registry_tool_lists",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(255), primary_key=True),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_table(
        "registry_health",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("checked_at", TS, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("tool_count", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_registry_health_name_checked", "registry_health", ["name", "version", "checked_at"])


def downgrade() -> None:
    op.drop_table("registry_health")
    op.drop_table("registry_tool_lists")
    op.drop_index("ix_registry_versions_latest_name", "registry_versions")
    op.drop_index("ix_registry_versions_updated_at", "registry_versions")
    op.drop_table("registry_versions")
    op.drop_table("registry_namespaces")
