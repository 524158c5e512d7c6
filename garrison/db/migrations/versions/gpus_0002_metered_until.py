"""gpus: how far each workload's GPU-seconds were handed to the resource meter

Revision ID: gpus_0002
Revises: gpus_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "gpus_0002"
down_revision = "gpus_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gpu_workloads") as batch:
        batch.add_column(sa.Column("metered_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gpu_workloads") as batch:
        batch.drop_column("metered_until")
