"""Runs and approvals end to end over a real gRPC channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_pb2 as ap
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_pb2 as rp
from airlock.v1 import run_service_pb2 as rs
from server.domain.states import RunState
from server.store.notify import RUN_EVENTS
from tests.conftest import Plane, manifest_text, start_plane, test_policy
from tests.helpers.api import (
    approve,
    audit,
    cancel,
    expect_code,
    get_run,
    register,
    reject,
    stored_approval,
    stored_events,
    submit,
)
from tests.helpers.client import Client
from tests.helpers.clock import ManualClock
from tests.helpers.wait import assert_eventually, wait_for_condition

Code = grpc.StatusCode


@dataclass
class World:
    plane: Plane
    admin: Client
    alice: Client  # submitter
    bob: Client  # approver
    carol: Client  # approver
    dave_submitter: Client  # one owner with two keys
    dave_approver: Client


async def make_world(plane: Plane) -> World:
    admin = plane.admin
    await register(admin, manifest_text("echo", network=True))
    await register(admin, manifest_text("risky", risk="high"))
    await register(admin, manifest_text("crit", risk="critical"))
    return World(
        plane,
        admin,
        await plane.key("alice", "submitter"),
        await plane.key("bob", "approver"),
        await plane.key("carol", "approver"),
        await plane.key("dave", "submitter"),
        await plane.key("dave", "approver"),
    )


@pytest.fixture
async def world(plane: Plane) -> World:
    return await make_world(plane)


async def test_low_risk_is_queued(world: World) -> None:
    resp = await submit(world.alice)
    run = resp.run
    assert run.state == rp.RUN_STATE_QUEUED
    assert run.submitter == "alice"
    assert not resp.deduplicated
    assert run.last_sequence == 1
    assert "auto-approved" in run.reason
    await expect_code(
        world.alice.approvals.GetApproval(
            aps.GetApprovalRequest(run_id=run.id), metadata=world.alice.md
        ),
        Code.NOT_FOUND,
    )


@pytest.mark.parametrize("how", ["declared", "network"])
async def test_high_risk_needs_one_approval(world: World, how: str) -> None:
    resp = await (
        submit(world.alice, "risky")
        if how == "declared"
        else submit(world.alice, "echo", network=True)
    )
    run = resp.run
    assert run.state == rp.RUN_STATE_PENDING_APPROVAL
    assert run.effective_risk == 3  # RISK_HIGH
    if how == "network":
        assert any("network" in r for r in run.risk_reasons), run.risk_reasons
    approval = (await approve(world.bob, run.id, "looks fine")).approval
    assert approval.status == ap.APPROVAL_STATUS_APPROVED
    assert approval.required == 1 and approval.approvals == 1
    assert [(d.approver, d.verdict, d.reason) for d in approval.decisions] == [
        ("bob", ap.VERDICT_APPROVE, "looks fine")
    ]
    assert approval.decisions[0].decide_time.seconds > 0
    after = await get_run(world.alice, run.id)
    assert after.state == rp.RUN_STATE_QUEUED
    assert "bob" in after.reason
    events = await stored_events(world.plane.cp.store, run.id)
    assert [e.state for e in events] == [RunState.PENDING_APPROVAL, RunState.QUEUED]
    assert events[1].actor == "bob"


async def test_critical_needs_two_distinct_approvers(world: World) -> None:
    store = world.plane.cp.store
    run = (await submit(world.alice, "crit")).run
    assert run.state == rp.RUN_STATE_PENDING_APPROVAL
    first = (await approve(world.bob, run.id)).approval
    assert (
        first.status == ap.APPROVAL_STATUS_PENDING and first.approvals == 1 and first.required == 2
    )

    err = await expect_code(approve(world.bob, run.id), Code.FAILED_PRECONDITION)
    assert "already decided" in err.details()
    a = await stored_approval(store, run.id)
    assert a is not None and a.status == "pending" and a.approvals == 1 and len(a.decisions) == 1
    assert (await get_run(world.alice, run.id)).state == rp.RUN_STATE_PENDING_APPROVAL
    # The same approver may not turn its approval into a rejection either.
    await expect_code(reject(world.bob, run.id, "changed my mind"), Code.FAILED_PRECONDITION)

    second = (await approve(world.carol, run.id)).approval
    assert second.status == ap.APPROVAL_STATUS_APPROVED and second.approvals == 2
    assert sorted(d.approver for d in second.decisions) == ["bob", "carol"]
    assert (await get_run(world.alice, run.id)).state == rp.RUN_STATE_QUEUED
    # Closed: no third decision.
    await expect_code(approve(world.admin, run.id), Code.FAILED_PRECONDITION)
    events = await stored_events(store, run.id)
    assert [e.state for e in events] == [RunState.PENDING_APPROVAL, RunState.QUEUED]


async def test_self_approval_refused_and_nothing_recorded(world: World) -> None:
    store = world.plane.cp.store
    run = (await submit(world.dave_submitter, "risky")).run
    audit_before = await audit(store, run.id)
    for call in (
        approve(world.dave_approver, run.id, "mine"),
        reject(world.dave_approver, run.id, "mine"),
    ):
        err = await expect_code(call, Code.PERMISSION_DENIED)
        assert "dave" in err.details()
    a = await stored_approval(store, run.id)
    assert a is not None and a.status == "pending" and a.decisions == () and a.version == 0
    after = await get_run(world.dave_submitter, run.id)
    assert after.state == rp.RUN_STATE_PENDING_APPROVAL and after.last_sequence == 1
    assert await audit(store, run.id) == audit_before
    # The approvers' actionable list hides the approver's own runs.
    listed = await world.dave_approver.approvals.ListApprovals(
        aps.ListApprovalsRequest(actionable_only=True), metadata=world.dave_approver.md
    )
    assert run.id not in [x.run_id for x in listed.approvals]
    listed = await world.bob.approvals.ListApprovals(
        aps.ListApprovalsRequest(actionable_only=True), metadata=world.bob.md
    )
    assert run.id in [x.run_id for x in listed.approvals]


async def test_rejection_requires_reason(world: World) -> None:
    store = world.plane.cp.store
    run = (await submit(world.alice, "risky")).run
    for blank in ("", "   "):
        err = await expect_code(reject(world.bob, run.id, blank), Code.INVALID_ARGUMENT)
        assert err.details().startswith("reason:"), err.details()
    a = await stored_approval(store, run.id)
    assert a is not None and a.decisions == ()

    approval = (await reject(world.bob, run.id, "touches prod data")).approval
    assert approval.status == ap.APPROVAL_STATUS_REJECTED
    assert [(d.approver, d.verdict, d.reason) for d in approval.decisions] == [
        ("bob", ap.VERDICT_REJECT, "touches prod data")
    ]
    after = await get_run(world.alice, run.id)
    assert after.state == rp.RUN_STATE_REJECTED
    assert "touches prod data" in after.reason and "bob" in after.reason
    assert after.finish_time.seconds > 0
    got = await world.alice.approvals.GetApproval(
        aps.GetApprovalRequest(run_id=run.id), metadata=world.alice.md
    )
    assert got.approval.decisions[0].reason == "touches prod data"
    # Closed: neither approve nor reject any more.
    await expect_code(approve(world.carol, run.id), Code.FAILED_PRECONDITION)
    await expect_code(reject(world.carol, run.id, "also no"), Code.FAILED_PRECONDITION)


async def test_unknown_run_is_not_found(world: World) -> None:
    missing = "run_" + "0" * 26
    await expect_code(approve(world.bob, missing), Code.NOT_FOUND)
    await expect_code(reject(world.bob, missing, "x"), Code.NOT_FOUND)
    await expect_code(cancel(world.alice, missing), Code.NOT_FOUND)
    await expect_code(get_run(world.alice, missing), Code.NOT_FOUND)
    low = (await submit(world.alice)).run  # exists but needs no approval
    # An approver sees runs that asked for approval (and its own): to bob this one is unknown.
    err = await expect_code(approve(world.bob, low.id), Code.NOT_FOUND)
    assert err.details() == f"run {low.id!r} not found"
    err = await expect_code(approve(world.admin, low.id), Code.NOT_FOUND)  # sees every run
    assert "no approval" in err.details()


async def test_expiry_after_ttl(db_url: str) -> None:
    plane = await start_plane(db_url, policy=test_policy(ttl=0.5))
    try:
        w = await make_world(plane)
        run = (await submit(w.alice, "risky")).run
        crit = (await submit(w.alice, "crit")).run
        await approve(w.bob, crit.id)  # one of two: still expires
        for rid in (run.id, crit.id):
            got = await assert_eventually(
                lambda rid=rid: get_run(w.alice, rid),
                lambda r: r.state == rp.RUN_STATE_EXPIRED,
                timeout=10,
                what=f"{rid} EXPIRED",
            )
            assert got.finish_time.seconds > 0
        err = await expect_code(approve(w.carol, run.id), Code.FAILED_PRECONDITION)
        assert "expired" in err.details()
        await expect_code(approve(w.carol, crit.id), Code.FAILED_PRECONDITION)
        await expect_code(reject(w.carol, run.id, "late"), Code.FAILED_PRECONDITION)
        a = await stored_approval(plane.cp.store, crit.id)
        assert a is not None and a.status == "expired" and a.approvals == 1
        events = await stored_events(plane.cp.store, run.id)
        assert [(e.state, e.actor) for e in events] == [
            (RunState.PENDING_APPROVAL, "alice"),
            (RunState.EXPIRED, "system"),
        ]
        assert [e.action for e in await audit(plane.cp.store, run.id)] == [
            "run.submit",
            "approval.expire",
        ]
    finally:
        await plane.close()


async def test_expired_not_approved_even_before_sweep(db_url: str) -> None:
    """A decision after the deadline is refused even if no sweep has run yet."""
    clock = ManualClock()
    plane = await start_plane(db_url, policy=test_policy(ttl=300), expiry_sweep_seconds=3600,
                              clock=clock)
    try:
        w = await make_world(plane)
        run = (await submit(w.alice, "risky")).run
        clock.advance(301)  # past the deadline; the sweeper sleeps for an hour
        await expect_code(approve(w.bob, run.id), Code.FAILED_PRECONDITION)
        assert (await get_run(w.alice, run.id)).state == rp.RUN_STATE_EXPIRED
        a = await stored_approval(plane.cp.store, run.id)
        assert a is not None and a.status == "expired" and a.decisions == ()
    finally:
        await plane.close()


async def test_expiry_across_restart(db_url: str) -> None:
    ttl = 300.0
    clock = ManualClock()
    plane = await start_plane(db_url, policy=test_policy(ttl=ttl), expiry_sweep_seconds=3600,
                              clock=clock)
    try:
        w = await make_world(plane)
        run = (await submit(w.alice, "risky")).run
    finally:
        await plane.close()
    clock.advance(ttl + 1)  # the deadline passes while no control plane runs
    # The new plane's sweeper sleeps for an hour: only the start-up sweep can expire the run.
    plane2 = await start_plane(db_url, policy=test_policy(ttl=ttl), expiry_sweep_seconds=3600,
                               clock=clock)
    try:
        alice = plane2.client(w.alice.token, "alice")  # keys live in the database
        got = await get_run(alice, run.id)
        assert got.state == rp.RUN_STATE_EXPIRED
        a = await stored_approval(plane2.cp.store, run.id)
        assert a is not None and a.status == "expired"
    finally:
        await plane2.close()


async def test_idempotent_submit(world: World) -> None:
    store = world.plane.cp.store
    first = await submit(world.alice, "risky", text="a", idempotency_key="order-42")
    assert not first.deduplicated
    again = await submit(world.alice, "risky", text="a", idempotency_key="order-42")
    assert again.deduplicated and again.run.id == first.run.id
    assert again.run.idempotency_key == "order-42"

    err = await expect_code(
        submit(world.alice, "risky", text="b", idempotency_key="order-42"), Code.ALREADY_EXISTS
    )
    assert "idempotency_key" in err.details() and first.run.id in err.details()
    await expect_code(
        submit(world.alice, "echo", text="a", idempotency_key="order-42"), Code.ALREADY_EXISTS
    )
    original = await get_run(world.alice, first.run.id)
    assert original.input_json == '{"text":"a"}'
    assert original.state == rp.RUN_STATE_PENDING_APPROVAL and original.last_sequence == 1
    async with store.read() as tx:
        assert await tx.runs.count() == 1
        assert await tx.approvals.count() == 1
    # Keys are per submitter: another owner may use the same key for its own run.
    other = await submit(world.dave_submitter, "risky", text="b", idempotency_key="order-42")
    assert not other.deduplicated and other.run.id != first.run.id


async def test_cancel_in_pending_queued_and_running(world: World) -> None:
    store = world.plane.cp.store
    pending = (await submit(world.alice, "risky")).run
    cancelled = (await cancel(world.alice, pending.id, "not needed")).run
    assert cancelled.state == rp.RUN_STATE_CANCELLED and "not needed" in cancelled.reason
    a = await stored_approval(store, pending.id)
    assert a is not None and a.status == "cancelled"
    await expect_code(approve(world.bob, pending.id), Code.FAILED_PRECONDITION)

    queued = (await submit(world.alice)).run
    assert (await cancel(world.alice, queued.id)).run.state == rp.RUN_STATE_CANCELLED

    running = (await submit(world.alice)).run
    now = world.plane.cp.clock()
    async with store.transaction() as tx:
        r = await tx.runs.get(running.id, lock=True)
        assert r is not None
        await tx.runs.lease(r, executor_id="x", until=now + timedelta(seconds=30), now=now)
    got = (await cancel(world.alice, running.id, "stop")).run
    assert got.state == rp.RUN_STATE_RUNNING and got.cancel_requested
    # Asking again while the executor has not yet stopped it is harmless.
    assert (await cancel(world.alice, running.id)).run.cancel_requested

    # Only the submitter (or an admin) may cancel; another owner's run is not even found.
    other = (await submit(world.alice)).run
    await expect_code(cancel(world.dave_submitter, other.id), Code.NOT_FOUND)
    assert (await cancel(world.admin, other.id)).run.state == rp.RUN_STATE_CANCELLED

    for rid in (pending.id, queued.id):
        events = await stored_events(store, rid)
        assert events[-1].state is RunState.CANCELLED
        actions = [e.action for e in await audit(store, rid)]
        assert actions == ["run.submit", "run.cancel"]


async def test_cancel_refused_in_terminal_states(world: World) -> None:
    store = world.plane.cp.store
    runs: dict[str, str] = {}
    runs["cancelled"] = (await submit(world.alice)).run.id
    await cancel(world.alice, runs["cancelled"])
    runs["rejected"] = (await submit(world.alice, "risky")).run.id
    await reject(world.bob, runs["rejected"], "no")
    runs["succeeded"] = (await submit(world.alice)).run.id
    now = world.plane.cp.clock()
    async with store.transaction() as tx:
        r = await tx.runs.get(runs["succeeded"], lock=True)
        assert r is not None
        r = await tx.runs.lease(r, executor_id="x", until=now + timedelta(seconds=30), now=now)
        await tx.runs.transition(r, RunState.SUCCEEDED, reason="exit 0", actor="x", now=now)
    for what, rid in runs.items():
        before = await get_run(world.alice, rid)
        err = await expect_code(cancel(world.alice, rid), Code.FAILED_PRECONDITION)
        assert "CANCELLED" in err.details(), (what, err.details())
        after = await get_run(world.alice, rid)
        assert after.state == before.state and after.last_sequence == before.last_sequence


async def _watch(client: Client, run_id: str, from_seq: int) -> list[rp.RunEvent]:
    call = client.runs.WatchRun(
        rs.WatchRunRequest(run_id=run_id, from_sequence=from_seq), metadata=client.md, timeout=15
    )
    return [m.event async for m in call]


async def _watching(world: World, n: int) -> None:
    """Until ``n`` WatchRun streams are live, waiting on the server for the next commit."""
    notifier = world.plane.cp.store.notifier
    await wait_for_condition(lambda: notifier.waiting(RUN_EVENTS) >= n, what=f"{n} live watcher(s)")


async def test_watch_run_streams_gapless_and_ends(world: World) -> None:
    run = (await submit(world.alice, "crit")).run
    # A watcher that joins while the run is pending sees every later event live.
    live = asyncio.create_task(_watch(world.alice, run.id, 0))
    await _watching(world, 1)  # the stream has sent event 1 and waits for the next commit
    await approve(world.bob, run.id)
    await approve(world.carol, run.id)
    await cancel(world.alice, run.id, "enough")
    events = await asyncio.wait_for(live, 10)
    assert [e.sequence for e in events] == [1, 2, 3]
    assert [e.state for e in events] == [
        rp.RUN_STATE_PENDING_APPROVAL,
        rp.RUN_STATE_QUEUED,
        rp.RUN_STATE_CANCELLED,
    ]
    assert [e.previous_state for e in events] == [
        rp.RUN_STATE_UNSPECIFIED,
        rp.RUN_STATE_PENDING_APPROVAL,
        rp.RUN_STATE_QUEUED,
    ]
    assert [e.id for e in events] == [f"{run.id}.{n}" for n in (1, 2, 3)]
    assert all(e.run_id == run.id and e.agent == "crit" and e.capability == "echo" for e in events)
    assert events[1].actor == "carol" and events[2].actor == "alice"

    assert [e.sequence for e in await _watch(world.alice, run.id, 1)] == [1, 2, 3]
    assert [e.sequence for e in await _watch(world.bob, run.id, 2)] == [2, 3]
    assert [e.sequence for e in await _watch(world.bob, run.id, 3)] == [3]
    # Starting after the terminal event: the stream just ends.
    assert await _watch(world.bob, run.id, 4) == []
    await expect_code(_watch(world.bob, run.id, -1), Code.INVALID_ARGUMENT)
    await expect_code(_watch(world.bob, "run_" + "0" * 26, 0), Code.NOT_FOUND)


async def test_watch_run_waits_for_future_sequence(world: World) -> None:
    run = (await submit(world.alice, "risky")).run
    live = asyncio.create_task(_watch(world.alice, run.id, 2))
    await _watching(world, 1)  # open, nothing to send yet: waiting for sequence 2
    assert not live.done()
    await reject(world.bob, run.id, "nope")
    events = await asyncio.wait_for(live, 10)
    assert [(e.sequence, e.state) for e in events] == [(2, rp.RUN_STATE_REJECTED)]


async def test_audit_log_covers_registry_and_decisions(world: World) -> None:
    store = world.plane.cp.store
    register_rows = await audit(store, "echo@1.0.0")
    assert [(r.action, r.actor) for r in register_rows] == [
        ("agent.version.register", "admin")
    ]
    await world.admin.registry.DeprecateAgentVersion(
        reg.DeprecateAgentVersionRequest(name="echo", version="1.0.0", reason="old"),
        metadata=world.admin.md,
    )
    rows = await audit(store, "echo@1.0.0")
    assert [r.action for r in rows] == ["agent.version.register", "agent.version.deprecate"]
    assert rows[1].details == {"reason": "old"}

    approved = (await submit(world.alice, "crit")).run
    await approve(world.bob, approved.id, "ok 1")
    await approve(world.carol, approved.id, "ok 2")
    rejected = (await submit(world.alice, "risky")).run
    await reject(world.bob, rejected.id, "too broad")
    rows = await audit(store, approved.id)
    assert [(r.action, r.actor) for r in rows] == [
        ("run.submit", "alice"),
        ("approval.approve", "bob"),
        ("approval.approve", "carol"),
    ]
    assert [r.details.get("reason") for r in rows[1:]] == ["ok 1", "ok 2"]
    assert all(r.at is not None for r in rows)
    rows = await audit(store, rejected.id)
    assert [(r.action, r.actor, r.details.get("reason")) for r in rows] == [
        ("run.submit", "alice", None),
        ("approval.reject", "bob", "too broad"),
    ]

    key = await world.admin.admin.ListApiKeys(adm.ListApiKeysRequest(), metadata=world.admin.md)
    bob_key = next(k for k in key.keys if k.owner == "bob")
    assert [r.action for r in await audit(store, bob_key.id)] == ["key.create"]


async def test_list_pagination_walks_every_page(world: World) -> None:
    admin = world.admin
    for i in range(7):
        await register(admin, manifest_text(f"page-{i}"))
    names: list[str] = []
    token, pages = "", 0
    while True:
        resp = await admin.registry.ListAgents(
            reg.ListAgentsRequest(page_size=3, page_token=token), metadata=admin.md
        )
        names += [a.name for a in resp.agents]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert len(names) == len(set(names)) == 10
    assert names == sorted(names) and pages == 4
    prefixed = await admin.registry.ListAgents(
        reg.ListAgentsRequest(name_prefix="page-"), metadata=admin.md
    )
    assert [a.name for a in prefixed.agents] == [f"page-{i}" for i in range(7)]

    submitted = [
        (await submit(world.alice, f"page-{i % 7}", text=str(i))).run.id for i in range(11)
    ]
    submitted += [(await submit(world.dave_submitter, "risky")).run.id]
    seen: list[str] = []
    token = ""
    while True:
        resp = await world.admin.runs.ListRuns(
            rs.ListRunsRequest(page_size=2, page_token=token), metadata=world.admin.md
        )
        assert len(resp.runs) <= 2
        seen += [r.id for r in resp.runs]
        token = resp.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 12 and set(seen) == set(submitted)
    assert seen == sorted(seen, reverse=True)  # newest first
    mine = await world.admin.runs.ListRuns(
        rs.ListRunsRequest(submitter="dave"), metadata=world.admin.md
    )
    assert [r.id for r in mine.runs] == submitted[-1:]
    pending = await world.admin.runs.ListRuns(
        rs.ListRunsRequest(states=[rp.RUN_STATE_PENDING_APPROVAL]), metadata=world.admin.md
    )
    assert [r.id for r in pending.runs] == submitted[-1:]
    by_agent = await world.admin.runs.ListRuns(
        rs.ListRunsRequest(agent="page-0"), metadata=world.admin.md
    )
    assert sorted(r.id for r in by_agent.runs) == sorted(submitted[i] for i in (0, 7))
    await expect_code(
        world.admin.runs.ListRuns(rs.ListRunsRequest(page_token="!!not-ours"), metadata=world.admin.md),
        Code.INVALID_ARGUMENT,
    )


async def test_approvals_pagination(world: World) -> None:
    ids = {(await submit(world.alice, "risky", text=str(i))).run.id for i in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        resp = await world.bob.approvals.ListApprovals(
            aps.ListApprovalsRequest(page_size=2, page_token=token), metadata=world.bob.md
        )
        seen += [a.run_id for a in resp.approvals]
        token = resp.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and set(seen) == ids


async def test_deprecated_version_refuses_runs_but_stays_readable(world: World) -> None:
    admin = world.admin
    await register(admin, manifest_text("echo", "2.0.0"))
    old_run = (await submit(world.alice, version="1.0.0")).run
    dep = await admin.registry.DeprecateAgentVersion(
        reg.DeprecateAgentVersionRequest(name="echo", version="1.0.0", reason="CVE-1"),
        metadata=admin.md,
    )
    assert dep.version.deprecated and dep.version.deprecation_reason == "CVE-1"

    err = await expect_code(submit(world.alice, version="1.0.0"), Code.FAILED_PRECONDITION)
    assert "deprecated" in err.details()
    latest = (await submit(world.alice)).run
    assert latest.version == "2.0.0"

    got = await world.alice.registry.GetAgentVersion(
        reg.GetAgentVersionRequest(name="echo", version="1.0.0"), metadata=world.alice.md
    )
    assert got.version.deprecated and got.version.deprecation_reason == "CVE-1"
    agent = await world.alice.registry.GetAgent(
        reg.GetAgentRequest(name="echo"), metadata=world.alice.md
    )
    assert agent.agent.latest_version == "2.0.0" and list(agent.agent.versions) == [
        "1.0.0",
        "2.0.0",
    ]
    assert (await get_run(world.alice, old_run.id)).version == "1.0.0"

    # With every version deprecated, the agent is still readable and takes no runs.
    await admin.registry.DeprecateAgentVersion(
        reg.DeprecateAgentVersionRequest(name="echo", version="2.0.0"), metadata=admin.md
    )
    err = await expect_code(submit(world.alice), Code.FAILED_PRECONDITION)
    assert "deprecated" in err.details()
    await expect_code(submit(world.alice, "nosuch"), Code.NOT_FOUND)
    agent = await world.alice.registry.GetAgent(
        reg.GetAgentRequest(name="echo"), metadata=world.alice.md
    )
    assert agent.agent.latest_version == "" and len(agent.versions) == 2


async def test_registered_versions_are_immutable(world: World) -> None:
    same = await register(world.admin, manifest_text("echo", network=True))
    assert same.version.version == "1.0.0"
    err = await expect_code(
        register(world.admin, manifest_text("echo", risk="high")), Code.ALREADY_EXISTS
    )
    assert "immutable" in err.details()
    got = await world.alice.registry.GetAgentVersion(
        reg.GetAgentVersionRequest(name="echo"), metadata=world.alice.md
    )
    assert got.version.risk == 1  # still low


async def test_get_run_result_on_queued_run(world: World) -> None:
    run = (await submit(world.alice, text="result?")).run
    res = await world.alice.runs.GetRunResult(  # the submitter reads its own run's result
        rs.GetRunResultRequest(run_id=run.id), metadata=world.alice.md
    )
    assert res.run.id == run.id and res.run.state == rp.RUN_STATE_QUEUED
    assert (
        res.output_json == "" and res.error_code == "" and res.logs == "" and not res.logs_truncated
    )
    assert res.run.input_json == '{"text":"result?"}'
