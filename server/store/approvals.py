"""Approvals of runs that wait for people, and the decisions on them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from server.domain.models import Approval, Decision
from server.store import tables as t
from server.store.base import Repository
from server.store.notify import APPROVALS

_A = t.approvals
_D = t.approval_decisions


class ApprovalRepository(Repository):
    """``approvals`` and ``approval_decisions``; every change bumps the approval's version
    and wakes approval watchers."""

    __slots__ = ()

    async def open(self, run_id: str, *, required: int, now: datetime,
                   expires_at: datetime) -> None:
        """A pending approval of ``run_id`` needing ``required`` distinct approvers."""
        await self._conn.execute(insert(_A).values(
            run_id=run_id, status="pending", required=required, created_at=now,
            expires_at=expires_at, version=0, updated_at=now))
        self._unit.notify.add(APPROVALS)

    async def get(self, run_id: str, *, lock: bool = False) -> Approval | None:
        """The approval with its decisions, or None. ``lock``: hold it (PostgreSQL)."""
        q = select(_A).where(_A.c.run_id == run_id)
        if lock and self._unit.pg:
            q = q.with_for_update()
        row = (await self._conn.execute(q)).first()
        if row is None:
            return None
        return (await self._with_decisions([row]))[0]

    async def add_decision(self, run_id: str, *, approver: str, key_id: str, verdict: str,
                           reason: str, now: datetime, action_digest: str) -> bool:
        """False if this approver already decided (the unique constraint says so)."""
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(insert(_D).values(
                    run_id=run_id, approver=approver, approver_key_id=key_id, verdict=verdict,
                    reason=reason, decided_at=now, action_digest=action_digest))
        except IntegrityError:
            return False
        await self._touch(run_id, now)
        return True

    async def close(self, run_id: str, status: str, now: datetime) -> None:
        """Close it as ``status`` (approved, rejected, expired or cancelled)."""
        await self._touch(run_id, now, closed_as=status)

    async def find(
        self, *, statuses: Sequence[str], after_run_id: str = "", limit: int,
        not_submitted_by: str = "", not_decided_by: str = "",
    ) -> list[Approval]:
        """By run id; ``not_submitted_by``/``not_decided_by`` keep what that owner may decide."""
        q = (select(_A).join(t.runs, t.runs.c.id == _A.c.run_id)
             .where(_A.c.status.in_(list(statuses)))
             .order_by(_A.c.run_id).limit(limit))
        if after_run_id:
            q = q.where(_A.c.run_id > after_run_id)
        if not_submitted_by:
            q = q.where(t.runs.c.submitter != not_submitted_by)
        if not_decided_by:
            decided = select(_D.c.run_id).where(_D.c.approver == not_decided_by)
            q = q.where(_A.c.run_id.not_in(decided))
        return await self._with_decisions(list(await self._conn.execute(q)))

    async def updated_since(self, since: datetime) -> list[Approval]:
        rows = await self._conn.execute(
            select(_A).where(_A.c.updated_at >= since).order_by(_A.c.updated_at))
        return await self._with_decisions(list(rows))

    async def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Run ids of pending approvals past their deadline, locked (skipping held rows)."""
        q = (select(_A.c.run_id)
             .where(_A.c.status == "pending", _A.c.expires_at <= now)
             .order_by(_A.c.expires_at).limit(limit))
        if self._unit.pg:
            q = q.with_for_update(skip_locked=True)
        return [r.run_id for r in await self._conn.execute(q)]

    async def count(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(_A))).scalar_one())

    async def _touch(self, run_id: str, now: datetime, *, closed_as: str = "") -> None:
        q = update(_A).where(_A.c.run_id == run_id).values(version=_A.c.version + 1,
                                                          updated_at=now)
        if closed_as:
            q = q.values(status=closed_as, closed_at=now)
        await self._conn.execute(q)
        self._unit.notify.add(APPROVALS)

    async def decisions_of(self, run_ids: Sequence[str]) -> dict[str, list[Decision]]:
        """Every decision on these runs, by run, oldest first."""
        decisions: dict[str, list[Decision]] = {r: [] for r in run_ids}
        if not run_ids:
            return decisions
        drows = await self._conn.execute(
            select(_D).where(_D.c.run_id.in_(list(run_ids))).order_by(_D.c.id))
        for d in drows:
            decisions.setdefault(d.run_id, []).append(Decision(
                approver=d.approver, verdict=d.verdict, reason=d.reason, decided_at=d.decided_at,
                action_digest=d.action_digest, id=d.id))
        return decisions

    async def _with_decisions(self, rows: Sequence[Row[Any]]) -> list[Approval]:
        if not rows:
            return []
        decisions = await self.decisions_of([r.run_id for r in rows])
        return [Approval(run_id=r.run_id, status=r.status, required=r.required,
                         created_at=r.created_at, expires_at=r.expires_at, closed_at=r.closed_at,
                         version=r.version, updated_at=r.updated_at,
                         decisions=tuple(decisions.get(r.run_id, ()))) for r in rows]
