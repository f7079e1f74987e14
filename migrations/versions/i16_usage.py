"""runs: usage measured by the sandbox (CPU time, output and log bytes)

Revision ID: i16_usage
Revises: 0002
Create Date: 2026-12-03 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i16_usage"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu_seconds", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("output_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("log_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("log_bytes")
        batch_op.drop_column("output_bytes")
        batch_op.drop_column("cpu_seconds")
