"""The hash chains over run events and audit records, and the checks that recompute them.

Ordering: every record belongs to one chain. A run's events and the audit records about that
run (submit, cancel, decisions, expiry, an executor's refusal) form the chain
``run:<run id>``, ordered by the run's own lock (the run row is held ``FOR UPDATE`` on
PostgreSQL, SQLite has one writer), so writers of different runs never wait for each other.
Audit records about a workflow form its chain ``workflow:<id>``; the rest (keys, agent
versions) the chain ``audit``. Their heads are rows of ``chain_heads``, locked by each writer
(a workflow's writers already hold the workflow; the ``audit`` chain's are rare
administrative acts). Each record carries its
position (``chain_seq``, from 1), the previous record's hash (``prev_hash``, "" for the first)
and its own ``hash = SHA-256(prev_hash + canonical JSON of its content)``; the chain's head
(position and hash) is kept on the run's row (``runs.chain_seq``/``chain_head``) or in
``chain_heads``, so deleting the newest records also shows.

Everything here is pure: the store writes with ``event_content``/``audit_content`` and the
verifier (``server.services.audit``) and the executor check with ``check_run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.domain.digests import (
    action_digest,
    canonical_json,
    chain_hash,
    input_digest,
    logs_digest,
    output_digest,
    sha256_hex,
)
from server.domain.models import AuditEntry, Decision, Run, RunEvent

AUDIT_CHAIN = "audit"


def run_chain(run_id: str) -> str:
    return f"run:{run_id}"


def chain_of_target(target: str) -> str:
    """The chain of an audit record about no run: its workflow's (``workflow:<id>``, for the
    workflow and its steps' approvals: writers of one workflow already hold its row), else
    ``audit`` (keys, agent versions: rare administrative acts)."""
    if target.startswith("wf_"):
        return f"workflow:{target.split('/', 1)[0]}"
    return AUDIT_CHAIN


def heads_digest(heads: Iterable[Sequence[object]]) -> str:
    """SHA-256 of the canonical JSON of every chain's head, ``[chain, position, hash]``: the
    runs' chains in run id order, then ``audit``. Published on NATS; ``VerifyAuditTrail``
    answers the same value for the same chains."""
    return sha256_hex(canonical_json([list(h) for h in heads]))


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_content(e: RunEvent) -> dict[str, Any]:
    """What an event's hash covers: everything but its outbox id and publication time."""
    return {
        "kind": "run_event", "chain": run_chain(e.run_id), "chain_seq": e.chain_seq,
        "run_id": e.run_id, "seq": e.seq, "state": e.state.value,
        "previous_state": e.previous_state.value if e.previous_state else "",
        "reason": e.reason, "attempt": e.attempt, "actor": e.actor, "agent": e.agent,
        "version": e.version, "capability": e.capability, "traceparent": e.traceparent,
        "created_at": _ts(e.created_at), "attest": dict(e.attest),
    }


def audit_content(a: AuditEntry) -> dict[str, Any]:
    """What an audit record's hash covers: everything but its row id."""
    return {
        "kind": "audit", "chain": a.chain, "chain_seq": a.chain_seq, "at": _ts(a.at),
        "actor": a.actor, "action": a.action, "target": a.target, "details": a.details,
    }


Record = RunEvent | AuditEntry


def content_of(r: Record) -> dict[str, Any]:
    return event_content(r) if isinstance(r, RunEvent) else audit_content(r)


