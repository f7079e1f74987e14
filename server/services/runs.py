"""Run submission, inspection, cancellation and watching."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from agents.limits import LimitsRefused, resolve_limits
from agents.manifest import CAPABILITY_RE, NAME_RE, SECRET_RE, VERSION_RE
from server.domain.clock import Clock, utcnow
from server.domain.digests import with_digests
from server.domain.errors import (
    AgentNotFound,
    IdempotencyConflict,
    IllegalTransition,
    InvalidArgument,
    NoLiveVersion,
    RunNotFound,
    VersionDeprecated,
)
from server.domain.models import NewRun, Page, Run, RunEvent, RunResult
from server.domain.policy import Policy, assess
from server.domain.principal import Principal, Scope, scope_of, sees_run
from server.domain.quotas import check_limits, check_usage, day_start
from server.domain.states import RunState
from server.ids import new_run_id
from server.services.input_check import check_input_bounded
from server.services.registry import pick_version
from server.services.validation import Paging, check, parse_json, require
from server.store import Duplicate, Store, Tx
from server.store.notify import RUN_EVENTS

RUN_ID_RE = r"^run_[0-9a-z]{26}$"
IDEMPOTENCY_RE = r"^[\x21-\x7e]{1,200}$"  # printable ASCII, no spaces
MAX_LOG_BYTES_RETURNED = 1024 * 1024
MAX_SEQUENCE = 2**31 - 1


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """Submit a run of ``agent`` (``version``, else its newest live one) ``capability``."""

    agent: str
    capability: str
    input_json: str
    version: str = ""
    idempotency_key: str = ""
    network: bool = False
    secrets: tuple[str, ...] = ()
    limits: dict[str, float] | None = None  # only the fields the caller set
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class ListRunsRequest:
    """One page of runs, newest first; empty filters match everything."""

    page_size: int = 0  # 0: the default page size
    page_token: str = ""
    agent: str = ""
    states: tuple[RunState, ...] = ()
    submitter: str = ""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Cancel a run (the submitter or an admin); ``reason`` is recorded."""

    run_id: str
    reason: str = ""


