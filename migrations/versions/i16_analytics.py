"""analytics: an index over runs by submission time, covering the aggregated columns

Revision ID: i16_analytics
Revises: i16_quotas
Create Date: 2026-12-03 21:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "i16_analytics"
down_revision: str | None = "i16_quotas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INCLUDE = ["state", "agent_name", "submitter", "cpu_seconds", "duration_seconds",
           "peak_memory_bytes", "started_at"]


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_created_usage", ["created_at"], unique=False,
                              postgresql_include=INCLUDE)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_created_usage")
