"""Usage: what each owner's runs take now and today, counted for quotas and reports.

``lock_owner`` serialises one owner's submits: on PostgreSQL an upsert of the owner's row in
``quota_owners`` holds that row until the transaction ends, so a second submit of the same
owner waits there and then counts (READ COMMITTED: each statement sees what committed before
it) the run the first one inserted. On SQLite every write transaction already holds the one
writer lock (``BEGIN IMMEDIATE``), so the counts are exact without a row lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from server.domain.quotas import OwnerUsage
from server.domain.states import RunState
from server.store import tables as t
from server.store.base import Repository

_R = t.runs
IN_FLIGHT = (RunState.PENDING_APPROVAL.value, RunState.QUEUED.value, RunState.RUNNING.value)


class UsageRepository(Repository):
    """Per-owner counts over ``runs``, and the per-owner lock rows."""

    __slots__ = ()

    async def lock_owner(self, owner: str) -> None:
        """Hold ``owner``'s quota lock until the transaction ends (see the module docstring)."""
        q = t.quota_owners
        insert = postgresql.insert if self._unit.pg else sqlite.insert
        stmt = insert(q).values(owner=owner)
        # The same upsert on SQLite, where the writer lock already serialises: the table lists
        # the owners that submitted under a quota on both dialects.
        await self._conn.execute(stmt.on_conflict_do_update(index_elements=[q.c.owner],
                                                           set_={"owner": stmt.excluded.owner}))

    async def owner_usage(self, owner: str, *, since: datetime) -> OwnerUsage:
        """``owner``'s runs not yet ended, runs submitted since ``since`` and CPU-seconds of
        runs ended since ``since`` (one round trip; each count uses its own index)."""
        mine = _R.c.submitter == owner
        in_flight = select(func.count()).where(mine, _R.c.state.in_(IN_FLIGHT)).scalar_subquery()
        today = select(func.count()).where(mine, _R.c.created_at >= since).scalar_subquery()
        cpu = (select(func.coalesce(func.sum(_R.c.cpu_seconds), 0.0))
               .where(mine, _R.c.finished_at >= since).scalar_subquery())
        row = (await self._conn.execute(select(in_flight, today, cpu))).one()
        return OwnerUsage(owner, int(row[0]), int(row[1]), float(row[2]))

    async def all_owners(self, *, since: datetime) -> list[OwnerUsage]:
        """Every owner with a run in flight, submitted or ended since ``since``, by name."""
        in_flight = func.count().filter(_R.c.state.in_(IN_FLIGHT))
        today = func.count().filter(_R.c.created_at >= since)
        cpu = func.coalesce(func.sum(_R.c.cpu_seconds).filter(_R.c.finished_at >= since), 0.0)
        recent = (_R.c.state.in_(IN_FLIGHT) | (_R.c.created_at >= since)
                  | (_R.c.finished_at >= since))
        rows = await self._conn.execute(
            select(_R.c.submitter, in_flight, today, cpu).where(recent)
            .group_by(_R.c.submitter).order_by(_R.c.submitter))
        return [OwnerUsage(r[0], int(r[1]), int(r[2]), float(r[3])) for r in rows]