def request_hash(req: SubmitRequest, parsed_input: Any) -> str:
    doc = {"agent": req.agent, "version": req.version, "capability": req.capability,
           "input": parsed_input, "network": req.network, "secrets": sorted(req.secrets),
           "limits": req.limits or {}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RunService:
    def __init__(self, store: Store, policy: Policy, *, clock: Clock = utcnow,
                 max_input_bytes: int = 256 * 1024, max_attempts: int = 3,
                 watch_poll_seconds: float = 1.0) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.max_input_bytes = max_input_bytes
        self.max_attempts = max_attempts
        self.watch_poll_seconds = watch_poll_seconds

    def _validate(self, req: SubmitRequest) -> Any:
        require("agent", req.agent, pattern=NAME_RE, max_len=63)
        check("version", req.version, pattern=VERSION_RE, max_len=64)
        require("capability", req.capability, pattern=CAPABILITY_RE, max_len=63)
        check("idempotency_key", req.idempotency_key, pattern=IDEMPOTENCY_RE, max_len=200)
        for i, name in enumerate(req.secrets):
            require(f"secrets[{i}]", name, pattern=SECRET_RE, max_len=63)
        if len(set(req.secrets)) != len(req.secrets):
            raise InvalidArgument("secrets", "names must be unique")
        check("traceparent", req.traceparent, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
              max_len=100)
        return parse_json("input_json", req.input_json, max_bytes=self.max_input_bytes)

    async def submit(self, who: Principal, req: SubmitRequest) -> tuple[Run, bool]:
        """Create a run (or return the one with the same idempotency key). -> (run, deduplicated)."""
        payload = self._validate(req)
        digest = request_hash(req, payload)
        if req.idempotency_key:
            async with self.store.read() as tx:
                existing = await tx.runs.find_by_idempotency_key(who.owner, req.idempotency_key)
            if existing is not None:
                return self._dedupe(existing, req.idempotency_key, digest)
        found = await self.store.agent_and_versions(req.agent)  # cached, kept fresh by NOTIFY
        version = pick_version(found[1], req.version) if found else None
        exists = version is not None or bool(not req.version and found)
        if version is None:
            raise NoLiveVersion(req.agent) if exists else AgentNotFound(req.agent, req.version or None)
        if version.deprecated:
            raise VersionDeprecated(req.agent, version.version)
        m = version.manifest
        cap = m.capability(req.capability)
        if cap is None:
            raise InvalidArgument("capability", f"{req.agent}@{version.version} has no capability "
                                  f"{req.capability!r}; it has {', '.join(c.name for c in m.capabilities)}")
        await check_input_bounded(cap, payload)  # off the event loop, bounded in time
        if req.network and not m.permissions.network:
            raise InvalidArgument("network", f"{req.agent}@{version.version} does not permit network egress")
        for i, name in enumerate(req.secrets):
            if name not in m.permissions.secrets:
                raise InvalidArgument(f"secrets[{i}]", f"{req.agent}@{version.version} does not "
                                      f"declare secret {name!r}")
        try:
            limits, default = resolve_limits(req.limits, m.limits.default, m.limits.max)
        except LimitsRefused as e:
            raise InvalidArgument(f"limits.{e.field}", e.problem) from None
        quota = self.policy.quotas.for_owner(who.owner)
        check_limits(who.owner, quota, limits)
        risk = assess(version.risk, network=req.network, secrets=req.secrets, limits=limits,
                      default=default)
        rule = self.policy.rule_for(risk.risk)
        now = self.clock()
        pending = rule.approvals > 0
        state = RunState.PENDING_APPROVAL if pending else RunState.QUEUED
        reason = (f"needs {rule.approvals} approval{'s' if rule.approvals > 1 else ''} "
                  f"(risk {risk.risk.label})") if pending else f"auto-approved (risk {risk.risk.label})"
        input_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        image = (f"{version.image}@{version.image_digest}"
                 if version.image_digest and "@" not in version.image else version.image)
        entrypoint = tuple(m.entrypoint) if m.entrypoint else None
        new = with_digests(NewRun(
            id=new_run_id(), agent=version.agent, version=version.version, capability=cap.name,
            state=state, reason=reason, effective_risk=risk.risk, risk_reasons=tuple(risk.reasons),
            submitter=who.owner, submitter_key_id=who.key_id,
            idempotency_key=req.idempotency_key or None, request_hash=digest,
            input_json=input_json, network=req.network, secrets=tuple(req.secrets),
            limits=limits, image=image, entrypoint=entrypoint,
            output_schema=cap.output_schema, max_attempts=self.max_attempts,
            traceparent=req.traceparent, created_at=now,
        ))
        try:
            async with self.store.transaction() as tx:
                if quota.counted:  # counted under the owner's lock: concurrent submits queue
                    await tx.usage.lock_owner(who.owner)
                    usage = await tx.usage.owner_usage(who.owner, since=day_start(now))
                    check_usage(quota, usage, now)
                # The record first: it opens the run's chain, so the run row is written with
                # the head (its first event) and no second UPDATE is needed for it.
                await tx.audit.record(actor=who.owner, action="run.submit", target=new.id, now=now,
                                      details={"agent": f"{version.agent}@{version.version}",
                                               "capability": cap.name, "risk": risk.risk.label,
                                               "state": state.value,
                                               "input_sha256": new.input_sha256,
                                               "action_digest": new.action_digest}, run=new)
                run = await tx.runs.insert(new, actor=who.owner)
                if pending:
                    await tx.approvals.open(run.id, required=rule.approvals, now=now,
                                            expires_at=now + rule.expires_after)
        except Duplicate:
            # A concurrent submit with the same key won the race; answer as if we came second.
            async with self.store.read() as tx:
                existing = await tx.runs.find_by_idempotency_key(who.owner, req.idempotency_key)
            if existing is None:
                raise
            return self._dedupe(existing, req.idempotency_key, digest)
        return run, False

    @staticmethod
    def _dedupe(existing: Run, key: str, digest: str) -> tuple[Run, bool]:
        if existing.request_hash != digest:
            raise IdempotencyConflict(key, existing.id)
        return existing, True

    @staticmethod
    async def visible(tx: Tx, operation: str, who: Principal, run: Run) -> bool:
        """Whether ``who`` sees ``run`` through ``operation`` (its scope in the role table)."""
        if sees_run(operation, who, submitter=run.submitter, asked_approval=False):
            return True
        return (scope_of(operation, who) is Scope.DECIDE
                and await tx.approvals.get(run.id) is not None)

    async def get(self, who: Principal, run_id: str, *, operation: str = "RunService.GetRun") -> Run:
        """The run; NOT_FOUND when it does not exist or is outside the caller's scope."""
        require("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        async with self.store.read() as tx:
            run = await tx.runs.get(run_id)
            if run is None or not await self.visible(tx, operation, who, run):
                raise RunNotFound(run_id)
        return run

    async def list(self, who: Principal, req: ListRunsRequest) -> Page[Run]:
        paging = Paging.of(req.page_size, req.page_token, {
            "list": "runs", "agent": req.agent, "states": [s.value for s in req.states],
            "submitter": req.submitter})
        check("agent", req.agent, pattern=NAME_RE, max_len=63)
        check("submitter", req.submitter, max_len=200)
        scope = scope_of("RunService.ListRuns", who)
        async with self.store.read() as tx:
            items = await tx.runs.find(agent=req.agent, states=req.states,
                                       submitter=req.submitter, before_id=paging.after,
                                       limit=paging.fetch,
                                       visible_to="" if scope is Scope.ALL else who.owner,
                                       or_asked_approval=scope is Scope.DECIDE)
        return paging.page(items, key=lambda r: r.id)

    async def cancel(self, who: Principal, req: CancelRequest) -> Run:
        run_id, reason = req.run_id, req.reason
        require("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        check("reason", reason, max_len=2000)
        now = self.clock()
        why = f"cancelled by {who.owner}" + (f": {reason}" if reason else "")
        async with self.store.transaction() as tx:
            # Lock order as in approvals (approval, then run): a cancel racing a decision
            # must not deadlock on PostgreSQL.
            await tx.approvals.get(run_id, lock=True)
            run = await tx.runs.get(run_id, lock=True)
            # Only the submitting owner (or an admin) may cancel: others' runs are NOT_FOUND.
            if run is None or not await self.visible(tx, "RunService.CancelRun", who, run):
                raise RunNotFound(run_id)
            if run.state.terminal:
                raise IllegalTransition(run_id, run.state.value, RunState.CANCELLED.value)
            if run.state is RunState.RUNNING:
                # The executor holding the lease stops the sandbox and records CANCELLED.
                await tx.runs.request_cancel(run_id, now)
            else:
                if run.state is RunState.PENDING_APPROVAL:
                    await tx.approvals.close(run_id, "cancelled", now)
                run = await tx.runs.transition(run, RunState.CANCELLED, reason=why, actor=who.owner, now=now)
            await tx.audit.record(actor=who.owner, action="run.cancel", target=run_id, now=now,
                                  details={"reason": reason, "state": run.state.value}, run=run)
            fresh = await tx.runs.get(run_id)
        assert fresh is not None
        return fresh

    async def watch(self, who: Principal, run_id: str, from_seq: int) -> AsyncIterator[RunEvent]:
        """Events from ``from_seq`` on; ends after the terminal event. Works without NATS."""
        require("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        if from_seq < 0:
            raise InvalidArgument("from_sequence", "must not be negative")
        if from_seq > MAX_SEQUENCE:  # sequences are 32-bit in the database
            raise InvalidArgument("from_sequence", f"must be at most {MAX_SEQUENCE}")
        cursor = max(from_seq, 1)
        notifier = self.store.notifier
        # NOT_FOUND before the stream starts; a run's submitter and approval request never
        # change afterwards, so one check covers the whole stream.
        await self.get(who, run_id, operation="RunService.WatchRun")
        while True:
            token = notifier.token(RUN_EVENTS, run_id)  # woken by this run's events only
            async with self.store.read() as tx:
                events = await tx.events.since(run_id, cursor)
                run = None if events else await tx.runs.get(run_id)
            for e in events:
                yield e
                cursor = e.seq + 1
                if e.state.terminal:
                    return
            if run is not None and run.state.terminal and run.last_seq < cursor:
                return  # asked to start after the terminal event
            if not events:
                await notifier.wait(token, self.watch_poll_seconds)

    async def result(self, who: Principal, run_id: str) -> RunResult:
        require("run_id", run_id, pattern=RUN_ID_RE, max_len=40)
        async with self.store.read() as tx:
            res = await tx.runs.result(run_id)
            if res is None or not await self.visible(tx, "RunService.GetRunResult", who, res.run):
                raise RunNotFound(run_id)
        if len(res.logs) > MAX_LOG_BYTES_RETURNED:
            res = replace(res, logs=res.logs[-MAX_LOG_BYTES_RETURNED:], logs_truncated=True)
        return res
