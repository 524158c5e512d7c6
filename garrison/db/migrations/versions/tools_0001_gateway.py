"""tools: upstreams with sealed credentials, virtual servers

Revision ID: tools_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "tools_0001"
down_revision = None
branch_labels = ("tools",)
depends_on = "foundation_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tools_upstreams",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False, index=True),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("registry_name", sa.String(200), nullable=True),
        sa.Column("auth_kind", sa.String(32), nullable=False),
        sa.Column("auth_header", sa.String(128), nullable=True),
        sa.Column("auth_secret", sa.Text, nullable=True),
        sa.Column("oauth_token_url", sa.Text, nullable=True),
        sa.Column("oauth_client_id", sa.String(256), nullable=True),
        sa.Column("oauth_scope", sa.String(512), nullable=True),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("idempotent_tools", sa.JSON, nullable=False),
        sa.Column("openapi_doc", sa.Text, nullable=True),
        sa.Column("tool_list", sa.JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_tools_upstreams_tenant_name"),
    )
    op.create_table(
        "tools_virtual_servers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("rate_limit_per_min", sa.Float, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_tools_virtual_servers_tenant_name"),
    )


def downgrade() -> None:
    op.drop_table("tools_virtual_servers")
    op.drop_table("tools_upstreams")
