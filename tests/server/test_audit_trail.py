"""The tamper-evident audit trail: digests, action digests on decisions, hash chains, verify.

Every tampering test edits the database directly, behind the control plane's back (as an
operator with write access could), then asks ``VerifyAuditTrail`` over the real API which
record no longer matches. SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import audit_service_pb2 as aus
from airlock.v1 import run_service_pb2 as rs
from server.domain.digests import action_digest, canonical_json
from server.store.engine import sync_url
from tests.conftest import Plane, manifest_text
from tests.helpers.api import approve, cancel, expect_code, get_run, register, reject, submit
from tests.helpers.client import Client

Code = grpc.StatusCode


@dataclass
class World:
    plane: Plane
    admin: Client
    viewer: Client
    alice: Client  # submitter
    bob: Client  # approver
    carol: Client  # approver
    approved: str  # a high-risk run approved by bob (queued)
    rejected: str  # rejected by carol
    cancelled: str  # a low-risk run, cancelled
    critical: str  # a critical run approved by bob and carol


@pytest.fixture
def db(plane: Plane) -> Iterator[sa.Engine]:
    url = sync_url(plane.url)
    # SQLite: wait for the control plane's writer (its sweeps write too) rather than fail.
    engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    yield engine
    engine.dispose()


async def make_world(plane: Plane) -> World:
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    await register(admin, manifest_text("risky", risk="high"))
    await register(admin, manifest_text("crit", risk="critical"))
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    carol = await plane.key("carol", "approver")
    viewer = await plane.key("vera", "viewer")
    approved = (await submit(alice, "risky", "approve me")).run.id
    await approve(bob, approved, "looks fine")
    rejected = (await submit(alice, "risky", "reject me")).run.id
    await reject(carol, rejected, "no")
    cancelled = (await submit(alice, "echo", "cancel me")).run.id
    await cancel(alice, cancelled, "changed my mind")
    critical = (await submit(alice, "crit", "two approvers")).run.id
    await approve(bob, critical)
    await approve(carol, critical, "second")
    return World(plane, admin, viewer, alice, bob, carol, approved, rejected, cancelled, critical)


async def verify(c: Client, run_id: str = "") -> aus.VerifyAuditTrailResponse:
    return await c.audit.VerifyAuditTrail(aus.VerifyAuditTrailRequest(run_id=run_id),
                                          metadata=c.md)


def _sql(db: sa.Engine, statement: str, params: dict[str, Any]) -> None:
    with db.begin() as conn:
        assert conn.execute(sa.text(statement), params).rowcount >= 1, statement


def _one(db: sa.Engine, statement: str, params: dict[str, Any]) -> Any:
    with db.connect() as conn:
        return conn.execute(sa.text(statement), params).one()


# In a thread: a blocking call on the event loop would stall the control plane in the middle
# of its own SQLite transaction, and the two would wait for each other.
async def sql(db: sa.Engine, statement: str, **params: Any) -> None:
    await asyncio.to_thread(_sql, db, statement, params)


async def one(db: sa.Engine, statement: str, **params: Any) -> Any:
    return await asyncio.to_thread(_one, db, statement, params)


async def test_untouched_trail_verifies_and_runs_carry_their_digests(plane: Plane) -> None:
    w = await make_world(plane)
    for who in (w.admin, w.viewer):
        v = await verify(who)
        assert v.ok, v.problem
        assert v.runs_checked == 4 and v.records_checked >= 4 * 3
        assert len(v.chain_digest) == 64
    again = await verify(w.admin)
    assert again.chain_digest == v.chain_digest  # nothing changed: the same heads
    run = await get_run(w.alice, w.approved)
    # Independently: the input {"text": "approve me"} in canonical JSON.
    assert run.input_sha256 == hashlib.sha256(b'{"text":"approve me"}').hexdigest()
    assert run.output_sha256 == "" and run.logs_sha256 == ""
    assert len(run.action_digest) == 64 and run.chain_sequence >= 4
    a = (await w.bob.approvals.GetApproval(aps.GetApprovalRequest(run_id=w.approved),
                                          metadata=w.bob.md)).approval
    assert a.action_digest == run.action_digest
    assert [d.action_digest for d in a.decisions] == [run.action_digest]
    # A new run moves the digest.
    await submit(w.alice, "echo", "one more")
    assert (await verify(w.admin)).chain_digest != v.chain_digest


async def test_action_digest_covers_what_decides_the_run(plane: Plane) -> None:
    w = await make_world(plane)
    run = await get_run(w.alice, w.approved)
    from agents.limits import Limits

    limits = Limits(**{f.name: getattr(run.limits, f.name) for f in run.limits.DESCRIPTOR.fields})
    expected = action_digest(agent="risky", version="1.0.0", image="localhost/airlock/echo:1",
                             capability="echo", input_json='{"text": "approve me"}',
                             limits=limits, network=False, secrets=[], entrypoint=None)
    assert run.action_digest == expected
    # Only a different action changes it: spacing of the input does not.
    same = (await w.alice.runs.SubmitRun(rs.SubmitRunRequest(
        agent="risky", capability="echo", input_json='{ "text" :"approve me" }'),
        metadata=w.alice.md)).run
    assert same.action_digest == run.action_digest and same.input_sha256 == run.input_sha256
    other = (await submit(w.alice, "risky", "approve you")).run
    assert other.action_digest != run.action_digest


async def test_approval_names_the_digest_it_was_given_for(plane: Plane) -> None:
    w = await make_world(plane)
    run = (await submit(w.alice, "risky", "check my digest")).run
    err = await expect_code(w.bob.approvals.Approve(aps.ApproveRequest(
        run_id=run.id, action_digest="0" * 64), metadata=w.bob.md), Code.FAILED_PRECONDITION)
    assert run.action_digest in err.details()
    await expect_code(w.bob.approvals.Approve(aps.ApproveRequest(
        run_id=run.id, action_digest="nope"), metadata=w.bob.md), Code.INVALID_ARGUMENT)
    ok = await w.bob.approvals.Approve(aps.ApproveRequest(
        run_id=run.id, action_digest="sha256:" + run.action_digest), metadata=w.bob.md)
    assert ok.approval.status == 2  # approved
    assert (await verify(w.admin)).ok


async def test_changed_approver_is_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    await sql(db, "UPDATE approval_decisions SET approver = 'mallory' WHERE run_id = :r", r=w.approved)
    (did,) = await one(db, "SELECT id FROM approval_decisions WHERE run_id = :r", r=w.approved)
    v = await verify(w.admin)
    assert not v.ok
    assert v.problem.run_id == w.approved
    assert v.problem.record.startswith(f"approval_decisions #{did} ")
    assert "mallory" in v.problem.record
    # Changing the chained record as well breaks the chain instead.
    await sql(db, "UPDATE audit_log SET actor = 'mallory' WHERE target = :r AND action = "
            "'approval.approve'", r=w.approved)
    (aid,) = await one(db, "SELECT id FROM audit_log WHERE target = :r AND action = 'approval.approve'",
                 r=w.approved)
    v = await verify(w.admin)
    assert v.problem.record.startswith(f"audit_log #{aid} ")
    assert "hash does not match" in v.problem.problem


async def test_changed_input_after_approval_is_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    await sql(db, "UPDATE runs SET input_json = :i WHERE id = :r", i='{"text":"rm -rf /"}', r=w.approved)
    v = await verify(w.admin)
    assert (v.problem.record, v.problem.run_id) == (f"runs {w.approved}", w.approved)
    assert "input" in v.problem.problem
    # Recomputing the run's digests too does not help: the chained submit event attests them.
    changed = '{"text":"rm -rf /"}'
    digest = hashlib.sha256(canonical_json(json.loads(changed))).hexdigest()
    await sql(db, "UPDATE runs SET input_sha256 = :d WHERE id = :r", d=digest, r=w.approved)
    v = await verify(w.admin, w.approved)
    assert v.problem.record == f"runs {w.approved}" and not v.ok


async def test_deleted_event_is_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    # The approved run: event 1 (PENDING_APPROVAL), 2 (QUEUED). Delete the first.
    (eid, pos) = await one(db, "SELECT id, chain_seq FROM run_events WHERE run_id = :r AND seq = 1",
                     r=w.approved)
    await sql(db, "DELETE FROM run_events WHERE id = :e", e=eid)
    v = await verify(w.admin)
    assert v.problem.run_id == w.approved
    assert f"position {pos + 1})" in v.problem.record  # the record after the gap
    assert f"position {pos} is missing" in v.problem.problem


async def test_deleted_newest_event_is_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    # The approved run's chain ends with its QUEUED event (after the decision's record).
    (last, head) = await one(db, "SELECT last_seq, chain_seq FROM runs WHERE id = :r",
                             r=w.approved)
    (pos,) = await one(db, "SELECT chain_seq FROM run_events WHERE run_id = :r AND seq = :s",
                       r=w.approved, s=last)
    assert pos == head
    await sql(db, "DELETE FROM run_events WHERE run_id = :r AND seq = :s", r=w.approved, s=last)
    v = await verify(w.admin)
    assert v.problem.record == f"runs {w.approved} (chain head)"
    assert "records at its end were removed" in v.problem.problem


async def test_reordered_events_are_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    rows = {}
    with db.connect() as conn:
        for r in conn.execute(sa.text("SELECT id, seq, chain_seq FROM run_events WHERE run_id = "
                                      ":r ORDER BY seq"), {"r": w.approved}):
            rows[r.seq] = r
    first, second = rows[1], rows[2]
    # Swap their places (numbers and positions), through a free number (unique per run).
    await sql(db, "UPDATE run_events SET seq = 999 WHERE id = :e", e=first.id)
    await sql(db, "UPDATE run_events SET seq = :s, chain_seq = :c WHERE id = :e",
        s=first.seq, c=first.chain_seq, e=second.id)
    await sql(db, "UPDATE run_events SET seq = :s, chain_seq = :c WHERE id = :e",
        s=second.seq, c=second.chain_seq, e=first.id)
    v = await verify(w.admin)
    assert v.problem.run_id == w.approved
    assert v.problem.record.startswith("run_events #")
    assert f"run {w.approved}" in v.problem.record


async def test_changed_key_audit_record_is_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    (aid,) = await one(db, "SELECT id FROM audit_log WHERE action = 'key.create' ORDER BY id LIMIT 1")
    await sql(db, "UPDATE audit_log SET details = :d WHERE id = :a", d='{"role": "viewer"}', a=aid)
    v = await verify(w.admin)
    assert v.problem.record.startswith(f"audit_log #{aid} (key.create")
    assert v.problem.run_id == ""


async def test_deleted_run_is_named(plane: Plane, db: sa.Engine) -> None:
    w = await make_world(plane)
    for table, col in (("run_events", "run_id"), ("approval_decisions", "run_id"),
                       ("approvals", "run_id"), ("runs", "id")):
        await sql(db, f"DELETE FROM {table} WHERE {col} = :r", r=w.rejected)
    v = await verify(w.admin)
    assert v.problem.run_id == w.rejected
    assert "is gone" in v.problem.problem


async def test_list_audit_records_filters(plane: Plane) -> None:
    w = await make_world(plane)
    got = await w.viewer.audit.ListAuditRecords(aus.ListAuditRecordsRequest(target=w.critical),
                                                metadata=w.viewer.md)
    assert [(r.action, r.actor) for r in got.records] == [
        ("run.submit", "alice"), ("approval.approve", "bob"), ("approval.approve", "carol")]
    assert all(r.chain == f"run:{w.critical}" and len(r.hash) == 64 for r in got.records)
    assert json.loads(got.records[2].details_json)["reason"] == "second"
    bob = await w.viewer.audit.ListAuditRecords(aus.ListAuditRecordsRequest(actor="bob"),
                                                metadata=w.viewer.md)
    assert {r.target for r in bob.records} == {w.approved, w.critical}
    page = await w.admin.audit.ListAuditRecords(aus.ListAuditRecordsRequest(page_size=2),
                                                metadata=w.admin.md)
    assert len(page.records) == 2 and page.next_page_token
    rest = await w.admin.audit.ListAuditRecords(aus.ListAuditRecordsRequest(
        page_size=200, page_token=page.next_page_token), metadata=w.admin.md)
    assert rest.records[0].id > page.records[-1].id
    first = got.records[0].time
    later = await w.admin.audit.ListAuditRecords(aus.ListAuditRecordsRequest(
        target=w.critical, since=got.records[1].time), metadata=w.admin.md)
    assert [r.actor for r in later.records] == ["bob", "carol"]
    err = await expect_code(w.admin.audit.ListAuditRecords(aus.ListAuditRecordsRequest(
        since=got.records[1].time, until=first), metadata=w.admin.md), Code.INVALID_ARGUMENT)
    assert "until" in err.details()


async def test_concurrent_submitters_and_approvers_leave_a_chain_that_verifies(
        plane: Plane) -> None:
    admin = plane.admin
    await register(admin, manifest_text("risky", risk="high"))
    await register(admin, manifest_text("echo"))
    submitters = [await plane.key(f"sub{i}", "submitter") for i in range(25)]
    approvers = [await plane.key(f"app{i}", "approver") for i in range(25)]
    pending: asyncio.Queue[str] = asyncio.Queue()

    async def submitter(c: Client) -> None:
        for i in range(4):
            run = (await submit(c, "risky" if i % 2 == 0 else "echo", f"{c.owner} {i}")).run
            if i % 2 == 0:
                await pending.put(run.id)

    async def approver(c: Client) -> None:
        for _ in range(2):
            run_id = await pending.get()
            await approve(c, run_id, f"by {c.owner}")

    await asyncio.gather(*(submitter(c) for c in submitters), *(approver(c) for c in approvers))
    v = await verify(admin)
    assert v.ok, v.problem
    assert v.runs_checked == 100


async def test_migration_digests_and_chains_rows_written_before_it(db_url: str) -> None:
    """Rows written before i15_audit_trail: taken down to the revision before it (the chain
    columns dropped) and up again, they are digested and chained in write order, and verify."""
    from datetime import timedelta

    from server.domain.models import AttemptResult
    from server.domain.states import RunState
    from server.store.migrate import downgrade, upgrade
    from tests.conftest import start_plane

    plane = await start_plane(db_url)
    try:
        w = await make_world(plane)
        store = plane.cp.store
        now = plane.cp.clock()
        async with store.transaction() as tx:  # the approved run runs and succeeds
            run = await tx.runs.get(w.approved, lock=True)
            assert run is not None
            run = await tx.runs.lease(run, executor_id="ex-1", now=now,
                                      until=now + timedelta(seconds=30))
            await tx.runs.record_outcome(run, RunState.SUCCEEDED, reason="done", actor="ex-1",
                                         now=now, result=AttemptResult(
                                             output_json='{"b": 1.0, "a": [1, "x"]}',
                                             logs=b"line\n"))
        before = {r: await get_run(w.alice, r) for r in (w.approved, w.rejected, w.critical)}
        token = plane.cp.admin_token
    finally:
        await plane.close()
    await asyncio.to_thread(downgrade, db_url, "i15_audit_trail-1")
    await asyncio.to_thread(upgrade, db_url)
    plane = await start_plane(db_url)
    try:
        admin = plane.client(token, "admin")
        v = await verify(admin)
        assert v.ok, v.problem
        assert v.runs_checked == 4
        for run_id, old in before.items():
            new = await get_run(admin, run_id)
            assert (new.action_digest, new.input_sha256) == (old.action_digest, old.input_sha256)
            assert new.chain_sequence == old.chain_sequence and new.chain_head
        done = await get_run(admin, w.approved)
        assert done.output_sha256 == hashlib.sha256(b'{"a":[1,"x"],"b":1}').hexdigest()
        assert done.logs_sha256 == hashlib.sha256(b"line\n").hexdigest()
    finally:
        await plane.close()


async def test_workflow_records_are_on_their_own_chain(plane: Plane, db: sa.Engine) -> None:
    """A workflow's audit records chain per workflow (no global lock for its writers); its
    step runs carry digests; an edited workflow record is named."""
    from tests.helpers.workflows import approve_workflow, spec, step, submit_workflow

    w = await make_world(plane)
    flow = (await submit_workflow(w.alice, spec(step("a", "risky", "echo", {"text": "x"}),
                                                step("b", "echo", "echo", {"text": "y"},
                                                     after=("a",))))).workflow
    await approve_workflow(w.bob, flow.id)
    records = await w.viewer.audit.ListAuditRecords(aus.ListAuditRecordsRequest(target=flow.id),
                                                    metadata=w.viewer.md)
    assert [r.action for r in records.records] == ["workflow.submit", "workflow.approve"]
    assert {r.chain for r in records.records} == {f"workflow:{flow.id}"}
    assert [r.chain_sequence for r in records.records] == [1, 2]
    v = await verify(w.admin)
    assert v.ok, v.problem
    assert v.runs_checked == 5  # make_world's four, and the workflow's first step
    (aid,) = await one(db, "SELECT id FROM audit_log WHERE action = 'workflow.approve'")
    await sql(db, "UPDATE audit_log SET actor = 'mallory' WHERE id = :a", a=aid)
    v = await verify(w.admin)
    assert v.problem.record.startswith(f"audit_log #{aid} (workflow.approve")
