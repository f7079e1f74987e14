"""Leasing by network pool: an executor whose runtime's network is fixed would claim only the
runs it can honour (real database, both dialects).

No runtime has a fixed network any more (the jail, also inside Dagger, and podman decide it per
run: ``network_pool`` is None everywhere, see tests/deploy/test_compose.py), so the worker
leases every run. The store's filter stays, tested here, until it and ``network_pool`` are
removed together from the runtime protocol, the worker and the store."""

from __future__ import annotations

from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from tests.conftest import Plane, manifest_text


async def test_claim_queued_filters_by_network(plane: Plane) -> None:
    admin = plane.admin
    await admin.registry.RegisterAgentVersion(
        reg.RegisterAgentVersionRequest(manifest=manifest_text(network=True, risk="high")),
        metadata=admin.md)
    # Policy: high risk needs approval; submit as admin and approve through a second person.
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    from airlock.v1 import approval_service_pb2 as aps

    ids = {}
    for net in (True, False):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="echo", capability="echo", input_json='{"text": "x"}', network=net), metadata=alice.md)
        await bob.approvals.Approve(aps.ApproveRequest(run_id=sub.run.id), metadata=bob.md)
        ids[net] = sub.run.id
    store = plane.cp.store
    async with store.transaction() as tx:
        egress = [r.id for r in await tx.runs.next_queued(10, network=True)]
        internal = [r.id for r in await tx.runs.next_queued(10, network=False)]
        anything = [r.id for r in await tx.runs.next_queued(10)]
    assert egress == [ids[True]]
    assert internal == [ids[False]]
    assert sorted(anything) == sorted(ids.values())
