"""Small helpers for driving the control plane through its real gRPC API."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from server.domain.models import Approval, AuditEntry, RunEvent
from server.store import Store
from tests.helpers.client import Client


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """Await a call that must fail and return its error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def expect_code(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    err = await rpc_error(call)
    assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
    return err


async def register(admin: Client, manifest: str) -> reg.RegisterAgentVersionResponse:
    return await admin.registry.RegisterAgentVersion(
        reg.RegisterAgentVersionRequest(manifest=manifest), metadata=admin.md
    )


def submit_request(agent: str = "echo", text: str = "hi", **fields: Any) -> rs.SubmitRunRequest:
    fields.setdefault("capability", "echo")
    return rs.SubmitRunRequest(agent=agent, input_json=f'{{"text": "{text}"}}', **fields)


async def submit(
    client: Client, agent: str = "echo", text: str = "hi", **fields: Any
) -> rs.SubmitRunResponse:
    return await client.runs.SubmitRun(submit_request(agent, text, **fields), metadata=client.md)


async def get_run(client: Client, run_id: str) -> Any:
    return (await client.runs.GetRun(rs.GetRunRequest(run_id=run_id), metadata=client.md)).run


async def approve(client: Client, run_id: str, reason: str = "") -> aps.ApproveResponse:
    return await client.approvals.Approve(
        aps.ApproveRequest(run_id=run_id, reason=reason), metadata=client.md
    )


async def reject(client: Client, run_id: str, reason: str) -> aps.RejectResponse:
    return await client.approvals.Reject(
        aps.RejectRequest(run_id=run_id, reason=reason), metadata=client.md
    )


async def cancel(client: Client, run_id: str, reason: str = "") -> rs.CancelRunResponse:
    return await client.runs.CancelRun(
        rs.CancelRunRequest(run_id=run_id, reason=reason), metadata=client.md
    )


async def stored_events(store: Store, run_id: str) -> list[RunEvent]:
    async with store.read() as tx:
        return await tx.events.since(run_id, 1, limit=10_000)


async def stored_approval(store: Store, run_id: str) -> Approval | None:
    async with store.read() as tx:
        return await tx.approvals.get(run_id)


async def audit(store: Store, target: str) -> list[AuditEntry]:
    async with store.read() as tx:
        return await tx.audit.entries(target)


def assert_gapless(events: list[RunEvent], last_seq: int) -> None:
    """Sequences are exactly 1..last_seq, in order, each event chaining from the previous."""
    assert [e.seq for e in events] == list(range(1, last_seq + 1)), [e.seq for e in events]
    for prev, nxt in itertools.pairwise(events):
        assert nxt.previous_state == prev.state, (prev, nxt)
