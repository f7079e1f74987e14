"""The jail end to end, on both of its hosts: runs submitted over gRPC, leased by a real
executor, recorded in PostgreSQL. The containment suite proves the jail's verdicts at the
runtime level; these prove they become the runs' final states (and that fakes stay plain
failures) all the way to the database.

Each test runs twice: on the host ``jail`` runtime, and on the jail inside a privileged
container (``tests.helpers.privileged_jail``: the exec the Dagger runtime sends, run by
``podman run --privileged``, the test stand-in for a Dagger engine), built through the runtime
registry as the executor builds its runtime.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.base import SandboxRuntime
from executor.runtime.jail import JailRuntime
from executor.runtime.registry import resolve_runtime
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, register, running_executor, state_name, wait_terminal
from tests.executor import jail_support
from tests.executor.jail_support import (
    NetnsListener,
    host_addresses,
    jail_cgroups,
    sandbox_processes,
)
from tests.helpers import privileged_jail
from tests.helpers.client import Client
from tests.helpers.wait import wait_for_condition

pytestmark = [pytest.mark.podman, pytest.mark.postgres]
jail_runtime = jail_support.jail_runtime  # fixtures
host_listener = jail_support.host_listener
netns_listener = jail_support.netns_listener

MiB = 1 << 20
OWNED = "/srv/sandbox-owned"  # owned by uid 65534 in the misbehave image


@dataclass(frozen=True)
class JailHost:
    """Where the jail runs, and what a finished run may leave there (must be nothing)."""

    runtime: SandboxRuntime
    leftovers: Callable[[str], Awaitable[list[object]]]


@pytest.fixture(scope="module", params=["host", "privileged-container"])
async def jail_host(request: pytest.FixtureRequest, jail_runtime: JailRuntime) -> AsyncIterator[JailHost]:
    if request.param == "host":
        async def cgroups(run_id: str) -> list[object]:
            return [*jail_cgroups(jail_runtime, run_id), *sandbox_processes(run_id)]

        yield JailHost(jail_runtime, cgroups)
        return
    with pytest.MonkeyPatch.context() as mp:  # the stand-in, through the runtime registry
        name = privileged_jail.register(mp)
        # The bundle the privileged-container tests assemble, from this host's programs.
        runtime = await resolve_runtime(name, bundle_dir=jail_runtime.work_root / "bundle")

        async def containers(run_id: str) -> list[object]:
            return [*await privileged_jail.containers(run_id), *sandbox_processes(run_id)]

        yield JailHost(runtime, containers)


async def _submit(client: Client, capability: str, payload: str, limits: dict[str, Any]) -> str:
    sub = await client.runs.SubmitRun(rs.SubmitRunRequest(
        agent="misbehave", capability=capability, input_json=payload, limits=limits),
        metadata=client.md)
    return str(sub.run.id)


def _row(url: str, run_id: str) -> dict[str, Any]:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT state, reason, exit_code, peak_memory_bytes, duration_seconds, attempt"
                        " FROM runs WHERE id = %s", (run_id,)).fetchone()
        assert row is not None, run_id
        events = [r[0] for r in c.execute(
            "SELECT state FROM run_events WHERE run_id = %s ORDER BY seq", (run_id,))]
    keys = ("state", "reason", "exit_code", "peak", "duration", "attempt")
    return dict(zip(keys, row, strict=True)) | {"events": events}


@pytest.fixture
async def alice(pg_plane: Plane, e2e_ready: object) -> Client:
    await register(pg_plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    return await pg_plane.key("alice", "submitter")


async def test_the_jail_runs_the_containment_cases_through_grpc_and_postgres(
    pg_plane: Plane, jail_host: JailHost, alice: Client
) -> None:
    cases = {  # capability -> (input, limits, final state, reason)
        "ok": ('{"n": 1}', {}, "SUCCEEDED", None),
        "hog_memory": ('{"mib": 512}', {"memory_mib": 64, "timeout_seconds": 30},
                       "OOM_KILLED", "memory limit of 64 MiB exceeded"),
        "spin": ("{}", {"memory_mib": 64, "timeout_seconds": 3}, "TIMED_OUT", "timed out after 3s"),
        "kill_self": ('{"mib": 16}', {"memory_mib": 64, "timeout_seconds": 30},
                      "FAILED", "agent exited with code 137"),
        "garbage_output": ("{}", {}, "FAILED", None),
        "fork_bomb": ('{"seconds": 1}', {"pids": 16, "timeout_seconds": 30}, "SUCCEEDED", None),
    }
    async with running_executor(pg_plane.url, jail_host.runtime, slots=3):  # type: ignore[arg-type]
        ids = {cap: await _submit(alice, cap, payload, limits)
               for cap, (payload, limits, _, _) in cases.items()}
        events = {cap: await wait_terminal(alice, run_id) for cap, run_id in ids.items()}
    for cap, (_, _, state, reason) in cases.items():
        db = _row(pg_plane.url, ids[cap])
        assert [state_name(e.state) for e in events[cap]] == ["QUEUED", "RUNNING", state], (cap, db)
        assert db["state"] == state and db["events"] == ["QUEUED", "RUNNING", state], (cap, db)
        if reason is not None:
            assert db["reason"] == reason, (cap, db)
        assert db["attempt"] == 1, (cap, db)  # limit breaches and agent failures are final
        assert await jail_host.leftovers(ids[cap]) == [], cap
    assert _row(pg_plane.url, ids["garbage_output"])["reason"].startswith("output is not valid JSON")
    oom = _row(pg_plane.url, ids["hog_memory"])
    assert oom["exit_code"] == 137 and 63 * MiB <= oom["peak"] <= 64 * MiB
    fake = _row(pg_plane.url, ids["kill_self"])
    assert fake["exit_code"] == 137 and fake["peak"] < (64 - 16) * MiB
    # The contract: killed at the 3 s limit, 1 s allowed for the kill and the report.
    assert 3 <= _row(pg_plane.url, ids["spin"])["duration"] < 3 + 1
    res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=ids["fork_bomb"]), metadata=alice.md)
    assert json.loads(res.output_json)["forked"] == 16 - 1  # exactly its own pids budget
    ok = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=ids["ok"]), metadata=alice.md)
    assert json.loads(ok.output_json) == {"ok": True, "echo": {"n": 1}}


def _dial(target: str) -> None:
    host, _, port = target.rpartition(":")
    socket.create_connection((host, int(port)), timeout=5).close()


async def test_the_jail_holds_network_writes_floods_orphans_and_fake_ooms_through_grpc_and_postgres(
    pg_plane: Plane, jail_host: JailHost, alice: Client,
    host_listener: tuple[int, list[int]], netns_listener: NetnsListener,
) -> None:
    port, accepted = host_listener
    # Only listeners this test owns: one on every host address, one in a netns it created.
    targets = [f"{netns_listener.addr}:{netns_listener.port}"] + [f"{a}:{port}" for a in host_addresses()]
    for t in targets:  # control: each answers from here, so a refusal below is the jail's
        await asyncio.to_thread(_dial, t)
    await wait_for_condition(lambda: accepted[0] == len(targets) - 1, what="host accepts counted")
    before = accepted[0]
    cases = {  # capability -> (input, limits)
        "connect": (json.dumps({"targets": targets}), {}),  # submitted without network egress
        "write_outside": ("{}", {}),
        "flood_stdout": ('{"mib": 2048}', {"timeout_seconds": 60, "log_kib": 64}),
        "orphan": ("{}", {"timeout_seconds": 30}),
        # Prints "MemoryError" and SIGKILLs itself just under its memory limit: not an OOM.
        "kill_self": ('{"to_limit": true}', {"memory_mib": 64, "timeout_seconds": 30}),
    }
    async with running_executor(pg_plane.url, jail_host.runtime, slots=3):  # type: ignore[arg-type]
        ids = {cap: await _submit(alice, cap, payload, limits) for cap, (payload, limits) in cases.items()}
        events = {cap: await wait_terminal(alice, run_id) for cap, run_id in ids.items()}
    rows = {cap: _row(pg_plane.url, run_id) for cap, run_id in ids.items()}
    results = {cap: await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=run_id), metadata=alice.md)
               for cap, run_id in ids.items()}
    expected = {"connect": "SUCCEEDED", "write_outside": "SUCCEEDED", "flood_stdout": "SUCCEEDED",
                "orphan": "SUCCEEDED", "kill_self": "FAILED"}
    for cap, state in expected.items():
        db = rows[cap]
        assert [state_name(e.state) for e in events[cap]] == ["QUEUED", "RUNNING", state], (cap, db)
        assert (db["state"], db["events"], db["attempt"]) == (state, ["QUEUED", "RUNNING", state], 1), (cap, db)
        assert await jail_host.leftovers(ids[cap]) == [], cap  # no cgroup, container or process

    # No network without egress: every dial failed, and nothing reached the host's listener.
    dialled = json.loads(results["connect"].output_json)["results"]
    assert set(dialled) == set(targets) and all(r.startswith("error") for r in dialled.values()), dialled
    assert accepted[0] == before

    # Writes outside refused; the paths uid 65534 owns in the image refused by the read-only
    # root alone (EROFS).
    wrote = json.loads(results["write_outside"].output_json)
    assert [p for p, r in wrote["results"].items() if r == "written"] == [], wrote
    for path in (f"{OWNED}/existing.txt", f"{OWNED}/new-file"):
        assert wrote["owners"][path] == 65534 and wrote["results"][path] == "error: Read-only file system", wrote

    # Two GiB of stdout: the run completes and the stored logs are cut at its 64 KiB.
    flood = results["flood_stdout"]
    assert json.loads(flood.output_json) == {"written_mib": 2048}
    assert flood.logs_truncated and len(flood.logs.encode()) <= 64 * 1024, len(flood.logs)
    assert flood.logs.startswith("y" * 1024)

    # An orphaned daemon ends with its run (SUCCEEDED at once, not TIMED_OUT at the limit).
    assert rows["orphan"]["duration"] < 30

    # Self-SIGKILL near the limit after printing MemoryError: FAILED with its exit code, not OOM.
    fake = rows["kill_self"]
    assert (fake["reason"], fake["exit_code"]) == ("agent exited with code 137", 137), fake
    assert "MemoryError" in results["kill_self"].logs
