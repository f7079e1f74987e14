"""SubmitRun by NATS request/reply: same validation, auth, roles, policy and idempotency as
gRPC (same codes and messages), and nothing half-created on an error."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import json_format

from airlock.v1 import run_pb2 as rp
from airlock.v1 import run_service_pb2 as rs
from server.store import Store
from tests.conftest import Plane, start_plane
from tests.events.conftest import echo_world
from tests.helpers.client import Client

pytestmark = [pytest.mark.nats, pytest.mark.postgres]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class World:
    plane: Plane
    nc: Any
    subject: str
    alice: Client
    viewer: Client

    async def ask(self, body: bytes | dict[str, Any], token: str | None = None,
                  **headers: str) -> tuple[dict[str, Any], dict[str, str]]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        h = dict(headers)
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        msg = await self.nc.request(self.subject, data, timeout=10, headers=h or None)
        return json.loads(msg.data), dict(msg.headers or {})


@pytest.fixture
async def world(pg_url: str, nats_url: str) -> AsyncIterator[World]:
    subject = f"t{uuid.uuid4().hex[:12]}.submit"
    plane = await start_plane(pg_url, nats_url=nats_url, nats_submit_subject=subject)
    nc = await nats.connect(nats_url)
    try:
        _, alice = await echo_world(plane)
        viewer = await plane.key("vera", "viewer")
        assert plane.cp.nats_submit is not None
        await asyncio.wait_for(plane.cp.nats_submit.ready.wait(), 10)
        yield World(plane, nc, subject, alice, viewer)
    finally:
        await nc.close()
        await plane.close()


async def counts(store: Store) -> dict[str, int]:
    async with store.read() as tx:
        return {"runs": await tx.runs.count(), "run_events": await tx.events.count(),
                "approvals": await tx.approvals.count(), "audit_log": await tx.audit.count()}


def req(text: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"agent": "echo", "capability": "echo", "input_json": json.dumps({"text": text}),
            **fields}


async def test_valid_request_creates_the_run(world: World) -> None:
    body, headers = await world.ask(req(), world.alice.token, traceparent=TRACEPARENT)
    assert headers["Airlock-Status"] == "OK" and headers["Content-Type"] == "application/json"
    run = body["run"]
    assert run["state"] == "RUN_STATE_QUEUED" and run["submitter"] == "alice"
    assert body["deduplicated"] is False
    got = await world.alice.runs.GetRun(rs.GetRunRequest(run_id=run["id"]), metadata=world.alice.md)
    assert got.run.input_json == '{"text":"hi"}' and got.run.agent == "echo"
    async with world.plane.cp.store.read() as tx:
        stored = await tx.runs.get(run["id"])
    assert stored is not None and stored.traceparent == TRACEPARENT  # the caller's trace goes on

    # lowerCamel names (the other spelling of the JSON mapping) and policy: critical -> pending
    body, _ = await world.ask({"agent": "crit", "capability": "echo",
                               "inputJson": '{"text": "x"}'}, world.alice.token)
    assert body["run"]["state"] == "RUN_STATE_PENDING_APPROVAL"
    async with world.plane.cp.store.read() as tx:
        assert await tx.approvals.get(body["run"]["id"]) is not None


async def test_idempotency_as_on_grpc(world: World) -> None:
    first, _ = await world.ask(req(idempotency_key="k-1"), world.alice.token)
    again, _ = await world.ask(req(idempotency_key="k-1"), world.alice.token)
    assert again["run"]["id"] == first["run"]["id"] and again["deduplicated"] is True
    other, headers = await world.ask(req("other", idempotency_key="k-1"), world.alice.token)
    assert headers["Airlock-Status"] == "ALREADY_EXISTS"
    assert first["run"]["id"] in other["error"]["message"]


async def test_submit_reply_stays_in_the_owners_scope(world: World) -> None:
    """Another owner reusing alice's idempotency key (same request) gets a run of its own, never
    alice's run in the reply; and it cannot read alice's run (NOT_FOUND, as an unknown id)."""
    first, _ = await world.ask(req(idempotency_key="k-scope"), world.alice.token)
    bob = await world.plane.key("bob", "submitter")
    theirs, headers = await world.ask(req(idempotency_key="k-scope"), bob.token)
    assert headers["Airlock-Status"] == "OK", theirs
    assert theirs["deduplicated"] is False and theirs["run"]["submitter"] == "bob"
    assert theirs["run"]["id"] != first["run"]["id"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await bob.runs.GetRun(rs.GetRunRequest(run_id=first["run"]["id"]), metadata=bob.md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


CASES: list[tuple[str, bytes | dict[str, Any], str, str, str]] = [
    # (what, body, key, code, message fragment)
    ("not JSON", b"{not json", "alice", "INVALID_ARGUMENT", "request: not JSON"),
    ("not an object", b"[1]", "alice", "INVALID_ARGUMENT", "request: must be a JSON object"),
    ("not UTF-8", b"\xff\xfe", "alice", "INVALID_ARGUMENT", "request: is not UTF-8"),
    ("unknown field", {**req(), "colour": "red"}, "alice", "INVALID_ARGUMENT",
     'request: not a SubmitRunRequest: Message type "airlock.v1.SubmitRunRequest" has no field '
     'named "colour"'),
    ("wrong type", {**req(), "network": "yes"}, "alice", "INVALID_ARGUMENT", "network"),
    ("unknown agent", req(agent="nope"), "alice", "NOT_FOUND", "agent 'nope' not found"),
    ("bad input JSON", req(input_json="{"), "alice", "INVALID_ARGUMENT", "input_json:"),
    ("schema violation", req(input_json='{"text": 5}'), "alice", "INVALID_ARGUMENT",
     "input_json: does not match the input schema at $.text"),
    ("missing agent", {"capability": "echo", "input_json": "{}"}, "alice", "INVALID_ARGUMENT",
     "agent:"),
    ("network not permitted", req(network=True), "alice", "INVALID_ARGUMENT", "network:"),
    ("no key", req(), "none", "UNAUTHENTICATED", "missing bearer token"),
    ("bad key", req(), "bad", "UNAUTHENTICATED", "invalid or revoked API key"),
    ("viewer may not submit", req(), "viewer", "PERMISSION_DENIED",
     "role viewer may not call RunService.SubmitRun"),
]


@pytest.mark.parametrize(("what", "body", "key", "code", "fragment"), CASES,
                         ids=[c[0] for c in CASES])
async def test_errors_name_the_problem_and_create_nothing(
        world: World, what: str, body: bytes | dict[str, Any], key: str, code: str,
        fragment: str) -> None:
    token = {"alice": world.alice.token, "viewer": world.viewer.token, "none": None,
             "bad": "key_000000000000.nope"}[key]
    before = await counts(world.plane.cp.store)
    reply, headers = await world.ask(body, token)
    assert headers["Airlock-Status"] == code, reply
    assert set(reply) == {"error"} and reply["error"]["code"] == code
    assert fragment in reply["error"]["message"], reply
    assert await counts(world.plane.cp.store) == before, f"{what}: something was created"

    # gRPC answers a request with the same content the same way.
    if isinstance(body, dict) and key != "none" and what not in ("unknown field", "wrong type"):
        client = world.viewer if key == "viewer" else world.alice
        md = (("authorization", f"Bearer {token}"),) if token else ()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.runs.SubmitRun(json_format.ParseDict(body, rs.SubmitRunRequest()),
                                        metadata=md)
        assert info.value.code().name == code
        assert info.value.details() == reply["error"]["message"]


async def test_concurrent_requests_are_served(world: World) -> None:
    replies = await asyncio.gather(*(world.ask(req(f"c{i}"), world.alice.token)
                                     for i in range(30)))
    ids = {body["run"]["id"] for body, _ in replies}
    assert len(ids) == 30


async def test_control_plane_serves_and_watches_with_nats_down(pg_url: str) -> None:
    """NATS unreachable: the plane starts, gRPC submission works, WatchRun streams from the
    database to the terminal event (and resumes from a sequence)."""
    from tests.events.conftest import free_port
    from tests.helpers.api import cancel, submit

    plane = await start_plane(pg_url, nats_url=f"nats://127.0.0.1:{free_port()}")
    try:
        _, alice = await echo_world(plane)
        assert plane.cp.nats_submit is not None and not plane.cp.nats_submit.ready.is_set()
        run = (await submit(alice)).run
        await cancel(alice, run.id, "done")
        call = alice.runs.WatchRun(rs.WatchRunRequest(run_id=run.id), metadata=alice.md,
                                   timeout=10)
        assert [m.event.sequence async for m in call] == [1, 2]
        call = alice.runs.WatchRun(rs.WatchRunRequest(run_id=run.id, from_sequence=2),
                                   metadata=alice.md, timeout=10)
        assert [m.event.state for m in [m async for m in call]] == [rp.RUN_STATE_CANCELLED]
    finally:
        await plane.close()


async def test_workflow_submit_over_nats_as_over_grpc(world: World) -> None:
    """<subject>.workflow takes SubmitWorkflowRequests: created (and deduplicated) with the
    same auth and roles; a cycle is refused naming it, creating nothing."""
    wf_spec = {"name": "nightly", "steps": [
        {"name": "a", "agent": "echo", "capability": "echo", "input_json": '{"text": "x"}'},
        {"name": "b", "agent": "echo", "capability": "echo", "depends_on": ["a"],
         "input_json": json.dumps({"text": {"$from": "steps.a.output.text"}})}]}

    async def ask(body: dict[str, Any], token: str | None) -> tuple[dict[str, Any], str]:
        h = {"Authorization": f"Bearer {token}"} if token else None
        msg = await world.nc.request(world.subject + ".workflow", json.dumps(body).encode(),
                                     timeout=10, headers=h)
        return json.loads(msg.data), (msg.headers or {})["Airlock-Status"]

    body, status = await ask({"spec": wf_spec, "idempotency_key": "k1"}, world.alice.token)
    assert status == "OK", body
    w = body["workflow"]
    assert w["state"] == "WORKFLOW_STATE_RUNNING" and w["submitter"] == "alice"
    assert [s["name"] for s in w["steps"]] == ["a", "b"]
    again, _ = await ask({"spec": wf_spec, "idempotency_key": "k1"}, world.alice.token)
    assert again["deduplicated"] is True and again["workflow"]["id"] == w["id"]
    before = await counts(world.plane.cp.store)
    cyclic = {**wf_spec, "steps": [{**wf_spec["steps"][0], "depends_on": ["b"]},
                                   wf_spec["steps"][1]]}
    body, status = await ask({"spec": cyclic}, world.alice.token)
    assert status == "INVALID_ARGUMENT"
    assert body["error"]["message"] in ("spec.steps: the steps form a cycle: a -> b -> a",
                                        "spec.steps: the steps form a cycle: b -> a -> b")
    body, status = await ask({"spec": wf_spec}, world.viewer.token)
    assert status == "PERMISSION_DENIED", body
    body, status = await ask({"spec": wf_spec}, None)
    assert status == "UNAUTHENTICATED", body
    assert await counts(world.plane.cp.store) == before
