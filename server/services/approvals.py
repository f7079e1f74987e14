"""Risk-based approvals: quorum of distinct approvers, expiry, no self-approval, audited."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.clock import Clock, utcnow
from server.domain.errors import (
    ActionDigestMismatch,
    AlreadyDecided,
    ApprovalClosed,
    ApprovalNotFound,
    InvalidArgument,
    RunNotFound,
    SelfApprovalRefused,
)
from server.domain.models import Approval, Page, Run
from server.domain.principal import Principal, sees_run
from server.domain.states import RunState
from server.services.runs import RUN_ID_RE
from server.services.validation import Paging, check, page_size, require
from server.store import Store, Tx
from server.store.notify import APPROVALS
from server.telemetry import approval_closed

log = logging.getLogger(__name__)
STATUSES = ("pending", "approved", "rejected", "expired", "cancelled")
SNAPSHOT_PAGE = 500  # WatchApprovals reads its snapshot of pending approvals in pages this big


@dataclass(frozen=True, slots=True)
class ListApprovalsRequest:
    """One page of approvals with these statuses (none: pending); ``actionable_only`` keeps
    those the caller may still decide (not its own runs, not already decided by it)."""

    statuses: tuple[str, ...] = ()
    actionable_only: bool = False
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class DecideRequest:
    """Approve or reject a pending run; ``reason`` is recorded (required to reject)."""

    run_id: str
    reason: str = ""
    action_digest: str = ""  # the digest the approver saw ("": the run's, whatever it is)


@dataclass(frozen=True, slots=True)
class ApprovalView:
    approval: Approval
    run: Run


class ApprovalService:
    def __init__(self, store: Store, *, clock: Clock = utcnow, watch_poll_seconds: float = 1.0) -> None:
        self.store = store
        self.clock = clock
        self.watch_poll_seconds = watch_poll_seconds

    async def _views(self, tx: Tx, approvals: Sequence[Approval]) -> list[ApprovalView]:
        runs = await tx.runs.get_many([a.run_id for a in approvals])
        return [ApprovalView(a, runs[a.run_id]) for a in approvals if a.run_id in runs]

    async def list(self, who: Principal, req: ListApprovalsRequest) -> Page[ApprovalView]:
        size = page_size(req.page_size)  # checked before the statuses, as always
        for i, s in enumerate(req.statuses):
            if s not in STATUSES:
                raise InvalidArgument(f"statuses[{i}]", f"unknown status {s!r}")
        mine = who.owner if req.actionable_only else ""
        paging = Paging.of(size, req.page_token, {"list": "approvals", "statuses": req.statuses,
                                                  "actionable_by": mine})
        async with self.store.read() as tx:
            page = paging.page(await tx.approvals.find(
                statuses=list(req.statuses) or ["pending"], after_run_id=paging.after,
                limit=paging.fetch, not_submitted_by=mine, not_decided_by=mine),
                key=lambda a: a.run_id)
            views = await self._views(tx, page.items)
        # Every role allowed to list sees every approval today; the filter keeps the table
        # the one place that says so.
        views = [v for v in views if self._sees("ApprovalService.ListApprovals", who, v)]
        return Page(views, page.next_token)

    @staticmethod
    def _sees(operation: str, who: Principal, v: ApprovalView) -> bool:
        """Every approval is of a run that asked for approval (the DECIDE scope sees it)."""
        return sees_run(operation, who, submitter=v.run.submitter, asked_approval=True)

    async def get(self, who: Principal, run_id: str) -> ApprovalView:
        """NOT_FOUND (as for a run without approval) when outside the caller's scope."""
        require("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        async with self.store.read() as tx:
            a = await tx.approvals.get(run_id)
            views = await self._views(tx, [a]) if a is not None else []
        if not views or not self._sees("ApprovalService.GetApproval", who, views[0]):
            raise ApprovalNotFound(run_id)
        return views[0]

    async def approve(self, who: Principal, req: DecideRequest) -> ApprovalView:
        return await self._decide(who, req.run_id, "approve", req.reason, req.action_digest)

    async def reject(self, who: Principal, req: DecideRequest) -> ApprovalView:
        if not req.reason.strip():
            raise InvalidArgument("reason", "is required to reject")
        return await self._decide(who, req.run_id, "reject", req.reason, req.action_digest)

    async def _decide(self, who: Principal, run_id: str, verdict: str, reason: str,
                      digest: str) -> ApprovalView:
        require("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        check("reason", reason, max_len=2000)
        digest = digest.removeprefix("sha256:")
        check("action_digest", digest, pattern=r"^[0-9a-f]{64}$", max_len=64)
        now = self.clock()
        expired = False
        async with self.store.transaction() as tx:
            # Lock order (approval, then run) is the same everywhere: no deadlocks.
            a = await tx.approvals.get(run_id, lock=True)
            if a is None:
                run = await tx.runs.get(run_id)
                # Only a caller who may see the run learns that it exists without an approval.
                seen = run is not None and sees_run(f"ApprovalService.{verdict.title()}", who,
                                                    submitter=run.submitter, asked_approval=False)
                raise ApprovalNotFound(run_id) if seen else RunNotFound(run_id)
            run = await tx.runs.get(run_id, lock=True)
            assert run is not None
            if not sees_run(f"ApprovalService.{verdict.title()}", who, submitter=run.submitter,
                            asked_approval=True):
                raise RunNotFound(run_id)
            if a.status == "pending" and now >= a.expires_at:
                await self._expire(tx, a, run, now)  # committed below, then refused
                expired = True
            elif a.status != "pending":
                raise ApprovalClosed(run_id, a.status)
            elif run.submitter == who.owner:
                log.warning("self-approval refused: %s on %s", who.owner, run_id)
                raise SelfApprovalRefused(run_id, who.owner)
            elif digest and digest != run.action_digest:
                raise ActionDigestMismatch(run_id, digest, run.action_digest)
            elif not await tx.approvals.add_decision(run_id, approver=who.owner, key_id=who.key_id,
                                           verdict=verdict, reason=reason, now=now,
                                           action_digest=run.action_digest):
                raise AlreadyDecided(run_id, who.owner)
            else:
                await tx.audit.record(actor=who.owner, action=f"approval.{verdict}", target=run_id,
                                      now=now, details={"reason": reason,
                                                        "action_digest": run.action_digest},
                                      run=run)
                a = await tx.approvals.get(run_id)
                assert a is not None
                if verdict == "reject":
                    await tx.approvals.close(run_id, "rejected", now)
                    await tx.runs.transition(run, RunState.REJECTED, reason=f"rejected by {who.owner}: {reason}",
                                        actor=who.owner, now=now)
                elif a.approvals >= a.required:
                    approvers = ", ".join(d.approver for d in a.decisions if d.verdict == "approve")
                    await tx.approvals.close(run_id, "approved", now)
                    await tx.runs.transition(run, RunState.QUEUED, reason=f"approved by {approvers}",
                                        actor=who.owner, now=now)
            a = await tx.approvals.get(run_id)
            view = (await self._views(tx, [a]))[0] if a else None
        if expired:
            raise ApprovalClosed(run_id, "expired")
        assert view is not None
        done = view.approval
        if done.closed_at == now and done.status in ("approved", "rejected"):  # closed by this
            approval_closed(run_id=run_id, traceparent=view.run.traceparent,
                            opened=done.created_at, closed=now, result=done.status)
        return view

    @staticmethod
    async def _expire(tx: Tx, a: Approval, run: Run, now: datetime) -> None:
        await tx.approvals.close(a.run_id, "expired", now)
        await tx.runs.transition(run, RunState.EXPIRED, actor="system", now=now,
                            reason=f"no decision before {a.expires_at.isoformat()}")
        await tx.audit.record(actor="system", action="approval.expire", target=a.run_id, now=now,
                              details={"expires_at": a.expires_at.isoformat(),
                                       "approvals": a.approvals, "required": a.required},
                              run=run)
        approval_closed(run_id=a.run_id, traceparent=run.traceparent, opened=a.created_at,
                        closed=now, result="expired")

    async def expire_due(self) -> int:
        """Expire every pending approval past its deadline; safe to run from several processes."""
        total = 0
        while True:
            now = self.clock()
            async with self.store.transaction() as tx:
                due = await tx.approvals.due(now)
                for run_id in due:
                    a = await tx.approvals.get(run_id, lock=True)
                    run = await tx.runs.get(run_id, lock=True)
                    if a is None or run is None or a.status != "pending":
                        continue
                    await self._expire(tx, a, run, now)
                    total += 1
            if len(due) < 100:
                return total

    async def watch(self, who: Principal) -> AsyncIterator[ApprovalView]:
        """Every pending approval, then each change (any status) as it is committed."""
        notifier = self.store.notifier
        seen: dict[str, int] = {}
        token = notifier.token(APPROVALS)
        since = self.clock()
        op = "ApprovalService.WatchApprovals"
        after = ""
        while True:  # the snapshot: every pending approval, a page per read
            async with self.store.read() as tx:
                pending = await tx.approvals.find(statuses=["pending"], after_run_id=after,
                                                  limit=SNAPSHOT_PAGE)
                views = await self._views(tx, pending)
            for v in views:  # yielded outside the read: no connection held while sending
                seen[v.approval.run_id] = v.approval.version
                if self._sees(op, who, v):
                    yield v
            if len(pending) < SNAPSHOT_PAGE:
                break
            after = pending[-1].run_id
        while True:
            await notifier.wait(token, self.watch_poll_seconds)
            token = notifier.token(APPROVALS)
            # Re-read a little behind `since`: clocks of several writers are not in lockstep.
            async with self.store.read() as tx:
                changed = await tx.approvals.updated_since(since - timedelta(seconds=5))
                fresh = [a for a in changed if seen.get(a.run_id, -1) < a.version]
                views = await self._views(tx, fresh)
            for v in views:
                seen[v.approval.run_id] = v.approval.version
                since = max(since, v.approval.updated_at)
                if self._sees(op, who, v):
                    yield v
