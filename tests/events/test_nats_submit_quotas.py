"""Quotas hold on the NATS submit path too: the same RESOURCE_EXHAUSTED and message as gRPC
at each quota's edge, freed when a run ends or the UTC day turns; concurrent NATS requests of
one owner never overshoot."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import grpc
import nats
import pytest

from airlock.v1 import run_pb2 as rp
from airlock.v1 import run_service_pb2 as rs
from server.domain.policy import Policy
from tests.conftest import manifest_text, start_plane, test_policy
from tests.helpers.api import cancel, expect_code, register, submit
from tests.helpers.clock import ManualClock

pytestmark = [pytest.mark.nats, pytest.mark.postgres]


def body(memory_mib: int | None = None) -> bytes:
    doc: dict[str, Any] = {"agent": "echo", "capability": "echo", "input_json": '{"text": "hi"}'}
    if memory_mib is not None:
        doc["limits"] = {"memory_mib": memory_mib}
    return json.dumps(doc).encode()


async def test_each_quota_at_its_edge_over_nats(pg_url: str, nats_url: str) -> None:
    clock = ManualClock()
    clock.now = datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
    quotas = Policy.from_mapping({"quotas": {"default": {
        "runs_in_flight": 2, "runs_per_day": 3, "max_limits": {"memory_mib": 256}}}}).quotas
    subject = f"t{uuid.uuid4().hex[:12]}.submit"
    plane = await start_plane(pg_url, policy=replace(test_policy(), quotas=quotas), clock=clock,
                              nats_url=nats_url, nats_submit_subject=subject)
    nc = await nats.connect(nats_url)
    try:
        await register(plane.admin, manifest_text("echo"))
        alice = await plane.key("alice", "submitter")
        assert plane.cp.nats_submit is not None
        await asyncio.wait_for(plane.cp.nats_submit.ready.wait(), 10)

        async def ask(data: bytes) -> tuple[str, dict[str, Any]]:
            msg = await nc.request(subject, data, timeout=10,
                                   headers={"Authorization": f"Bearer {alice.token}"})
            return (msg.headers or {})["Airlock-Status"], json.loads(msg.data)

        async def refused(data: bytes, fragment: str) -> None:
            status, reply = await ask(data)
            assert status == "RESOURCE_EXHAUSTED", reply
            assert fragment in reply["error"]["message"]
            # gRPC answers the same request with the same message
            limits = json.loads(data).get("limits")
            err = await expect_code(submit(alice, **({"limits": limits} if limits else {})),
                                    grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert err.details() == reply["error"]["message"]

        await refused(body(memory_mib=300), "quota max_limits.memory_mib of owner 'alice' is 256")
        first = (await ask(body()))[1]["run"]["id"]
        assert (await ask(body()))[0] == "OK"
        await refused(body(), "quota runs_in_flight of owner 'alice' is 2: 2 run(s) not yet ended")
        await cancel(alice, first)  # a run ends: its place frees
        assert (await ask(body()))[0] == "OK"
        await refused(body(), "quota runs_in_flight")  # two in flight again
        # End them all: now the daily count (3 submitted today) is the edge.
        listed = await alice.runs.ListRuns(rs.ListRunsRequest(), metadata=alice.md)
        for run in listed.runs:
            if run.state == rp.RUN_STATE_QUEUED:
                await cancel(alice, run.id)
        await refused(body(), "quota runs_per_day of owner 'alice' is 3: 3 run(s) submitted today "
                              "(UTC); frees at 2026-12-04T00:00:00Z")
        clock.advance(3600)  # the day turns
        assert (await ask(body()))[0] == "OK"
    finally:
        await nc.close()
        await plane.close()


async def test_fifty_nats_requests_of_one_owner_never_overshoot(pg_url: str, nats_url: str) -> None:
    quotas = Policy.from_mapping({"quotas": {"default": {"runs_in_flight": 7}}}).quotas
    subject = f"t{uuid.uuid4().hex[:12]}.submit"
    plane = await start_plane(pg_url, policy=replace(test_policy(), quotas=quotas),
                              nats_url=nats_url, nats_submit_subject=subject, db_pool_size=20)
    conns = [await nats.connect(nats_url) for _ in range(5)]
    try:
        await register(plane.admin, manifest_text("echo"))
        alice = await plane.key("alice", "submitter")
        assert plane.cp.nats_submit is not None
        await asyncio.wait_for(plane.cp.nats_submit.ready.wait(), 10)

        async def one(i: int) -> str:
            msg = await conns[i % 5].request(subject, body(), timeout=60,
                                             headers={"Authorization": f"Bearer {alice.token}"})
            return str((msg.headers or {})["Airlock-Status"])

        statuses = await asyncio.gather(*(one(i) for i in range(50)))
        assert statuses.count("OK") == 7 and statuses.count("RESOURCE_EXHAUSTED") == 43, statuses
        async with plane.cp.store.read() as tx:
            assert await tx.runs.count() == 7
    finally:
        for c in conns:
            await c.close()
        await plane.close()
