"""The executor runs only what was approved: a run changed in the database after its approval
is refused (real PostgreSQL, a real executor, real podman containers)."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import text

from airlock.v1 import audit_service_pb2 as aus
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from executor.worker import ACTION_REFUSED
from tests.conftest import Plane
from tests.e2e.conftest import SAMPLES, register, running_executor, state_name, wait_terminal
from tests.helpers.api import approve

pytestmark = [pytest.mark.podman, pytest.mark.postgres]


async def test_run_changed_after_approval_is_refused(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = pg_plane.admin
    await register(admin, SAMPLES / "text-transform", **{"risk: low": "risk: high"})
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    runs = []
    for word in ("kept", "changed"):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-transform", capability="uppercase",
            input_json=json.dumps({"text": word})), metadata=alice.md)
        await approve(bob, sub.run.id, "fine")
        runs.append(sub.run)
    kept, changed = runs
    # Behind the control plane's back, after the approval, before any executor took it.
    async with pg_plane.cp.store.transaction() as tx:
        await tx.conn.execute(text("UPDATE runs SET input_json = :i WHERE id = :r"),
                              {"i": json.dumps({"text": "something else"}), "r": changed.id})
    caplog.set_level(logging.ERROR, logger="executor.worker")
    async with running_executor(pg_plane.url, podman_runtime):
        ok = await wait_terminal(alice, kept.id)
        refused = await wait_terminal(alice, changed.id)
    assert state_name(ok[-1].state) == "SUCCEEDED"
    assert state_name(refused[-1].state) == "FAILED"
    assert [state_name(e.state) for e in refused][-2:] == ["RUNNING", "FAILED"]
    assert refused[-1].reason.startswith("refused: the action to run")
    assert changed.action_digest in refused[-1].reason
    res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=changed.id),
                                        metadata=alice.md)
    assert res.error_code == ACTION_REFUSED and res.output_json == ""
    assert res.run.duration_seconds == 0  # no sandbox ran
    # An audit record of the refusal, on the run's chain, and an error line in the log.
    records = await admin.audit.ListAuditRecords(aus.ListAuditRecordsRequest(target=changed.id),
                                                 metadata=admin.md)
    refusal = [r for r in records.records if r.action == "run.refused"]
    assert len(refusal) == 1 and refusal[0].chain == f"run:{changed.id}"
    assert json.loads(refusal[0].details_json)["submitted"] == changed.action_digest
    assert any(changed.id in r.getMessage() and "REFUSED" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    # And verification names the changed run.
    v = await admin.audit.VerifyAuditTrail(aus.VerifyAuditTrailRequest(), metadata=admin.md)
    assert not v.ok and v.problem.record == f"runs {changed.id}"
