"""The audit trail: listing its records, and verifying every chain and digest.

Verification reads the runs in id order, a page at a time, each page from one consistent
snapshot with its events, its chained audit records and its approval decisions, and checks
them with ``server.domain.chain.check_run``; then the ``audit`` chain; then looks for records
of runs that are gone. It stops at the first problem and names the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.domain.chain import (
    Problem,
    check_chain,
    check_run,
    heads_digest,
    run_chain,
)
from server.domain.clock import Clock, utcnow
from server.domain.errors import InvalidArgument
from server.domain.models import AuditEntry, Page
from server.domain.principal import Principal
from server.services.runs import RUN_ID_RE
from server.services.validation import Paging, check
from server.store import Store

VERIFY_PAGE = 200  # runs per snapshot


@dataclass(frozen=True, slots=True)
class ListAuditRequest:
    """One page of audit records, oldest first; empty filters match everything."""

    page_size: int = 0
    page_token: str = ""
    target: str = ""  # a run id, key id or agent
    actor: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify`` found: ``problem`` is None when everything matched.

    ``digest``: SHA-256 over the canonical JSON of every chain's head ([chain, position,
    hash], runs in id order, then ``audit``), the value published on NATS; two verifications
    with the same digest saw the same chains.
    """

    problem: Problem | None
    runs: int
    records: int
    digest: str
    at: datetime


class AuditService:
    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock

    async def list(self, who: Principal, req: ListAuditRequest) -> Page[AuditEntry]:
        paging = Paging.of(req.page_size, req.page_token, {
            "list": "audit", "target": req.target, "actor": req.actor,
            "since": req.since.isoformat() if req.since else "",
            "until": req.until.isoformat() if req.until else ""})
        check("target", req.target, max_len=200)
        check("actor", req.actor, max_len=200)
        if req.since and req.until and req.until <= req.since:
            raise InvalidArgument("until", "must be after since")
        async with self.store.read() as tx:
            rows = await tx.audit.find(since=req.since, until=req.until, target=req.target,
                                       actor=req.actor, after_id=int(paging.after or 0),
                                       limit=paging.fetch)
        return paging.page(rows, key=lambda e: str(e.id))

    async def verify(self, who: Principal, run_id: str = "") -> Verification:
        """Recompute every chain and digest (or only ``run_id``'s); the first problem."""
        check("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        heads: list[list[object]] = []
        runs = records = 0
        after = ""
        while True:
            async with self.store.snapshot() as tx:
                page = await tx.runs.page_for_audit(after, VERIFY_PAGE, only=run_id)
                ids = [r.run.id for r in page]
                events = await tx.events.of_runs(ids)
                audit = await tx.audit.of_chains([run_chain(i) for i in ids])
                decisions = await tx.approvals.decisions_of(ids)
            for r in page:
                run = r.run
                problem = check_run(run, output_json=r.output_json, logs=r.logs,
                                    events=events[run.id], audit=audit[run_chain(run.id)],
                                    decisions=decisions[run.id])
                runs += 1
                records += len(events[run.id]) + len(audit[run_chain(run.id)])
                if problem:
                    return Verification(problem, runs, records, "", self.clock())
                heads.append([run_chain(run.id), run.chain_seq, run.chain_head])
            if len(page) < VERIFY_PAGE or run_id:
                break
            after = ids[-1]
        if run_id:
            if not runs:
                raise InvalidArgument("run_id", f"no run {run_id!r}")
            return Verification(None, runs, records, heads_digest(heads),
                                self.clock())
        async with self.store.snapshot() as tx:
            others = await tx.audit.other_chains()
            orphans = await tx.audit.orphan_run_chains()
        problem = None
        for i in range(0, len(others), VERIFY_PAGE):
            chunk = others[i:i + VERIFY_PAGE]
            async with self.store.snapshot() as tx:
                entries = await tx.audit.of_chains([name for name, _, _ in chunk])
            for name, seq, head in chunk:
                records += len(entries[name])
                problem = check_chain(name, entries[name], head_seq=seq, head_hash=head,
                                      head_name=f"chain_heads {name!r}")
                if problem:
                    break
                heads.append([name, seq, head])
            if problem:
                break
        if problem is None and orphans:
            o = orphans[0]
            problem = Problem(f"audit_log #{o.id} ({o.action} on {o.target})", o.target,
                              f"its run {o.target} is gone (the run and its events were deleted)")
        digest = "" if problem else heads_digest(heads)
        return Verification(problem, runs, records, digest, self.clock())
