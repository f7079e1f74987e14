"""The audit log: who did what to which target, append-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from server.domain.models import AuditEntry
from server.store import tables as t
from server.store.base import Repository

_L = t.audit_log
_INSERT = insert(_L)


class AuditRepository(Repository):
    """``audit_log``."""

    __slots__ = ()

    async def record(self, *, actor: str, action: str, target: str, now: datetime,
                     details: dict[str, Any] | None = None) -> None:
        await self._conn.execute(_INSERT, dict(
            at=now, actor=actor, action=action, target=target, details=details or {}))

    async def entries(self, target: str | None = None) -> list[AuditEntry]:
        """Oldest first; only those about ``target`` when given."""
        q = select(_L).order_by(_L.c.id)
        if target is not None:
            q = q.where(_L.c.target == target)
        return [AuditEntry(id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target,
                           details=r.details) for r in await self._conn.execute(q)]

    async def count(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(_L))).scalar_one())
