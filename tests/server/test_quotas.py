"""Quotas per owner, enforced at submit over gRPC and gRPC-Web on both dialects: each refused
at its edge with RESOURCE_EXHAUSTED naming it, freed when runs end or the UTC day turns (a
ManualClock moves the day); GetUsage shows each owner's consumption against its quotas; and
50 clients of one owner racing at the edge of a quota never overshoot it (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from connectrpc.errors import ConnectError

from airlock.v1 import run_service_pb2 as rs
from airlock.v1 import usage_service_pb2 as us
from server.domain.models import AttemptResult
from server.domain.policy import Policy
from server.domain.states import RunState
from tests.conftest import Plane, manifest_text, start_plane, test_policy
from tests.helpers.api import cancel, expect_code, register, submit, submit_request
from tests.helpers.client import Client
from tests.helpers.clock import ManualClock
from tests.helpers.web import WebClient

Code = grpc.StatusCode
QUOTAS = {
    "default": {"runs_in_flight": 2, "max_limits": {"memory_mib": 256}},
    "owners": {
        "daily": {"runs_in_flight": None, "runs_per_day": 3},
        "cpu": {"runs_in_flight": None, "cpu_seconds_per_day": 1.5},
        "big": {"max_limits": {"memory_mib": 512}},
    },
}


def quota_policy(quotas: dict) -> Policy:
    return replace(test_policy(), quotas=Policy.from_mapping({"quotas": quotas}).quotas)


@dataclass
class World:
    plane: Plane
    clock: ManualClock
    keys: dict[str, Client]
    web: dict[str, WebClient]

    async def refused(self, who: str, **fields: object) -> str:
        err = await expect_code(submit(self.keys[who], **fields), Code.RESOURCE_EXHAUSTED)
        # gRPC-Web answers the same request with the same code and message.
        with pytest.raises(ConnectError) as info:
            await self.web[who].runs.submit_run(submit_request(**fields),  # type: ignore[arg-type]
                                                headers=self.web[who].headers)
        assert info.value.code.name == "RESOURCE_EXHAUSTED" and info.value.message == err.details()
        return str(err.details())

    async def usage(self, who: str = "admin", owner: str = "") -> dict[str, us.OwnerUsage]:
        c = self.keys[who]
        resp = await c.usage.GetUsage(us.GetUsageRequest(owner=owner), metadata=c.md)
        return {o.owner: o for o in resp.owners}


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    clock = ManualClock()
    clock.now = datetime(2026, 12, 3, 22, 0, tzinfo=UTC)  # two hours before a UTC midnight
    plane = await start_plane(db_url, policy=quota_policy(QUOTAS), clock=clock)
    try:
        admin = plane.admin
        await register(admin, manifest_text("echo"))
        keys = {"admin": admin, "viewer": await plane.key("vera", "viewer")}
        for owner in ("alice", "daily", "cpu", "big"):
            keys[owner] = await plane.key(owner, "submitter")
        base = f"http://{plane.cp.http_address}"
        web = {k: WebClient(base, c.token, c.owner) for k, c in keys.items()}
        yield World(plane, clock, keys, web)
        for w in web.values():
            await w.close()
    finally:
        await plane.close()


async def test_runs_in_flight_refused_at_the_edge_and_freed_when_a_run_ends(world: World) -> None:
    first = (await submit(world.keys["alice"])).run.id
    await submit(world.keys["alice"])
    message = await world.refused("alice")
    assert message == ("quota runs_in_flight of owner 'alice' is 2: 2 run(s) not yet ended; "
                       "frees when one of them ends")
    assert (await world.usage())["alice"].runs_in_flight == 2  # nothing was created
    await submit(world.keys["daily"])  # another owner is not limited by alice's runs
    await cancel(world.keys["alice"], first)  # a run ends...
    await submit(world.keys["alice"])  # ...and frees its place


async def test_runs_per_day_refused_at_the_edge_and_freed_when_the_day_turns(world: World) -> None:
    for _ in range(3):
        await submit(world.keys["daily"])
    message = await world.refused("daily")
    assert message == ("quota runs_per_day of owner 'daily' is 3: 3 run(s) submitted today (UTC); "
                       "frees at 2026-12-04T00:00:00Z (the next UTC day)")
    world.clock.advance(2 * 3600 - 1)  # a second before midnight: still today
    await world.refused("daily")
    world.clock.advance(1)
    await submit(world.keys["daily"])
    assert (await world.usage())["daily"].runs_today == 1


async def finish_with_cpu(world: World, run_id: str, cpu: float) -> None:
    """End a run as an executor records it (lease, then the outcome with measured usage)."""
    store, now = world.plane.cp.store, world.clock()
    async with store.transaction() as tx:
        run = await tx.runs.get(run_id, lock=True)
        assert run is not None
        run = await tx.runs.lease(run, executor_id="ex", until=now + timedelta(minutes=1), now=now)
        await tx.runs.record_outcome(run, RunState.SUCCEEDED, reason="succeeded", actor="ex", now=now,
                                     result=AttemptResult(output_json="{}", cpu_seconds=cpu,
                                                          duration_seconds=cpu))


async def test_cpu_seconds_per_day_refused_at_the_edge_and_freed_when_the_day_turns(world: World) -> None:
    cpu = world.keys["cpu"]
    await finish_with_cpu(world, (await submit(cpu)).run.id, 1.0)
    second = (await submit(cpu)).run.id  # 1.0 < 1.5: still allowed
    await finish_with_cpu(world, second, 0.5)
    message = await world.refused("cpu")
    assert message == ("quota cpu_seconds_per_day of owner 'cpu' is 1.5: 1.5 CPU-seconds used today "
                       "(UTC); frees at 2026-12-04T00:00:00Z (the next UTC day)")
    assert (await world.usage())["cpu"].cpu_seconds_today == 1.5
    world.clock.advance(2 * 3600)
    await submit(cpu)
    assert (await world.usage())["cpu"].cpu_seconds_today == 0


async def test_limit_ceiling_per_owner(world: World) -> None:
    message = await world.refused("alice", limits={"memory_mib": 257})
    assert message == ("quota max_limits.memory_mib of owner 'alice' is 256: the run asks for "
                       "limits.memory_mib 257; a ceiling does not free up; ask for less")
    await submit(world.keys["alice"], limits={"memory_mib": 256})
    await submit(world.keys["big"], limits={"memory_mib": 512})  # its own, higher ceiling


async def test_get_usage_shows_consumption_against_quotas_in_scope(world: World) -> None:
    await submit(world.keys["alice"])
    await submit(world.keys["daily"])
    every = await world.usage()
    # owners with quotas of their own are listed even when idle; others once they used something
    assert sorted(every) == ["alice", "big", "cpu", "daily"]
    a = every["alice"]
    assert (a.runs_in_flight, a.runs_today, a.cpu_seconds_today) == (1, 1, 0)
    assert a.quota.HasField("runs_in_flight") and a.quota.runs_in_flight == 2
    assert not a.quota.HasField("runs_per_day") and a.quota.max_limits.memory_mib == 256
    d = every["daily"].quota
    assert not d.HasField("runs_in_flight") and d.runs_per_day == 3
    assert await world.usage("viewer") == every
    # a submitter sees its own owner only, whatever it asks for
    assert sorted(await world.usage("alice")) == ["alice"]
    assert sorted(await world.usage("alice", owner="daily")) == ["alice"]
    assert sorted(await world.usage("admin", owner="nobody")) == ["nobody"]
    web = await world.web["viewer"].usage.get_usage(us.GetUsageRequest(), headers=world.web["viewer"].headers)
    assert {o.owner: o for o in web.owners} == every
    err = await expect_code(world.keys["admin"].usage.GetUsage(us.GetUsageRequest(owner="x" * 201),
                                                               metadata=world.keys["admin"].md),
                            Code.INVALID_ARGUMENT)
    assert err.details() == "owner: is longer than 200 characters"


@pytest.mark.parametrize("quota", ["runs_in_flight", "runs_per_day"])
async def test_fifty_clients_racing_at_the_edge_never_overshoot(pg_url: str, quota: str) -> None:
    limit = 10
    plane = await start_plane(pg_url, policy=quota_policy({"default": {quota: limit}}),
                              db_pool_size=20)
    try:
        await register(plane.admin, manifest_text("echo"))
        token = (await plane.key("racer", "submitter")).token
        clients = [plane.client(token, "racer") for _ in range(50)]  # 50 connections

        async def one(c: Client) -> Code:
            try:
                await c.runs.SubmitRun(submit_request(), metadata=c.md, timeout=60)
                return Code.OK
            except grpc.aio.AioRpcError as e:
                return e.code()

        codes = await asyncio.gather(*(one(c) for c in clients))
        assert codes.count(Code.OK) == limit, codes
        assert codes.count(Code.RESOURCE_EXHAUSTED) == 50 - limit, codes
        async with plane.cp.store.read() as tx:
            assert await tx.runs.count() == limit
    finally:
        await plane.close()


async def test_owners_without_quotas_are_not_counted(db_url: str) -> None:
    """No quota: no lock, no counting (and nothing refused)."""
    plane = await start_plane(db_url)
    try:
        await register(plane.admin, manifest_text("echo"))
        alice = await plane.key("alice", "submitter")
        for _ in range(5):
            await submit(alice)
        resp = await alice.usage.GetUsage(us.GetUsageRequest(), metadata=alice.md)
        [mine] = resp.owners
        assert mine.runs_in_flight == 5 and not mine.quota.HasField("runs_in_flight")
        async with plane.cp.store.read() as tx:
            assert await tx.runs.count() == 5
        assert resp.day_end_time.ToDatetime() - resp.day_start_time.ToDatetime() == timedelta(days=1)
    finally:
        await plane.close()
    _ = rs  # the run service's messages are built by the helpers


async def test_cli_usage_prints_consumption_against_quotas(world: World,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from airlock.cli import main

    await submit(world.keys["alice"])
    await submit(world.keys["daily"])

    async def run(*args: str, who: str = "admin") -> str:
        capsys.readouterr()
        argv = ["usage", *args, "--address", world.plane.address, "--token", str(world.keys[who].token)]
        assert await asyncio.to_thread(main, argv) == 0
        return capsys.readouterr().out

    lines = (await run()).splitlines()
    assert lines[0].split() == ["OWNER", "IN", "FLIGHT", "RUNS", "TODAY", "CPU-S", "TODAY", "LIMIT",
                                "CEILINGS"]
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith("day")}
    assert rows["alice"].split()[1:] == ["1", "/", "2", "1", "0.0", "memory_mib", "256"]
    assert rows["daily"].split()[1:] == ["1", "1", "/", "3", "0.0", "memory_mib", "256"]
    assert "day (UTC) 2026-12-03 00:00:00Z .. 2026-12-04 00:00:00Z" in lines[-1]
    mine = await run(who="alice")
    assert [line.split()[0] for line in mine.splitlines()[1:] if line and not line.startswith("day")] == ["alice"]
    assert '"runs_in_flight": "1"' in await run("--json", "--owner", "alice")
