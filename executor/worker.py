"""The executor: lease queued runs, run each in a sandbox, record the outcome.

Safety rules, each in one place:
- a run is claimed with ``FOR UPDATE SKIP LOCKED`` and moved to RUNNING with a lease
  (``lease_owner``, ``lease_expires_at``) in the same transaction: two executors never hold it;
- an outcome is recorded only while we still hold the lease for that attempt; a result that
  arrives after the lease was lost is dropped (the run was re-queued or failed LOST);
- a lapsed lease (the holder died) is re-queued while attempts remain, else FAILED with reason
  LOST; its sandbox is reaped first so the same run never executes twice at once on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from executor.results import Outcome, interpret
from executor.runtime.base import RunSpec, SandboxRuntime
from executor.secrets import MissingSecret, SecretSource
from executor.settings import ExecutorSettings
from server.domain.clock import Clock, utcnow
from server.domain.digests import action_digest
from server.domain.models import AttemptResult, ExecutorInfo, Run
from server.domain.states import RunState
from server.logs import run_context
from server.store import Store
from server.store.notify import RUN_EVENTS, RUNS_QUEUED
from server.telemetry import (
    current_traceparent,
    mark_outcome,
    metrics_api,
    record_span,
    span,
    traceparent_of,
)

log = logging.getLogger(__name__)

# The error code of a run the executor refused because its action is not the approved one.
ACTION_REFUSED = "ACTION_DIGEST_MISMATCH"
# After the grace period, how long stopped runs may take to record their re-queue.
RUN_STOP_SECONDS = 10.0


@dataclass
class _Active:
    run: Run
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    shutdown: bool = False  # cancelled because the executor is stopping (re-queue, not CANCELLED)
    finishing: bool = False  # the outcome is being recorded: the lease is released on purpose
    refusal: dict[str, str] | None = None  # why the run was refused (the audit record's details)
    leased_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # wall clock (traces)


class Executor:
    """One executor process. ``await start()``, then ``await stop()`` (idempotent)."""

    def __init__(self, settings: ExecutorSettings, store: Store, runtime: SandboxRuntime, *,
                 clock: Clock = utcnow, secrets: SecretSource | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.id = settings.executor_id
        self.secrets = secrets or SecretSource(directory=settings.secrets_dir,
                                               env_prefix=settings.secrets_env_prefix)
        self.active: dict[str, _Active] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopped = False
        self._unstoppable: set[asyncio.Task[None]] = set()
        self.executed = 0  # attempts this process finished (tests and metrics)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.runtime.check()
        # Leftovers of executors that died on this host (kill -9, OOM, power): their sandboxes
        # already ended at their deadlines (the runtime's backstop); remove what remains now,
        # not when their leases lapse. Then mark this executor alive on the host.
        reap_dead = getattr(self.runtime, "reap_dead_executors", None)
        if reap_dead is not None:
            try:
                await reap_dead()
            except Exception:  # never a reason not to start: lapsed leases reap per run too
                log.exception("reaping leftovers of dead executors failed")
        hold = getattr(self.runtime, "hold_liveness", None)
        if hold is not None:
            await hold(getattr(self.runtime, "executor_id", None) or self.id)
        now = self.clock()
        async with self.store.transaction() as tx:
            await tx.fleet.register(ExecutorInfo(
                id=self.id, host=socket.gethostname(), runtime=self.runtime.name,
                slots=self.settings.slots, slots_in_use=0, started_at=now, heartbeat_at=now,
                stopped_at=None))
        for name, coro in (("lease", self._lease_loop()), ("heartbeat", self._heartbeat_loop()),
                           ("cancel-watch", self._cancel_loop()), ("lapse", self._lapse_loop())):
            self._tasks.append(asyncio.create_task(coro, name=f"executor-{name}"))
        log.info("executor %s started: runtime %s, %d slots", self.id, self.runtime.name,
                 self.settings.slots)

    async def stop(self) -> None:
        """Stop leasing; let runs finish within the grace period; then stop and re-queue them."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        running = [a.task for a in self.active.values() if a.task]
        if running:
            _, pending = await asyncio.wait(running, timeout=self.settings.grace_seconds)
            for a in list(self.active.values()):
                a.shutdown = True
                a.cancel.set()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=RUN_STOP_SECONDS)
            # A run that ignored its stop is cancelled, never abandoned: an abandoned task is
            # destroyed while pending, with whatever it held (a database connection). Its lease
            # lapses and another executor re-queues it.
            for t in pending:
                t.cancel()
            if pending:
                _, stuck_runs = await asyncio.wait(pending, timeout=5)
                for t in stuck_runs:
                    log.error("run task %s did not stop on cancellation", t.get_name())
                self._unstoppable = stuck_runs  # keep them referenced rather than collected
        for t in self._tasks:
            t.cancel()
        # Bounded: a background loop that failed to stop must not hang the shutdown. (None
        # when start() failed early: asyncio.wait refuses an empty set.)
        _, stuck = await asyncio.wait(self._tasks, timeout=5) if self._tasks else (set(), set())
        for t in stuck:
            log.error("executor task %s did not stop on cancellation", t.get_name())
        with contextlib.suppress(Exception):
            async with self.store.transaction() as tx:
                await tx.fleet.stopped(self.id, self.clock())

    # -- leasing -----------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        notifier = self.store.notifier
        while not self._stopping.is_set():
            token = notifier.token(RUNS_QUEUED)
            free = self.settings.slots - len(self.active)
            claimed: list[Run] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    log.exception("lease attempt failed")
            for run in claimed:
                a = _Active(run)
                self.active[run.id] = a
                a.task = asyncio.create_task(self._execute(a), name=f"run-{run.id}")
            if claimed and len(claimed) == free:
                continue  # maybe more is queued; slots are full, so the next pass waits
            self._slot_freed.clear()
            waits = [asyncio.ensure_future(notifier.wait(token, self.settings.poll_seconds)),
                     asyncio.ensure_future(self._stopping.wait())]
            if free <= 0 or claimed:
                waits.append(asyncio.ensure_future(self._slot_freed.wait()))
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()

    async def _claim(self, limit: int) -> list[Run]:
        now = self.clock()
        out = []
        async with self.store.transaction() as tx:
            network = getattr(self.runtime, "network_pool", None)
            queued = await tx.runs.next_queued(limit, network=network)
            # The span starts once the runs are found: earlier, the transaction may still be
            # waiting for the submit that created them (SQLite's write lock), and the lease
            # would seem to begin before the run existed.
            started = datetime.now(UTC)
            for run in queued:
                out.append(await tx.runs.lease(run, executor_id=self.id, until=now + self.lease,
                                               now=now))
        for run in out:  # the lease, as a span in the run's trace
            if run.traceparent:
                record_span("airlock.run.lease", parent=run.traceparent, start=started,
                            end=datetime.now(UTC), attributes={
                                "airlock.run_id": run.id, "airlock.executor": self.id,
                                "airlock.attempt": run.attempt})
        return out

    # -- one run -----------------------------------------------------------------------------

    async def _execute(self, a: _Active) -> None:
        """One attempt, as the span "airlock.run.execute" in the run's trace."""
        run = a.run
        # The attempt starts at the lease, so its child "airlock.sandbox.start" (lease to
        # launch) never begins before it.
        with run_context(run.id), span("airlock.run.execute", parent=run.traceparent or None,
                                       start_time=a.leased_at, attributes={
                "airlock.run_id": run.id, "airlock.agent": f"{run.agent}@{run.version}",
                "airlock.capability": run.capability, "airlock.attempt": run.attempt,
                "airlock.executor": self.id}):
            await self._execute_attempt(a)

    async def _execute_attempt(self, a: _Active) -> None:
        run = a.run
        try:
            try:
                secrets = self.secrets.resolve(run.secrets)
            except MissingSecret as e:
                log.warning("run %s: cannot start: %s", run.id, e)
                await self._finish(a, Outcome(state=RunState.FAILED, reason=str(e)))
                return
            spec = RunSpec(
                run_id=run.id, attempt=run.attempt, image=run.image,
                capability=run.capability, input_json=run.input_json,
                limits=run.limits, entrypoint=run.entrypoint, network=run.network,
                secrets=secrets, executor_id=self.id)
            refusal = await self._check_action(run, spec)
            if refusal is not None:
                a.refusal = refusal
                await self._finish(a, Outcome(state=RunState.FAILED, reason=refusal["reason"],
                                              error_code=ACTION_REFUSED))
                return
            # Lease -> launch is the sandbox start latency; the container gets the
            # sandbox span's context as TRACEPARENT.
            launched = datetime.now(UTC)
            metrics_api().sandbox_start.record((launched - a.leased_at).total_seconds())
            if run.traceparent:
                record_span("airlock.sandbox.start", parent=current_traceparent(),
                            start=a.leased_at, end=launched, attributes={"airlock.run_id": run.id})
            with span("airlock.sandbox", attributes={"airlock.run_id": run.id,
                                                     "airlock.runtime": self.runtime.name,
                                                     "airlock.image": run.image}) as sandbox:
                traceparent = traceparent_of(sandbox) or run.traceparent
                if traceparent:
                    spec = replace(spec, env={"TRACEPARENT": traceparent})
                log.info("run %s: attempt %d starting on %s (%s@%s %s, timeout %gs, memory %d MiB)",
                         run.id, run.attempt, self.id, run.agent, run.version, run.capability,
                         run.limits.timeout_seconds, run.limits.memory_mib)
                result = await self.runtime.run(spec, a.cancel)
                sandbox.set_attribute("airlock.sandbox.termination", result.termination.value)
            metrics_api().sandbox_duration.record(result.duration_seconds,
                                                  {"termination": result.termination.value})
            outcome = interpret(result, run.output_schema, limits=run.limits)
            await self._finish(a, outcome)
        except Exception as e:  # the runtime itself broke: fail this run, keep the executor
            log.exception("run %s: executor error", run.id)
            with contextlib.suppress(Exception):
                await self._finish(a, Outcome(state=RunState.FAILED,
                                              reason=f"executor error: {type(e).__name__}"))
        finally:
            self.active.pop(run.id, None)
            self.executed += 1
            self._slot_freed.set()

    async def _check_action(self, run: Run, spec: RunSpec) -> dict[str, str] | None:
        """None if what ``spec`` will run is what was approved; else why not (a refusal).

        The digest is recomputed from the spec the sandbox gets (image, capability, input,
        limits, network, secret names) and compared with the digest stored at submit, the
        one the chained submit event attests, and the one every approval was given for: a
        database edit after approval (of the input, the image, a limit) changes it.
        """
        found = action_digest(agent=run.agent, version=run.version, image=spec.image,
                              capability=spec.capability, input_json=spec.input_json,
                              limits=spec.limits, network=spec.network,
                              secrets=spec.secrets.keys(), entrypoint=spec.entrypoint)
        async with self.store.read() as tx:
            first = await tx.events.since(run.id, 1, limit=1)
            approval = await tx.approvals.get(run.id)
        approved = {"submitted": run.action_digest,
                    "attested at submit": first[0].attest.get("action_digest", "") if first else ""}
        if approval is not None:
            approvers = [d for d in approval.decisions if d.verdict == "approve"]
            if approval.status != "approved" or len(approvers) < approval.required:
                approved["approval"] = "(no approval quorum on record)"
            for d in approvers:
                approved[f"approved by {d.approver}"] = d.action_digest
        differs = {k: v for k, v in approved.items() if v != found}
        if not differs:
            return None
        what, expected = next(iter(differs.items()))
        reason = (f"refused: the action to run (sha256:{found}) is not the approved one "
                  f"({what}: sha256:{expected}); the run was changed after it was approved")
        log.error("run %s: REFUSED to run: action digest sha256:%s differs from %s", run.id,
                  found, ", ".join(f"{k} sha256:{v}" for k, v in differs.items()))
        return {"reason": reason, "found": found, **{k: v for k, v in approved.items()}}

    async def _finish(self, a: _Active, outcome: Outcome) -> None:
        """Record the outcome, as the span "airlock.run.complete"."""
        a.finishing = True  # from here the lease is released on purpose: not "lost"
        mark_outcome(None, outcome.state, outcome.reason)  # the attempt's "airlock.run.execute"
        with span("airlock.run.complete", attributes={"airlock.run_id": a.run.id}) as s:
            mark_outcome(s, outcome.state, outcome.reason)
            await self._record(a, outcome)

    async def _record(self, a: _Active, outcome: Outcome) -> None:
        run = a.run
        now = self.clock()
        async with self.store.transaction() as tx:
            current = await tx.runs.get(run.id, lock=True)
            if (current is None or current.state is not RunState.RUNNING
                    or current.lease_owner != self.id or current.attempt != run.attempt):
                log.warning("run %s: lease lost before the result was recorded; result (%s) "
                            "dropped", run.id, outcome.state.value)
                return
            if a.shutdown and outcome.state is RunState.CANCELLED:
                target, reason = RunState.QUEUED, f"executor {self.id} shut down; re-queued"
            else:
                target = outcome.state
                reason = outcome.reason or ("succeeded" if target is RunState.SUCCEEDED else "")
                if target is RunState.CANCELLED and current.cancel_requested:
                    reason = "cancelled on request"
            result = _attempt_result(outcome, error_message="" if outcome.succeeded else reason)
            if a.refusal is not None:
                await tx.audit.record(actor=self.id, action="run.refused", target=run.id, now=now,
                                      details=a.refusal, run=current)
            if target is RunState.QUEUED:
                await tx.runs.requeue(current, reason=reason, actor=self.id, now=now,
                                      result=result)
            else:
                await tx.runs.record_outcome(current, target, reason=reason, result=result,
                                             actor=self.id, now=now)
        # After the commit: the message states what the database now says.
        took = f"after {outcome.duration_seconds:.1f}s"
        if target is RunState.QUEUED:
            log.warning("run %s: attempt %d stopped because executor %s is shutting down; "
                        "re-queued", run.id, run.attempt, self.id)
        elif target is RunState.SUCCEEDED:
            log.info("run %s: attempt %d SUCCEEDED %s", run.id, run.attempt, took)
        else:
            peak = (f", peak memory {outcome.peak_memory_bytes} bytes"
                    if outcome.peak_memory_bytes is not None else "")
            log.warning("run %s: attempt %d %s %s: %s%s", run.id, run.attempt, target.value, took,
                        reason, peak)

    # -- background loops --------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                now = self.clock()
                # Judge only the runs we asked to renew: one claimed meanwhile is not "lost".
                renewing = dict(self.active)
                async with self.store.transaction() as tx:
                    held = set(await tx.runs.extend_leases(self.id, list(renewing),
                                                           now + self.lease))
                    await tx.fleet.heartbeat(self.id, slots_in_use=len(self.active), now=now)
                for run_id, a in renewing.items():
                    if run_id not in held and not a.cancel.is_set() and not a.finishing:
                        # Someone else re-queued or failed it: stop our copy at once.
                        with run_context(run_id):
                            log.warning("run %s: lease lost (attempt %d); stopping the sandbox",
                                        run_id, a.run.attempt)
                        a.cancel.set()
            except Exception:
                log.exception("heartbeat failed")

    async def _cancel_loop(self) -> None:
        """Cancel requests arrive as run-event notifications (or are found by polling)."""
        notifier = self.store.notifier
        while True:
            token = notifier.token(RUN_EVENTS)
            if self.active:
                try:
                    async with self.store.read() as tx:
                        ids = await tx.runs.to_stop(list(self.active))
                    for run_id in ids:
                        a = self.active.get(run_id)
                        if a is not None and not a.cancel.is_set():
                            with run_context(run_id):
                                log.info("run %s: cancel requested; stopping the sandbox", run_id)
                            a.cancel.set()
                except Exception:
                    log.exception("cancel check failed")
            await notifier.wait(token, min(1.0, self.settings.heartbeat_seconds))

    async def _lapse_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.settings.lease_seconds / 3))
            try:
                await self.recover_lapsed()
            except Exception:
                log.exception("lapsed-lease sweep failed")

    async def recover_lapsed(self) -> int:
        """Re-queue (or fail as LOST) runs whose executor stopped renewing its lease."""
        now = self.clock()
        count = 0
        done: list[tuple[str, str]] = []
        async with self.store.transaction() as tx:
            for run in await tx.runs.lapsed(now):
                if run.id in self.active:
                    continue  # ours: the heartbeat will renew it
                # Same host: make sure the old sandbox is gone before anyone runs it again.
                with contextlib.suppress(Exception):
                    await self.runtime.reap(run.id)
                who = run.lease_owner or "unknown executor"
                if run.attempt < run.max_attempts:
                    await tx.runs.requeue(
                        run, actor=self.id, now=now,
                        reason=f"lease lost on {who} (attempt {run.attempt}); re-queued")
                    done.append((run.id, f"lease lost on {who} (attempt {run.attempt} of "
                                         f"{run.max_attempts}); re-queued"))
                else:
                    await tx.runs.fail_lost(
                        run, actor=self.id, now=now,
                        reason=f"LOST: lease lost on {who} after {run.attempt} attempts")
                    done.append((run.id, f"lease lost on {who} after {run.attempt} attempts; "
                                         f"FAILED (LOST)"))
                count += 1
        for run_id, what in done:  # after the commit
            with run_context(run_id):
                log.warning("run %s: %s", run_id, what)
        return count

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "runtime": self.runtime.name, "slots": self.settings.slots,
                "active": sorted(self.active)}


def _attempt_result(outcome: Outcome, *, error_message: str) -> AttemptResult:
    """What the attempt leaves on its run: the output as JSON text (kept on failure only when
    the agent gave one), the error, logs and measurements."""
    output = (None if outcome.output is None and not outcome.succeeded
              else json.dumps(outcome.output, ensure_ascii=False))
    return AttemptResult(
        output_json=output, error_code=outcome.error_code or "", error_message=error_message,
        exit_code=outcome.exit_code, logs=outcome.logs.encode("utf-8", "replace"),
        logs_truncated=outcome.logs_truncated, peak_memory_bytes=outcome.peak_memory_bytes,
        duration_seconds=outcome.duration_seconds, cpu_seconds=outcome.cpu_seconds,
        output_bytes=outcome.output_bytes, log_bytes=outcome.log_bytes)
