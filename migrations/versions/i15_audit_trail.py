"""audit trail: digests of runs, action digests on decisions, hash chains over events and audit

Revision ID: i15_audit_trail
Revises: i16_analytics
Create Date: 2026-12-03 20:00:00.000000

Rows written before this revision are digested and chained here, in the order they were
written (ids), exactly as the store now does for new rows, so `airlock audit verify` covers
them too (it cannot prove they were not changed before today).
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from alembic import op

from agents.limits import Limits
from server.domain.chain import AUDIT_CHAIN, audit_content, event_content, run_chain
from server.domain.digests import (
    action_digest,
    chain_hash,
    input_digest,
    logs_digest,
    output_digest,
)
from server.domain.models import AuditEntry, RunEvent
from server.domain.states import RunState
from server.store.tables import UTCDateTime

revision: str = "i15_audit_trail"
down_revision: str | None = "i16_analytics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

H = 64
# (table, column, type, value for existing rows)
_NEW = [
    ("runs", "input_sha256", sa.String(H), ""),
    ("runs", "action_digest", sa.String(H), ""),
    ("runs", "output_sha256", sa.String(H), ""),
    ("runs", "logs_sha256", sa.String(H), ""),
    ("runs", "chain_seq", sa.Integer(), 0),
    ("runs", "chain_head", sa.String(H), ""),
    ("run_events", "attest", sa.JSON(), {}),
    ("run_events", "chain_seq", sa.Integer(), 0),
    ("run_events", "prev_hash", sa.String(H), ""),
    ("run_events", "hash", sa.String(H), ""),
    ("approval_decisions", "action_digest", sa.String(H), ""),
    ("audit_log", "chain", sa.String(60), AUDIT_CHAIN),
    ("audit_log", "chain_seq", sa.Integer(), 0),
    ("audit_log", "prev_hash", sa.String(H), ""),
    ("audit_log", "hash", sa.String(H), ""),
]


# The runs' digests and head have server defaults (rows seeded behind the store stay valid).
_SERVER_DEFAULT: dict[tuple[str, str], Any] = {
    ("runs", c): "0" if c == "chain_seq" else sa.text("''") for t, c, _, _ in _NEW if t == "runs"}


def upgrade() -> None:
    # Added nullable, filled, then made NOT NULL.
    for table, col, type_, _ in _NEW:
        with op.batch_alter_table(table, schema=None) as b:
            b.add_column(sa.Column(col, type_, nullable=True,
                                   server_default=_SERVER_DEFAULT.get((table, col))))
    op.create_table(
        "chain_heads",
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_chain_heads")),
    )
    _backfill(op.get_bind())
    for table, col, type_, _ in _NEW:
        with op.batch_alter_table(table, schema=None) as b:
            b.alter_column(col, existing_type=type_, nullable=False,
                           existing_server_default=_SERVER_DEFAULT.get((table, col)))
    with op.batch_alter_table("audit_log", schema=None) as b:
        b.create_index("ix_audit_log_chain", ["chain", "chain_seq"], unique=False)
        b.create_index("ix_audit_log_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as b:
        b.drop_index("ix_audit_log_at")
        b.drop_index("ix_audit_log_chain")
    op.drop_table("chain_heads")
    for table, col, _, _ in reversed(_NEW):
        with op.batch_alter_table(table, schema=None) as b:
            b.drop_column(col)


def _t(name: str, *cols: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table(name, *cols)


def _backfill(conn: sa.Connection) -> None:
    c = sa.column
    runs = _t("runs", c("id", sa.String()), c("agent_name", sa.String()), c("version", sa.String()),
              c("capability", sa.String()), c("input_json", sa.Text()), c("network", sa.Boolean()),
              c("secrets", sa.JSON()), c("limits", sa.JSON()), c("image", sa.String()),
              c("entrypoint", sa.JSON()), c("output_json", sa.Text()),
              c("logs", sa.LargeBinary()), c("error_code", sa.String()),
              *(c(n, t) for tb, n, t, _ in _NEW if tb == "runs"))
    events = _t("run_events", c("id", sa.Integer()), c("run_id", sa.String()),
                c("seq", sa.Integer()), c("state", sa.String()), c("previous_state", sa.String()),
                c("reason", sa.Text()), c("attempt", sa.Integer()), c("actor", sa.String()),
                c("agent_name", sa.String()), c("version", sa.String()),
                c("capability", sa.String()), c("traceparent", sa.String()),
                c("created_at", UTCDateTime()),
                *(c(n, t) for tb, n, t, _ in _NEW if tb == "run_events"))
    audit = _t("audit_log", c("id", sa.Integer()), c("at", UTCDateTime()), c("actor", sa.String()),
               c("action", sa.String()), c("target", sa.String()), c("details", sa.JSON()),
               *(c(n, t) for tb, n, t, _ in _NEW if tb == "audit_log"))
    decisions = _t("approval_decisions", c("id", sa.Integer()), c("run_id", sa.String()),
                   c("action_digest", sa.String()))
    heads = _t("chain_heads", c("name", sa.String()), c("seq", sa.Integer()),
               c("hash", sa.String()))

    run_rows = {r.id: r for r in conn.execute(sa.select(runs))}
    all_events: dict[str, list[Any]] = {}
    for e in conn.execute(sa.select(events).order_by(events.c.id)):
        all_events.setdefault(e.run_id, []).append(e)
    all_audit = list(conn.execute(sa.select(audit).order_by(audit.c.id)))
    by_run: dict[str, list[Any]] = {}
    others = []
    for a in all_audit:
        (by_run.setdefault(a.target, []) if a.target in run_rows else others).append(a)

    def audit_entry(a: Any, chain: str, seq: int, prev: str, details: dict[str, Any]) -> AuditEntry:
        e = AuditEntry(id=a.id, at=a.at, actor=a.actor, action=a.action, target=a.target,
                       details=details, chain=chain, chain_seq=seq, prev_hash=prev)
        return replace(e, hash=chain_hash(prev, audit_content(e)))

    def save_audit(e: AuditEntry) -> None:
        conn.execute(sa.update(audit).where(audit.c.id == e.id).values(
            details=e.details, chain=e.chain, chain_seq=e.chain_seq, prev_hash=e.prev_hash,
            hash=e.hash))

    for run_id, r in run_rows.items():
        try:
            inp = input_digest(r.input_json)
            act = action_digest(agent=r.agent_name, version=r.version, image=r.image,
                                capability=r.capability, input_json=r.input_json,
                                limits=Limits(**r.limits), network=r.network,
                                secrets=r.secrets or [], entrypoint=r.entrypoint)
        except ValueError:  # not JSON: left for the verifier to report
            inp = act = ""
        try:
            out = output_digest(r.output_json)
        except ValueError:
            out = ""
        has_result = r.output_json is not None or r.logs is not None or bool(r.error_code)
        logs = logs_digest(r.logs) if has_result else ""
        evs = all_events.get(run_id, [])
        last_seq = max((e.seq for e in evs), default=0)
        # Write order: events and records by time, events first at the same instant.
        items = sorted([(e.created_at, 0, e.id, e) for e in evs]
                       + [(a.at, 1, a.id, a) for a in by_run.get(run_id, [])],
                       key=lambda x: (x[0], x[1], x[2]))
        chain, prev = run_chain(run_id), ""
        for seq, (_, kind, _, row) in enumerate(items, start=1):
            if kind == 0:
                attest: dict[str, str] = {}
                if row.seq == 1:
                    attest = {"input_sha256": inp, "action_digest": act}
                elif row.seq == last_seq and has_result:
                    attest = {"output_sha256": out, "logs_sha256": logs}
                ev = RunEvent(id=row.id, run_id=run_id, seq=row.seq, state=RunState(row.state),
                              previous_state=RunState(row.previous_state) if row.previous_state
                              else None, reason=row.reason, attempt=row.attempt, actor=row.actor,
                              agent=row.agent_name, version=row.version,
                              capability=row.capability, traceparent=row.traceparent,
                              created_at=row.created_at, attest=attest, chain_seq=seq,
                              prev_hash=prev)
                h = chain_hash(prev, event_content(ev))
                conn.execute(sa.update(events).where(events.c.id == row.id).values(
                    attest=attest, chain_seq=seq, prev_hash=prev, hash=h))
                prev = h
            else:
                details = dict(row.details or {})
                if row.action in ("approval.approve", "approval.reject"):
                    details["action_digest"] = act
                e = audit_entry(row, chain, seq, prev, details)
                save_audit(e)
                prev = e.hash
        conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
            input_sha256=inp, action_digest=act, output_sha256=out, logs_sha256=logs,
            chain_seq=len(items), chain_head=prev))
        conn.execute(sa.update(decisions).where(decisions.c.run_id == run_id)
                     .values(action_digest=act))
    prev = ""
    for seq, a in enumerate(others, start=1):
        e = audit_entry(a, AUDIT_CHAIN, seq, prev, dict(a.details or {}))
        save_audit(e)
        prev = e.hash
    conn.execute(sa.insert(heads).values(name=AUDIT_CHAIN, seq=len(others), hash=prev))
