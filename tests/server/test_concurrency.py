"""Many clients at once: no run approved twice, no lost or duplicated events, one run per
idempotency key. PostgreSQL at full size, SQLite (one writer) with fewer clients."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import grpc
import pytest

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_pb2 as rp
from airlock.v1 import run_service_pb2 as rs
from server.domain.states import RunState
from server.store.notify import RUN_EVENTS
from tests.conftest import Plane, manifest_text
from tests.helpers.api import (
    approve,
    assert_gapless,
    audit,
    cancel,
    register,
    stored_approval,
    stored_events,
    submit,
    submit_request,
)
from tests.helpers.client import Client
from tests.helpers.wait import wait_for_condition

Code = grpc.StatusCode
pytestmark = pytest.mark.slow


def sizes(plane: Plane) -> tuple[int, int]:
    """(submitting clients, approvers)."""
    return (50, 5) if plane.cp.store.dialect == "postgresql" else (12, 3)


async def approver_loop(approver: Client, done: asyncio.Event, order: int) -> Counter[str]:
    """Approve every pending run it sees until told to stop; count the outcomes."""
    outcomes: Counter[str] = Counter()
    while True:
        finished = done.is_set()  # read before listing: one full pass after the last submit
        ids: list[str] = []
        token = ""
        while True:
            page = await approver.approvals.ListApprovals(
                aps.ListApprovalsRequest(page_size=50, page_token=token), metadata=approver.md
            )
            ids += [a.run_id for a in page.approvals]
            token = page.next_page_token
            if not token:
                break
        if order:
            ids.reverse()
        for run_id in ids:
            try:
                await approve(approver, run_id)
                outcomes["ok"] += 1
            except grpc.aio.AioRpcError as e:
                # Closed meanwhile, or this approver already counted: both are refusals.
                assert e.code() == Code.FAILED_PRECONDITION, (e.code(), e.details())
                outcomes[e.code().name] += 1
        if finished and not ids:
            return outcomes
        await asyncio.sleep(0.01)


async def test_concurrent_submits_and_approvals(plane: Plane) -> None:
    n_clients, n_approvers = sizes(plane)
    admin = plane.admin
    await register(admin, manifest_text("risky", risk="high"))
    await register(admin, manifest_text("crit", risk="critical"))
    clients = [await plane.key(f"user{i}", "submitter") for i in range(n_clients)]
    approvers = [await plane.key(f"approver{i}", "approver") for i in range(n_approvers)]
    watcher = await plane.key("watcher", "viewer")

    done = asyncio.Event()
    loops = [asyncio.create_task(approver_loop(a, done, i % 2)) for i, a in enumerate(approvers)]

    async def one_client(c: Client) -> list[str]:
        runs = await asyncio.gather(
            submit(c, "risky", text=c.owner), submit(c, "crit", text=c.owner)
        )
        return [r.run.id for r in runs]

    submitted = [
        rid for ids in await asyncio.gather(*(one_client(c) for c in clients)) for rid in ids
    ]
    done.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*loops), 120)
    assert len(submitted) == len(set(submitted)) == 2 * n_clients

    store = plane.cp.store
    async with store.read() as tx:
        assert await tx.runs.count() == 2 * n_clients
        runs = await tx.runs.get_many(submitted)
    approvals_made = 0
    for rid, run in runs.items():
        assert run.state is RunState.QUEUED, (rid, run.state)
        a = await stored_approval(store, rid)
        assert a is not None and a.status == "approved"
        # Exactly the quorum: no decision was counted after the approval closed.
        assert a.approvals == a.required == (1 if run.agent == "risky" else 2), (rid, a)
        assert len({d.approver for d in a.decisions}) == len(a.decisions)
        approvals_made += a.approvals
        events = await stored_events(store, rid)
        assert_gapless(events, run.last_seq)
        assert run.last_seq == 2
        assert [e.state for e in events].count(RunState.QUEUED) == 1
        assert [e.action for e in await audit(store, rid)].count(
            "approval.approve"
        ) == a.required
    assert sum(o["ok"] for o in outcomes) == approvals_made == 3 * n_clients

    # Every event reaches a watcher exactly once, in order, even when many end at once.
    sample = random.Random(7).sample(submitted, min(20, len(submitted)))

    async def watch(rid: str) -> list[int]:
        call = watcher.runs.WatchRun(
            rs.WatchRunRequest(run_id=rid), metadata=watcher.md, timeout=30
        )
        return [m.event.sequence async for m in call]

    watchers = [asyncio.create_task(watch(rid)) for rid in sample]
    # Cancel only once every stream is live (sent its history, waiting for the next commit).
    notifier = plane.cp.store.notifier
    await wait_for_condition(lambda: notifier.waiting(RUN_EVENTS) >= len(sample),
                             what="every watcher live")
    owner_of = {c.owner: c for c in clients}
    await asyncio.gather(*(cancel(owner_of[runs[rid].submitter], rid) for rid in sample))
    for seqs in await asyncio.gather(*watchers):
        assert seqs == [1, 2, 3]


async def test_idempotent_submits_race_to_one_run(plane: Plane) -> None:
    n_clients, _ = sizes(plane)
    await register(plane.admin, manifest_text("crit", risk="critical"))
    token = (
        await plane.admin.admin.CreateApiKey(
            adm.CreateApiKeyRequest(owner="racer", role=adm.ROLE_SUBMITTER), metadata=plane.admin.md
        )
    ).token
    # One owner, many channels (several replicas of the same calling service).
    racers = [plane.client(token, "racer") for _ in range(min(n_clients, 20))]
    keys = [f"order-{i}" for i in range(5)]

    async def attempt(c: Client, key: str) -> rs.SubmitRunResponse:
        return await c.runs.SubmitRun(
            submit_request("crit", text=key, idempotency_key=key), metadata=c.md
        )

    calls = [attempt(c, k) for k in keys for c in racers]
    random.Random(3).shuffle(calls)
    results = await asyncio.gather(*calls)
    by_key: dict[str, set[str]] = {}
    fresh: Counter[str] = Counter()
    for r in results:
        by_key.setdefault(r.run.idempotency_key, set()).add(r.run.id)
        if not r.deduplicated:
            fresh[r.run.idempotency_key] += 1
    assert {k: len(v) for k, v in by_key.items()} == dict.fromkeys(keys, 1)
    assert fresh == Counter(dict.fromkeys(keys, 1))
    async with plane.cp.store.read() as tx:
        assert await tx.runs.count() == len(keys)
        assert await tx.approvals.count() == len(keys)
        for k in keys:
            run = await tx.runs.find_by_idempotency_key("racer", k)
            assert run is not None and run.last_seq == 1
            assert len(await tx.events.since(run.id, 1)) == 1

    # A different request under a used key loses every race without touching the original.
    conflicts = await asyncio.gather(
        *(attempt(c, "order-0") for c in racers[:1]),
        *(
            c.runs.SubmitRun(
                submit_request("crit", text="other", idempotency_key="order-0"), metadata=c.md
            )
            for c in racers[1:5]
        ),
        return_exceptions=True,
    )
    assert not isinstance(conflicts[0], BaseException) and conflicts[0].deduplicated
    for err in conflicts[1:]:
        assert isinstance(err, grpc.aio.AioRpcError) and err.code() == Code.ALREADY_EXISTS


async def test_cancel_races_approvals(plane: Plane) -> None:
    """Cancel and approve take their locks in the same order: no deadlock, one winner."""
    n_clients, n_approvers = sizes(plane)
    await register(plane.admin, manifest_text("crit", risk="critical"))
    alice = await plane.key("alice", "submitter")
    approvers = [await plane.key(f"a{i}", "approver") for i in range(n_approvers)]
    ids = [(await submit(alice, "crit", text=str(i))).run.id for i in range(n_clients)]

    async def try_approve(c: Client, rid: str) -> str:
        try:
            await approve(c, rid)
            return "approved"
        except grpc.aio.AioRpcError as e:
            assert e.code() == Code.FAILED_PRECONDITION, (e.code(), e.details())
            return "refused"

    async def try_cancel(rid: str) -> str:
        try:
            await cancel(alice, rid)
            return "cancelled"
        except grpc.aio.AioRpcError as e:
            assert e.code() == Code.FAILED_PRECONDITION, (e.code(), e.details())
            return "refused"

    work = [try_cancel(rid) for rid in ids] + [
        try_approve(a, rid) for a in approvers[:2] for rid in ids
    ]
    random.Random(5).shuffle(work)
    await asyncio.wait_for(asyncio.gather(*work), 60)
    store = plane.cp.store
    for rid in ids:
        run = (await alice.runs.GetRun(rs.GetRunRequest(run_id=rid), metadata=alice.md)).run
        a = await stored_approval(store, rid)
        assert a is not None
        events = await stored_events(store, rid)
        assert_gapless(events, run.last_sequence)
        states = [e.state for e in events]
        if a.status == "cancelled":  # cancelled while pending: the quorum was never reached
            assert a.approvals < 2 and states == [RunState.PENDING_APPROVAL, RunState.CANCELLED]
        else:  # approved first; the cancel (if it came) then cancelled the queued run
            assert a.status == "approved" and a.approvals == 2
            assert states in (
                [RunState.PENDING_APPROVAL, RunState.QUEUED],
                [RunState.PENDING_APPROVAL, RunState.QUEUED, RunState.CANCELLED],
            )
        assert (run.state == rp.RUN_STATE_CANCELLED) == (states[-1] is RunState.CANCELLED)
