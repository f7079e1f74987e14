"""Hardening of streams and paging: every pending approval in the snapshot, authenticated page
tokens bound to their query, revocation reaching open streams, and connections returned on
every way out of a stream."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import warnings
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import insert, select

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from server.store import tables as t
from tests.conftest import Plane, manifest_text
from tests.helpers.api import expect_code, register, submit
from tests.helpers.client import Client
from tests.helpers.wait import wait_for_condition

Code = grpc.StatusCode


async def _clone_pending(plane: Plane, template_run_id: str, n: int) -> list[str]:
    """``n`` more pending approvals, copied from one made through the API (fast: one insert)."""
    store = plane.cp.store
    async with store.transaction() as tx:
        run = (await tx.conn.execute(select(t.runs).where(t.runs.c.id == template_run_id))).one()
        appr = (await tx.conn.execute(
            select(t.approvals).where(t.approvals.c.run_id == template_run_id))).one()
        ids = [f"run_{i:026d}" for i in range(n)]
        base = dict(run._mapping)
        base["idempotency_key"] = None
        await tx.conn.execute(insert(t.runs), [{**base, "id": i} for i in ids])
        # Changed an hour ago: only the snapshot may send them, not the watch of recent changes.
        old = dict(appr._mapping)
        old["updated_at"] = old["created_at"] = old["updated_at"] - timedelta(hours=1)
        await tx.conn.execute(insert(t.approvals), [{**old, "run_id": i} for i in ids])
    return ids


async def test_watch_approvals_snapshot_sends_every_pending_approval(plane: Plane) -> None:
    admin = plane.admin
    await register(admin, manifest_text("risky", risk="high"))
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    first = (await submit(alice, "risky")).run.id
    ids = {first, *await _clone_pending(plane, first, 1234)}
    got: set[str] = set()
    stream = bob.approvals.WatchApprovals(aps.WatchApprovalsRequest(), metadata=bob.md)
    it = stream.__aiter__()
    got.add((await it.__anext__()).approval.run_id)
    # Once the server waits for changes its snapshot is sent; a change made now comes after it.
    await wait_for_condition(lambda: plane.cp.store.notifier.waiting("airlock_approvals") > 0,
                             timeout=60, what="the snapshot to be sent")
    marker = (await submit(alice, "risky")).run.id
    while marker not in got:
        got.add((await it.__anext__()).approval.run_id)
    stream.cancel()
    missing = ids - got
    assert not missing, f"{len(missing)} of {len(ids)} pending approvals not in the snapshot"


# --- page tokens ------------------------------------------------------------------------------


async def _two_agents(plane: Plane) -> Client:
    admin = plane.admin
    for name in ("alpha", "alpine", "beta"):
        await register(admin, manifest_text(name))
    return admin


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_page_tokens_are_authenticated_and_bound_to_their_query(plane: Plane) -> None:
    admin = await _two_agents(plane)
    reg_ = admin.registry

    async def agents(token: str, prefix: str = "al") -> reg.ListAgentsResponse:
        return await reg_.ListAgents(reg.ListAgentsRequest(page_size=1, page_token=token,
                                                           name_prefix=prefix), metadata=admin.md)

    first = await agents("")
    assert [a.name for a in first.agents] == ["alpha"]
    token = first.next_page_token
    assert token
    second = await agents(token)
    assert [a.name for a in second.agents] == ["alpine"]

    # A token forged the way the old ones were made (base64 of the last key) is refused.
    for forged in (_b64(b"alpha"), _b64(b"zzz"), token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
                   "x" + token, token + "x"):
        err = await expect_code(agents(forged), Code.INVALID_ARGUMENT)
        assert err.details().startswith("page_token:"), err.details()
    # The same token with another filter is refused: it was made for prefix "al".
    err = await expect_code(agents(token, prefix="b"), Code.INVALID_ARGUMENT)
    assert err.details().startswith("page_token:"), err.details()
    # ... and on another list entirely.
    err = await expect_code(admin.runs.ListRuns(rs.ListRunsRequest(page_token=token),
                                                metadata=admin.md), Code.INVALID_ARGUMENT)
    assert err.details().startswith("page_token:"), err.details()


async def test_run_page_tokens_bound_to_filters(plane: Plane) -> None:
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    alice = await plane.key("alice", "submitter")
    for _ in range(3):
        await submit(alice, "echo")
    page = await admin.runs.ListRuns(rs.ListRunsRequest(page_size=1, agent="echo"),
                                     metadata=admin.md)
    assert page.next_page_token
    ok = await admin.runs.ListRuns(rs.ListRunsRequest(page_size=1, agent="echo",
                                                      page_token=page.next_page_token),
                                   metadata=admin.md)
    assert len(ok.runs) == 1
    # Page size may change between pages; the filter may not.
    await admin.runs.ListRuns(rs.ListRunsRequest(page_size=5, agent="echo",
                                                 page_token=page.next_page_token),
                              metadata=admin.md)
    err = await expect_code(admin.runs.ListRuns(
        rs.ListRunsRequest(page_size=1, agent="echo", submitter="bob",
                           page_token=page.next_page_token), metadata=admin.md),
        Code.INVALID_ARGUMENT)
    assert err.details().startswith("page_token:"), err.details()


# --- revocation reaches open streams ----------------------------------------------------------


async def test_revoked_key_ends_its_open_watch_approvals_stream(plane: Plane) -> None:
    admin = plane.admin
    await register(admin, manifest_text("risky", risk="high"))
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    who = await bob.admin.WhoAmI(adm.WhoAmIRequest(), metadata=bob.md)
    before = (await submit(alice, "risky")).run.id
    stream = bob.approvals.WatchApprovals(aps.WatchApprovalsRequest(), metadata=bob.md)
    it = stream.__aiter__()
    assert (await it.__anext__()).approval.run_id == before  # open and authenticated
    await admin.admin.RevokeApiKey(adm.RevokeApiKeyRequest(id=who.key.id), metadata=admin.md)
    after = (await submit(alice, "risky")).run.id
    got: list[str] = []
    # The documented revocation lag is AIRLOCK_AUTH_CACHE_SECONDS; a few seconds of slack for
    # a loaded machine. The bound is the contract, not a performance figure.
    lag = plane.cp.settings.auth_cache_seconds
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with asyncio.timeout(lag + 5):
            while True:
                got.append((await it.__anext__()).approval.run_id)
    assert info.value.code() == Code.UNAUTHENTICATED, info.value
    assert after not in got


async def test_revoked_key_ends_an_idle_stream_within_the_lag(plane: Plane) -> None:
    """No message to send at all: the stream still re-checks its key and ends."""
    admin = plane.admin
    await register(admin, manifest_text("risky", risk="high"))
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    who = await bob.admin.WhoAmI(adm.WhoAmIRequest(), metadata=bob.md)
    run_id = (await submit(alice, "risky")).run.id
    stream = bob.approvals.WatchApprovals(aps.WatchApprovalsRequest(), metadata=bob.md)
    it = stream.__aiter__()
    assert (await it.__anext__()).approval.run_id == run_id
    await admin.admin.RevokeApiKey(adm.RevokeApiKeyRequest(id=who.key.id), metadata=admin.md)
    lag = plane.cp.settings.auth_cache_seconds  # the documented lag, plus slack (as above)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with asyncio.timeout(lag + 5):
            await it.__anext__()
    assert info.value.code() == Code.UNAUTHENTICATED, info.value


# --- streams return their connection on every way out -----------------------------------------


async def test_streams_dropped_abruptly_return_their_connections(
        pg_plane: Plane, caplog: pytest.LogCaptureFixture) -> None:
    plane = pg_plane
    admin = plane.admin
    await register(admin, manifest_text("risky", risk="high"))
    await register(admin, manifest_text("echo"))
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    pending = (await submit(alice, "risky")).run.id
    queued = (await submit(alice, "echo")).run.id
    engine = plane.cp.store.engine
    caplog.set_level(logging.WARNING)
    # Garbage an earlier test left behind is not this test's to judge (pytest's warnings
    # summary names the test it surfaced in): collect it before recording.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(60):
            if i % 2:
                call: Any = bob.approvals.WatchApprovals(aps.WatchApprovalsRequest(),
                                                         metadata=bob.md)
            else:
                call = alice.runs.WatchRun(rs.WatchRunRequest(run_id=queued), metadata=alice.md)
            if i % 3:  # some after the first message, some before anything arrives
                await call.read()
            call.cancel()
            if i % 5 == 0:  # some dropped while others are still being cancelled
                await asyncio.sleep(0)
        # Every cancelled stream's handler unwinds and gives its connection back.
        await wait_for_condition(lambda: engine.pool.checkedout() == 0, timeout=30,
                                 what="every connection back in the pool")
        gc.collect()
    leaked = [str(w.message) for w in caught if "non-checked-in" in str(w.message)]
    leaked += [r.getMessage() for r in caplog.records if "non-checked-in" in r.getMessage()]
    assert not leaked, leaked
    assert pending  # the approval stream had a snapshot to send
    # And the server still answers on the same pool.
    await bob.approvals.GetApproval(aps.GetApprovalRequest(run_id=pending), metadata=bob.md)
