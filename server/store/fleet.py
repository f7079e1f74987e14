"""The executor fleet: one row per executor process, kept alive by its heartbeat."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Row

from server.domain.models import ExecutorInfo
from server.store import tables as t
from server.store.base import Repository

_X = t.executors


def _executor(r: Row[Any]) -> ExecutorInfo:
    return ExecutorInfo(id=r.id, host=r.host, runtime=r.runtime, slots=r.slots,
                        slots_in_use=r.slots_in_use, started_at=r.started_at,
                        heartbeat_at=r.heartbeat_at, stopped_at=r.stopped_at)


class FleetRepository(Repository):
    """``executors``."""

    __slots__ = ()

    async def register(self, info: ExecutorInfo) -> None:
        """Record an executor starting (replacing an earlier row with its id)."""
        await self._conn.execute(delete(_X).where(_X.c.id == info.id))
        await self._conn.execute(insert(_X).values(
            id=info.id, host=info.host, runtime=info.runtime, slots=info.slots,
            slots_in_use=info.slots_in_use, started_at=info.started_at,
            heartbeat_at=info.heartbeat_at, stopped_at=info.stopped_at))

    async def heartbeat(self, executor_id: str, *, slots_in_use: int, now: datetime) -> None:
        await self._conn.execute(update(_X).where(_X.c.id == executor_id).values(
            slots_in_use=slots_in_use, heartbeat_at=now))

    async def stopped(self, executor_id: str, now: datetime) -> None:
        """The executor stopped on purpose: no slots in use, last heartbeat now."""
        await self._conn.execute(update(_X).where(_X.c.id == executor_id).values(
            slots_in_use=0, heartbeat_at=now, stopped_at=now))

    async def all(self) -> list[ExecutorInfo]:
        rows = await self._conn.execute(select(_X).order_by(_X.c.id))
        return [_executor(r) for r in rows]

    async def drop(self, *, stopped_before: datetime, heartbeat_before: datetime) -> int:
        """Delete executors that stopped before ``stopped_before``, or that never stopped but
        last heartbeat before ``heartbeat_before`` (lost); return how many."""
        e = _X.c
        result = await self._conn.execute(delete(_X).where(or_(
            and_(e.stopped_at.is_not(None), e.stopped_at < stopped_before),
            and_(e.stopped_at.is_(None), e.heartbeat_at < heartbeat_before))))
        return int(result.rowcount or 0)
