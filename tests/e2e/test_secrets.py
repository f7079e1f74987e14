"""Named secrets: resolved by the executor, mounted into the sandbox, never stored or evented."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from tests.conftest import Plane
from tests.e2e.conftest import SAMPLES, register, running_executor, state_name, wait_terminal

pytestmark = [pytest.mark.podman, pytest.mark.postgres]

SECRET = "s3cr3t-value-that-must-not-leak-7f1c"


async def dump_database(plane: Plane) -> str:
    """Every row of every table as text, to search for the secret's value."""
    out = []
    async with plane.cp.store.engine.connect() as conn:
        for table in ("runs", "run_events", "audit_log", "approvals", "approval_decisions",
                      "agent_versions", "executors"):
            rows = await conn.execute(text(f"SELECT * FROM {table}"))
            out.extend(repr(tuple(r)) for r in rows)
    return "\n".join(out)


async def test_secret_reaches_the_agent_as_a_file_and_nowhere_else(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "SIGNING_KEY").write_text(SECRET)
    await register(pg_plane.admin, SAMPLES / "signed-digest")
    alice = await pg_plane.key("alice", "submitter")
    caplog.set_level("DEBUG")
    async with running_executor(pg_plane.url, podman_runtime, secrets_dir=secrets_dir):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="signed-digest", capability="sign", input_json='{"text": "pay 10 EUR"}',
            secrets=["SIGNING_KEY"]), metadata=alice.md)
        assert "secrets requested: SIGNING_KEY" in " ".join(sub.run.risk_reasons)
        events = await wait_terminal(alice, sub.run.id)
        res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=sub.run.id), metadata=alice.md)
    assert state_name(events[-1].state) == "SUCCEEDED", res.error_message
    expected = hmac.new(SECRET.encode(), b"pay 10 EUR", hashlib.sha256).hexdigest()
    assert json.loads(res.output_json)["digest"] == expected  # the agent really had the key
    assert SECRET not in await dump_database(pg_plane)
    assert SECRET not in res.logs and SECRET not in str(res)
    assert SECRET not in caplog.text
    assert not any(sub.run.id in p.name for p in Path("/run/airlock").iterdir())  # noqa: ASYNC240


async def test_missing_secret_fails_the_run_naming_it(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object, tmp_path: Path,
) -> None:
    await register(pg_plane.admin, SAMPLES / "signed-digest")
    alice = await pg_plane.key("alice", "submitter")
    async with running_executor(pg_plane.url, podman_runtime, secrets_dir=tmp_path,
                                secrets_env_prefix="AIRLOCK_TEST_NO_SUCH_"):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="signed-digest", capability="sign", input_json='{"text": "x"}',
            secrets=["SIGNING_KEY"]), metadata=alice.md)
        events = await wait_terminal(alice, sub.run.id)
    assert state_name(events[-1].state) == "FAILED"
    assert "SIGNING_KEY" in events[-1].reason and "not available" in events[-1].reason
