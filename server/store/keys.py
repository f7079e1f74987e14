"""API keys: only the hash of each secret is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row

from server.domain.models import ApiKey
from server.domain.principal import Role
from server.store import tables as t
from server.store.base import Repository

_K = t.api_keys


def _key(r: Row[Any]) -> ApiKey:
    return ApiKey(id=r.id, owner=r.owner, role=Role(r.role), created_at=r.created_at,
                  revoked_at=r.revoked_at)


class KeyRepository(Repository):
    """``api_keys``."""

    __slots__ = ()

    async def add(self, *, key_id: str, owner: str, role: Role, secret_hash: str,
                  now: datetime) -> ApiKey:
        await self._conn.execute(insert(_K).values(
            id=key_id, owner=owner, role=role.value, secret_hash=secret_hash, created_at=now))
        return ApiKey(id=key_id, owner=owner, role=role, created_at=now, revoked_at=None)

    async def get_with_hash(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret's stored hash, or None."""
        row = (await self._conn.execute(select(_K).where(_K.c.id == key_id))).first()
        return (_key(row), row.secret_hash) if row else None

    async def all(self) -> list[ApiKey]:
        """Every key, oldest first (revoked ones too)."""
        return [_key(r) for r in await self._conn.execute(select(_K).order_by(_K.c.created_at))]

    async def revoke(self, key_id: str, now: datetime) -> None:
        """Revoke it (a key revoked already keeps its first revocation time)."""
        await self._conn.execute(update(_K).where(_K.c.id == key_id, _K.c.revoked_at.is_(None))
                                 .values(revoked_at=now))

    async def count_active_admins(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(_K).where(
            _K.c.role == Role.ADMIN.value, _K.c.revoked_at.is_(None)))).scalar_one())
