"""Limits end to end: a run submitted over gRPC, leased by a real executor, run in real podman,
recorded in PostgreSQL. The containment tests prove the runtime's verdicts; these prove the
worker records them as the run's final state (OOM_KILLED, TIMED_OUT) and that a fake OOM
stays a plain failure all the way to the database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.base import LABEL_RUN_ID
from executor.runtime.podman import KILL_GRACE_SECONDS, PodmanRuntime
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, register, running_executor, state_name, wait_terminal
from tests.helpers.client import Client

pytestmark = [pytest.mark.podman, pytest.mark.postgres]

MiB = 1 << 20


async def _submit(client: Client, capability: str, payload: str, limits: dict[str, Any]) -> str:
    sub = await client.runs.SubmitRun(rs.SubmitRunRequest(
        agent="misbehave", capability=capability, input_json=payload, limits=limits),
        metadata=client.md)
    return str(sub.run.id)


def _row(url: str, run_id: str) -> dict[str, Any]:
    """The run as the database has it, and its events in order."""
    with psycopg.connect(url) as c:
        cur = c.execute(
            "SELECT state, reason, exit_code, peak_memory_bytes, duration_seconds, attempt,"
            " lease_owner, finished_at IS NOT NULL FROM runs WHERE id = %s", (run_id,))
        row = cur.fetchone()
        assert row is not None, run_id
        events = [r[0] for r in c.execute(
            "SELECT state FROM run_events WHERE run_id = %s ORDER BY seq", (run_id,))]
    keys = ("state", "reason", "exit_code", "peak", "duration", "attempt", "lease_owner",
            "finished")
    return dict(zip(keys, row, strict=True)) | {"events": events}


async def _containers(run_id: str) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "podman", "ps", "-aq", "--filter", f"label={LABEL_RUN_ID}={run_id}",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode().split()


@pytest.fixture
async def alice(pg_plane: Plane, e2e_ready: object) -> Client:
    await register(pg_plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    return await pg_plane.key("alice", "submitter")


async def test_memory_hog_ends_oom_killed_in_the_database(
    pg_plane: Plane, podman_runtime: PodmanRuntime, alice: Client
) -> None:
    async with running_executor(pg_plane.url, podman_runtime):
        run_id = await _submit(alice, "hog_memory", '{"mib": 512}',
                               {"memory_mib": 64, "timeout_seconds": 30})
        events = await wait_terminal(alice, run_id)
    assert [state_name(e.state) for e in events] == ["QUEUED", "RUNNING", "OOM_KILLED"]
    db = _row(pg_plane.url, run_id)
    assert db["state"] == "OOM_KILLED" and db["events"] == ["QUEUED", "RUNNING", "OOM_KILLED"]
    assert db["reason"] == "memory limit of 64 MiB exceeded"
    assert db["attempt"] == 1  # a limit breach is final: never retried
    assert db["exit_code"] == 137 and db["peak"] >= 63 * MiB
    assert db["lease_owner"] is None and db["finished"]
    res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=run_id), metadata=alice.md)
    assert state_name(res.run.state) == "OOM_KILLED" and res.output_json == ""
    assert await _containers(run_id) == []


async def test_spinning_agent_ends_timed_out_in_the_database(
    pg_plane: Plane, podman_runtime: PodmanRuntime, alice: Client
) -> None:
    async with running_executor(pg_plane.url, podman_runtime):
        run_id = await _submit(alice, "spin", "{}", {"memory_mib": 64, "timeout_seconds": 3})
        events = await wait_terminal(alice, run_id)
    assert [state_name(e.state) for e in events] == ["QUEUED", "RUNNING", "TIMED_OUT"]
    db = _row(pg_plane.url, run_id)
    assert db["state"] == "TIMED_OUT" and db["events"] == ["QUEUED", "RUNNING", "TIMED_OUT"]
    assert db["reason"] == "timed out after 3s"
    assert db["attempt"] == 1 and db["lease_owner"] is None and db["finished"]
    # The contract: killed at the 3 s limit, the kill taking at most its grace (then rm -f).
    assert 3 <= db["duration"] < 3 + KILL_GRACE_SECONDS + 1
    assert await _containers(run_id) == []


async def test_self_sigkill_posing_as_oom_is_recorded_as_failed(
    pg_plane: Plane, podman_runtime: PodmanRuntime, alice: Client
) -> None:
    async with running_executor(pg_plane.url, podman_runtime):
        run_id = await _submit(alice, "kill_self", '{"mib": 16}',
                               {"memory_mib": 64, "timeout_seconds": 30})
        events = await wait_terminal(alice, run_id)
    assert [state_name(e.state) for e in events] == ["QUEUED", "RUNNING", "FAILED"]
    db = _row(pg_plane.url, run_id)
    assert (db["state"], db["reason"], db["exit_code"]) == (
        "FAILED", "agent exited with code 137", 137)
    assert db["peak"] < (64 - 16) * MiB  # well under the limit: nothing for the kernel to do
    assert db["attempt"] == 1
