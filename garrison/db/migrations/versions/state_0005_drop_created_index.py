"""state: no index on checkpoint creation time

Every put paid for a b-tree insert into ``ix_state_checkpoints_created`` (11 us of a
~90 us SQLite put, one more WAL page), for the benefit of retention's "older than"
pass only, which runs in the background and reads the tenant's checkpoints anyway.

Revision ID: state_0005
Revises: state_0004
"""

from alembic import op

revision = "state_0005"
down_revision = "state_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_state_checkpoints_created", "state_checkpoints")


def downgrade() -> None:
    op.create_index("ix_state_checkpoints_created", "state_checkpoints", ["tenant_id", "created_at"])
