"""metering: the agent version of each usage-ledger entry (runs and sessions of a deployed version)

Revision ID: metering_0003
Revises: metering_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "metering_0003"
down_revision = "metering_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.add_column(sa.Column("agent_version", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("agent_version")
