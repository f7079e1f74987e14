"""The audit log: who did what to which target, append-only and hash-chained.

A record about a run goes on that run's chain (beside its events), any other on the
``audit`` chain (``server/domain/chain.py`` says why and what it costs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row

from server.domain.chain import audit_content, chain_of_target, run_chain
from server.domain.digests import chain_hash
from server.domain.models import AuditEntry, NewRun, Run
from server.store import tables as t
from server.store.base import Repository

_L = t.audit_log
_H = t.chain_heads
_INSERT = insert(_L)


def _entry(r: Row[Any]) -> AuditEntry:
    return AuditEntry(id=r.id, at=r.at, actor=r.actor, action=r.action, target=r.target,
                      details=r.details, chain=r.chain, chain_seq=r.chain_seq,
                      prev_hash=r.prev_hash, hash=r.hash)


class AuditRepository(Repository):
    """``audit_log`` and the heads of chains that belong to no run (``chain_heads``)."""

    __slots__ = ()

    async def record(self, *, actor: str, action: str, target: str, now: datetime,
                     details: dict[str, Any] | None = None, run: Run | NewRun | None = None
                     ) -> None:
        """Append a record; ``run``: it is about that run (read under its lock in this
        transaction, or about to be inserted by it), so it goes on the run's chain."""
        if run is not None:
            chain = run_chain(run.id)
            stored = (run.chain_seq, run.chain_head) if isinstance(run, Run) else (0, "")
        else:
            chain = chain_of_target(target)
            stored = (await self._head(chain)) if chain not in self._unit.chain_heads else (0, "")
        seq, prev = self._unit.next_link(chain, stored)
        e = AuditEntry(id=0, at=now, actor=actor, action=action, target=target,
                       details=dict(details or {}), chain=chain, chain_seq=seq, prev_hash=prev)
        e = replace(e, hash=chain_hash(prev, audit_content(e)))
        await self._conn.execute(_INSERT, dict(
            at=now, actor=actor, action=action, target=target, details=e.details, chain=chain,
            chain_seq=seq, prev_hash=prev, hash=e.hash))
        self._unit.advance(chain, seq, e.hash)

    async def _head(self, chain: str) -> tuple[int, str]:
        """The stored head of a chain of ``chain_heads``, locked until the transaction ends."""
        q = select(_H.c.seq, _H.c.hash).where(_H.c.name == chain)
        row = (await self._conn.execute(q.with_for_update() if self._unit.pg else q)).first()
        if row is None:  # the migration made it; a bare schema may not have
            await self._conn.execute(insert(_H).values(name=chain, seq=0, hash=""))
            return 0, ""
        return int(row.seq), str(row.hash)

    async def store_head(self, chain: str, seq: int, head: str) -> None:
        await self._conn.execute(update(_H).where(_H.c.name == chain).values(seq=seq, hash=head))

    async def other_chains(self) -> list[tuple[str, int, str]]:
        """(name, position, hash) of every chain that is not a run's, by name: those with a
        head row, and any that has records but no head (the verifier reports it)."""
        heads = {r.name: (int(r.seq), str(r.hash)) for r in await self._conn.execute(
            select(_H.c.name, _H.c.seq, _H.c.hash))}
        for r in await self._conn.execute(select(_L.c.chain).distinct().where(
                ~_L.c.chain.startswith("run:"))):
            heads.setdefault(r.chain, (0, ""))
        return [(name, *heads[name]) for name in sorted(heads)]

    async def stored_head(self, chain: str) -> tuple[int, str]:
        row = (await self._conn.execute(
            select(_H.c.seq, _H.c.hash).where(_H.c.name == chain))).first()
        return (int(row.seq), str(row.hash)) if row else (0, "")

    async def entries(self, target: str | None = None) -> list[AuditEntry]:
        """Oldest first; only those about ``target`` when given."""
        q = select(_L).order_by(_L.c.id)
        if target is not None:
            q = q.where(_L.c.target == target)
        return [_entry(r) for r in await self._conn.execute(q)]

    async def of_chains(self, chains: Sequence[str]) -> dict[str, list[AuditEntry]]:
        """Every record on these chains, by chain, in chain order (verification)."""
        out: dict[str, list[AuditEntry]] = {c: [] for c in chains}
        if chains:
            rows = await self._conn.execute(select(_L).where(_L.c.chain.in_(list(chains)))
                                            .order_by(_L.c.chain, _L.c.chain_seq))
            for r in rows:
                out[r.chain].append(_entry(r))
        return out

    async def find(self, *, since: datetime | None = None, until: datetime | None = None,
                   target: str = "", actor: str = "", action_prefix: str = "",
                   after_id: int = 0, limit: int) -> list[AuditEntry]:
        """Oldest first, after row ``after_id``; ``since`` inclusive, ``until`` exclusive."""
        q = select(_L).where(_L.c.id > after_id).order_by(_L.c.id).limit(limit)
        if since is not None:
            q = q.where(_L.c.at >= since)
        if until is not None:
            q = q.where(_L.c.at < until)
        if target:
            q = q.where(_L.c.target == target)
        if actor:
            q = q.where(_L.c.actor == actor)
        if action_prefix:
            q = q.where(_L.c.action.startswith(action_prefix, autoescape=True))
        return [_entry(r) for r in await self._conn.execute(q)]

    async def orphan_run_chains(self, limit: int = 10) -> list[AuditEntry]:
        """Records on run chains whose run is gone (a deleted run), oldest first."""
        q = (select(_L).where(_L.c.chain.startswith("run:"),
                              ~select(t.runs.c.id).where(
                                  t.runs.c.id == func.substr(_L.c.chain, 5)).exists())
             .order_by(_L.c.id).limit(limit))
        return [_entry(r) for r in await self._conn.execute(q)]

    async def count(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(_L))).scalar_one())
