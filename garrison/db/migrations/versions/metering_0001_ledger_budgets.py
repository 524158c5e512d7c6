"""metering: usage ledger, daily rollups, prices, budgets

Revision ID: metering_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "metering_0001"
down_revision = None
branch_labels = ("metering",)
depends_on = "foundation_0001"

TS = sa.DateTime(timezone=True)
COST = sa.Numeric(20, 10)


def upgrade() -> None:
    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("replica", sa.String(40), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("cost_usd", COST, nullable=True),
        sa.Column("price_version", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("span_id", sa.String(16), nullable=True),
        sa.UniqueConstraint("trace_id", "span_id", name="uq_usage_ledger_trace_span"),
    )
    op.create_index("ix_usage_ledger_tenant_ts", "usage_ledger", ["tenant_id", "ts"])
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", COST, nullable=False),
        sa.Column("unpriced_requests", sa.Integer, nullable=False),
        sa.UniqueConstraint("day", "tenant_id", "key_id", "agent", "model", name="uq_usage_daily_row"),
    )
    op.create_table(
        "model_prices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False, index=True),
        sa.Column("input_per_mtok", COST, nullable=False),
        sa.Column("output_per_mtok", COST, nullable=False),
        sa.Column("cached_input_per_mtok", COST, nullable=True),
        sa.Column("gpu_second_usd", COST, nullable=True),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False, index=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_id", sa.String(200), nullable=False),
        sa.Column("window", sa.String(8), nullable=False),
        sa.Column("limit_usd", COST, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("budgets")
    op.drop_table("model_prices")
    op.drop_table("usage_daily")
    op.drop_index("ix_usage_ledger_tenant_ts", "usage_ledger")
    op.drop_table("usage_ledger")
