"""telemetry: stored bytes per span and content row, an hourly size rollup, content forwarding

Retention by size counts bytes (spans plus stored message content); the hourly rollup
lets it find the cut-off without scanning every span. Existing rows are measured here.

Revision ID: telemetry_0002
Revises: telemetry_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "telemetry_0002"
down_revision = "telemetry_0001"
branch_labels = None
depends_on = None

HOUR_NS = 3600 * 10**9
# Text columns whose bytes count; every other column counts 8 bytes (as garrison/telemetry/store.py does).
SPAN_TEXT = ("tenant_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "scope",
             "status_message", "error_class", "operation", "model", "provider", "tool_name", "tool_call_id",
             "session_id", "user_id", "agent_name", "flags", "attributes", "resource", "events")
SPAN_FIXED = 8 * 14
CONTENT_TEXT = ("tenant_id", "trace_id", "span_id", "source", "body")
CONTENT_FIXED = 8 * 3


def _bytes(dialect: str, columns: tuple[str, ...], fixed: int) -> str:
    if dialect == "postgresql":
        parts = [f"coalesce(octet_length({c}), 0)" for c in columns]
    else:
        parts = [f"coalesce(length(CAST({c} AS BLOB)), 0)" for c in columns]
    return " + ".join(parts) + f" + {fixed}"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("telemetry_spans", sa.Column("stored_bytes", sa.Integer, nullable=False, server_default="0"))
    op.add_column("telemetry_content", sa.Column("stored_bytes", sa.Integer, nullable=False, server_default="0"))
    op.add_column("telemetry_exporters",
                  sa.Column("include_content", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "telemetry_store_bytes",
        sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("span_bytes", sa.BigInteger, nullable=False),
        sa.Column("content_bytes", sa.BigInteger, nullable=False),
        sa.Column("spans", sa.BigInteger, nullable=False),
        sa.Column("contents", sa.BigInteger, nullable=False),
    )
    op.execute(f"UPDATE telemetry_spans SET stored_bytes = {_bytes(dialect, SPAN_TEXT, SPAN_FIXED)}")
    op.execute(f"UPDATE telemetry_content SET stored_bytes = {_bytes(dialect, CONTENT_TEXT, CONTENT_FIXED)}")
    op.execute(
        "INSERT INTO telemetry_store_bytes (hour, span_bytes, content_bytes, spans, contents) "
        "SELECT hour, sum(sb), sum(cb), sum(sn), sum(cn) FROM ("
        f" SELECT start_ns / {HOUR_NS} AS hour, stored_bytes AS sb, 0 AS cb, 1 AS sn, 0 AS cn FROM telemetry_spans"
        " UNION ALL"
        f" SELECT time_ns / {HOUR_NS} AS hour, 0, stored_bytes, 0, 1 FROM telemetry_content"
        ") AS sized GROUP BY hour"
    )


def downgrade() -> None:
    op.drop_table("telemetry_store_bytes")
    for table, column in (("telemetry_exporters", "include_content"), ("telemetry_content", "stored_bytes"),
                          ("telemetry_spans", "stored_bytes")):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
