"""Run events: each run's numbered history, and the outbox the events relay publishes from.

Events are appended only by the runs repository, in the transaction that changes the run
(``RunRepository.transition`` and ``insert``); this module reads them and marks them
published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import Row

from server.domain.chain import event_content, run_chain
from server.domain.digests import chain_hash
from server.domain.models import Run, RunEvent
from server.domain.states import RunState
from server.store import tables as t
from server.store.base import Repository
from server.store.notify import RUN_EVENTS, RUNS_QUEUED

_E = t.run_events
_INSERT_EVENT = insert(_E)
_SELECT_SINCE = (select(_E).where(_E.c.run_id == bindparam("run_id"),
                                  _E.c.seq >= bindparam("from_seq"))
                 .order_by(_E.c.seq).limit(bindparam("limit")))
# Advisory lock key of the events relay: the bytes "airlock" + 0x01 as a signed 64-bit int.
OUTBOX_LOCK_KEY = int.from_bytes(b"airlock\x01", "big", signed=True)
_TRY_OUTBOX_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")


def _event(r: Row[Any]) -> RunEvent:
    return RunEvent(
        id=r.id, run_id=r.run_id, seq=r.seq, state=RunState(r.state),
        previous_state=RunState(r.previous_state) if r.previous_state else None, reason=r.reason,
        attempt=r.attempt, actor=r.actor, agent=r.agent_name, version=r.version,
        capability=r.capability, traceparent=r.traceparent, created_at=r.created_at,
        published_at=r.published_at, attest=dict(r.attest or {}), chain_seq=r.chain_seq,
        prev_hash=r.prev_hash, hash=r.hash,
    )


class EventRepository(Repository):
    """``run_events``: per-run history (watch) and the outbox (relay)."""

    __slots__ = ()

    def prepare(self, run: Run, *, seq: int, state: RunState, previous: RunState | None,
                reason: str, attempt: int, actor: str, now: datetime,
                attest: dict[str, str] | None = None) -> RunEvent:
        """``run``'s event ``seq``, linked onto the run's hash chain (not yet written)."""
        chain = run_chain(run.id)
        chain_seq, prev = self._unit.next_link(chain, (run.chain_seq, run.chain_head))
        e = RunEvent(id=0, run_id=run.id, seq=seq, state=state, previous_state=previous,
                     reason=reason, attempt=attempt, actor=actor, agent=run.agent,
                     version=run.version, capability=run.capability,
                     traceparent=run.traceparent, created_at=now, attest=dict(attest or {}),
                     chain_seq=chain_seq, prev_hash=prev)
        return replace(e, hash=chain_hash(prev, event_content(e)))

    async def insert(self, e: RunEvent, *, head_stored: bool, workflow_id: str | None = None
                     ) -> None:
        """Write a prepared event; wakes watchers (and executors when it is QUEUED).
        ``head_stored``: the caller wrote the chain head on the run row itself;
        ``workflow_id``: the workflow the run is a step of (its watchers wake too)."""
        await self._conn.execute(_INSERT_EVENT, dict(
            run_id=e.run_id, seq=e.seq, state=e.state.value,
            previous_state=e.previous_state.value if e.previous_state else "", reason=e.reason,
            attempt=e.attempt, actor=e.actor, agent_name=e.agent, version=e.version,
            capability=e.capability, traceparent=e.traceparent, created_at=e.created_at,
            attest=e.attest, chain_seq=e.chain_seq, prev_hash=e.prev_hash, hash=e.hash,
        ))
        self._unit.advance(run_chain(e.run_id), e.chain_seq, e.hash, stored=head_stored)
        self._unit.notify_keys.add((RUN_EVENTS, e.run_id))  # its watchers, and the channel's
        if workflow_id:  # its workflow's watchers (a step's state is its run's)
            self._unit.notify_keys.add((RUN_EVENTS, workflow_id))
        if e.state is RunState.QUEUED:
            self._unit.notify.add(RUNS_QUEUED)

    async def since(self, run_id: str, from_seq: int, limit: int = 500) -> list[RunEvent]:
        """``run_id``'s events from sequence ``from_seq`` on, in order (at most ``limit``)."""
        rows = await self._conn.execute(
            _SELECT_SINCE, {"run_id": run_id, "from_seq": from_seq, "limit": limit})
        return [_event(r) for r in rows]

    # -- outbox ------------------------------------------------------------------------------

    async def try_lock_outbox(self) -> bool:
        """Take the relay's lock until this transaction ends; False if another relay holds it.

        PostgreSQL: a transaction-level advisory lock, so relays on several hosts publish one
        batch at a time, in id order (per-run order survives). SQLite: one relay process is
        supported, so always True.
        """
        if not self._unit.pg:
            return True
        res = await self._conn.execute(_TRY_OUTBOX_LOCK, {"key": OUTBOX_LOCK_KEY})
        return bool(res.scalar_one())

    async def unpublished(self, limit: int) -> list[RunEvent]:
        """The oldest events not yet published, in outbox order (locked on PostgreSQL)."""
        q = (select(_E).where(_E.c.published_at.is_(None)).order_by(_E.c.id).limit(limit))
        if self._unit.pg:
            q = q.with_for_update(skip_locked=True)
        return [_event(r) for r in await self._conn.execute(q)]

    async def mark_published(self, event_ids: Sequence[int], now: datetime) -> None:
        if event_ids:
            await self._conn.execute(
                update(_E).where(_E.c.id.in_(list(event_ids))).values(published_at=now))

    async def of_runs(self, run_ids: Sequence[str]) -> dict[str, list[RunEvent]]:
        """Every event of these runs, by run, in sequence order (verification)."""
        out: dict[str, list[RunEvent]] = {r: [] for r in run_ids}
        if run_ids:
            rows = await self._conn.execute(
                select(_E).where(_E.c.run_id.in_(list(run_ids))).order_by(_E.c.run_id, _E.c.seq))
            for r in rows:
                out[r.run_id].append(_event(r))
        return out

    async def count(self, *, unpublished_only: bool = False) -> int:
        """How many events are stored (or still wait for the relay)."""
        q = select(func.count()).select_from(_E)
        if unpublished_only:
            q = q.where(_E.c.published_at.is_(None))
        return int((await self._conn.execute(q)).scalar_one())
