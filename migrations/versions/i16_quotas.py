"""quotas: a lock row per owner, and indexes to count an owner's runs

Revision ID: i16_quotas
Revises: i14_workflows
Create Date: 2026-12-03 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i16_quotas"
down_revision: str | None = "i14_workflows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_owners",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_quota_owners")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_submitter_state", ["submitter", "state"], unique=False)
        batch_op.create_index("ix_runs_submitter_created", ["submitter", "created_at"], unique=False)
        batch_op.create_index("ix_runs_submitter_finished", ["submitter", "finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_submitter_finished")
        batch_op.drop_index("ix_runs_submitter_created")
        batch_op.drop_index("ix_runs_submitter_state")
    op.drop_table("quota_owners")