def name_of(r: Record) -> str:
    """How a report names a record: its table, row id and place."""
    if isinstance(r, RunEvent):
        return f"run_events #{r.id} (run {r.run_id} event {r.seq}, chain position {r.chain_seq})"
    return f"audit_log #{r.id} ({r.action} on {r.target}, {r.chain} position {r.chain_seq})"


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing that does not match: which record, and what is wrong with it."""

    record: str
    run_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.record}: {self.problem}"


def check_chain(chain: str, records: Sequence[Record], *, head_seq: int, head_hash: str,
                head_name: str, run_id: str = "") -> Problem | None:
    """Recompute one chain: positions 1..n without gaps, each record's link and hash, and the
    stored head. ``records`` in any order."""
    ordered = sorted(records, key=lambda r: (r.chain_seq, r.id))
    prev, expect = "", 1
    for r in ordered:
        if r.chain_seq != expect:
            what = (f"at chain position {r.chain_seq} where {expect} was expected: "
                    + (f"position {expect} is missing" if r.chain_seq > expect
                       else f"position {r.chain_seq} appears twice"))
            return Problem(name_of(r), run_id, what)
        if r.prev_hash != prev:
            return Problem(name_of(r), run_id, "prev_hash does not match the hash of the record "
                           "before it (a record was removed, inserted or reordered)")
        if chain_hash(r.prev_hash, content_of(r)) != r.hash:
            return Problem(name_of(r), run_id, "hash does not match its content (the record was "
                           "changed after it was written)")
        prev, expect = r.hash, expect + 1
    if head_seq != expect - 1 or head_hash != prev:
        return Problem(head_name, run_id, f"the chain head says position {head_seq} but the "
                       f"chain ends at {expect - 1}: records at its end were removed or the "
                       f"head was changed")
    return None


def recomputed_action_digest(run: Run) -> str:
    return action_digest(agent=run.agent, version=run.version, image=run.image,
                         capability=run.capability, input_json=run.input_json, limits=run.limits,
                         network=run.network, secrets=run.secrets, entrypoint=run.entrypoint)


def check_run(run: Run, *, output_json: str | None, logs: bytes | None,
              events: Iterable[RunEvent], audit: Iterable[AuditEntry],
              decisions: Iterable[Decision]) -> Problem | None:
    """Every check of one run, in order: its chain, its digests against its content and
    against what the chain attests, and its approval decisions against the chained record of
    each decision."""
    events, audit = list(events), list(audit)
    row = f"runs {run.id}"
    p = check_chain(run_chain(run.id), [*events, *audit], head_seq=run.chain_seq,
                    head_hash=run.chain_head, head_name=row + " (chain head)", run_id=run.id)
    if p:
        return p
    by_seq = sorted(events, key=lambda e: e.seq)
    if [e.seq for e in by_seq] != list(range(1, run.last_seq + 1)):
        return Problem(row, run.id, f"events are numbered {[e.seq for e in by_seq]}, the run "
                       f"says 1..{run.last_seq}")
    submitted = by_seq[0].attest if by_seq else {}
    try:
        inp = input_digest(run.input_json)
        act = recomputed_action_digest(run)
    except ValueError:
        return Problem(row, run.id, "input_json is not JSON")
    if inp != run.input_sha256 or inp != submitted.get("input_sha256"):
        return Problem(row, run.id, "input_json does not match input_sha256 or the digest the "
                       "submit event attests (the input was changed)")
    if act != run.action_digest or act != submitted.get("action_digest"):
        return Problem(row, run.id, "the run's action (agent, version, image, capability, input, "
                       "limits, network, secrets) does not match action_digest or the digest "
                       "the submit event attests")
    results = [e.attest for e in by_seq if "output_sha256" in e.attest]
    try:
        out = output_digest(output_json)
    except ValueError:
        return Problem(row, run.id, "output_json is not JSON")
    if out != run.output_sha256 or (results and results[-1]["output_sha256"] != out):
        return Problem(row, run.id, "output_json does not match output_sha256 or the digest "
                       "its outcome event attests")
    if results and (logs_digest(logs) != run.logs_sha256
                    or results[-1].get("logs_sha256") != run.logs_sha256):
        return Problem(row, run.id, "logs do not match logs_sha256 or the digest its outcome "
                       "event attests")
    return _check_decisions(run, audit, decisions)


def _check_decisions(run: Run, audit: list[AuditEntry],
                     decisions: Iterable[Decision]) -> Problem | None:
    """Each decision row is the one its chained audit record describes, and the other way."""
    recorded = {(a.actor, a.action.removeprefix("approval.")): a for a in audit
                if a.action in ("approval.approve", "approval.reject")}
    seen = set()
    for d in decisions:
        name = f"approval_decisions #{d.id} (run {run.id}, {d.verdict} by {d.approver})"
        a = recorded.get((d.approver, d.verdict))
        if a is None:
            return Problem(name, run.id, f"no chained audit record of a {d.verdict} by "
                           f"{d.approver!r} (the approver or verdict was changed)")
        if d.action_digest != run.action_digest or a.details.get("action_digest") != d.action_digest:
            return Problem(name, run.id, "its action digest is not the run's, or not the one "
                           f"its audit record audit_log #{a.id} holds")
        if a.details.get("reason", "") != d.reason:
            return Problem(name, run.id, f"its reason differs from audit_log #{a.id}")
        seen.add((d.approver, d.verdict))
    for key, a in recorded.items():
        if key not in seen:
            return Problem(f"audit_log #{a.id} ({a.action} by {a.actor} on {run.id})", run.id,
                           "its decision row is missing (approval_decisions was changed)")
    return None
