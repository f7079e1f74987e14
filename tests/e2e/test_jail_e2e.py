"""The jail runtime end to end: runs submitted over gRPC, leased by a real executor whose
runtime is the jail, recorded in PostgreSQL. The containment suite proves the jail's verdicts;
these prove they become the runs' final states (and that fakes stay plain failures) all the
way to the database.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.jail import JailRuntime
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, register, running_executor, state_name, wait_terminal
from tests.executor import jail_support
from tests.executor.jail_support import jail_cgroups
from tests.helpers.client import Client

pytestmark = [pytest.mark.podman, pytest.mark.postgres]
jail_runtime = jail_support.jail_runtime  # fixture

MiB = 1 << 20


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
    pg_plane: Plane, jail_runtime: JailRuntime, alice: Client
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
    async with running_executor(pg_plane.url, jail_runtime, slots=3):
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
        assert jail_cgroups(jail_runtime, ids[cap]) == [], cap
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
