"""agent_capabilities: each version's capability names and descriptions, for ListAgents search

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_capabilities",
        sa.Column("version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["agent_versions.id"],
            name=op.f("fk_agent_capabilities_version_id_agent_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", "name", name=op.f("pk_agent_capabilities")),
    )
    with op.batch_alter_table("agent_capabilities", schema=None) as batch_op:
        batch_op.create_index("ix_agent_capabilities_name", ["name"], unique=False)

    # Fill it from the manifests already registered (stored as JSON text on SQLite, JSON on
    # PostgreSQL: both come back decoded through sa.JSON).
    versions = sa.table("agent_versions", sa.column("id", sa.BigInteger()),
                        sa.column("manifest", sa.JSON()))
    caps = sa.table("agent_capabilities", sa.column("version_id", sa.BigInteger()),
                    sa.column("name", sa.String()), sa.column("description", sa.Text()))
    conn = op.get_bind()
    rows: list[dict[str, Any]] = []
    for vid, manifest in conn.execute(sa.select(versions.c.id, versions.c.manifest)):
        seen: set[str] = set()
        for cap in (manifest or {}).get("capabilities") or []:
            name = cap.get("name") if isinstance(cap, dict) else None
            if isinstance(name, str) and name not in seen:
                seen.add(name)
                rows.append({"version_id": vid, "name": name,
                             "description": str(cap.get("description") or "")})
    if rows:
        conn.execute(sa.insert(caps), rows)


def downgrade() -> None:
    with op.batch_alter_table("agent_capabilities", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_capabilities_name")
    op.drop_table("agent_capabilities")
