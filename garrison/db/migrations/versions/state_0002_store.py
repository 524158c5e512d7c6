"""state: long-term memory store items and their embeddings

Revision ID: state_0002
Revises: state_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "state_0002"
down_revision = "state_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_store_items",
        sa.Column("tenant_id", sa.String, primary_key=True),
        sa.Column("prefix", sa.String, primary_key=True),
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("ttl_minutes", sa.Float, nullable=True),
    )
    op.create_index("ix_state_store_items_expiry", "state_store_items", ["tenant_id", "expires_at"])
    op.create_table(
        "state_store_vectors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String, nullable=False),
        sa.Column("prefix", sa.String, nullable=False),
        sa.Column("key", sa.String, nullable=False),
        sa.Column("field", sa.String, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_state_store_vectors_item", "state_store_vectors", ["tenant_id", "prefix", "key"])


def downgrade() -> None:
    op.drop_table("state_store_vectors")
    op.drop_table("state_store_items")
