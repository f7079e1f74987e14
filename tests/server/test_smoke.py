"""The fixtures give a working control plane on both dialects."""

from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from airlock.v1.run_pb2 import RUN_STATE_QUEUED
from tests.conftest import Plane, manifest_text


async def test_register_and_submit_low_risk_is_queued(plane: Plane) -> None:
    admin = plane.admin
    await admin.registry.RegisterAgentVersion(
        reg.RegisterAgentVersionRequest(manifest=manifest_text()), metadata=admin.md)
    alice = await plane.key("alice", "submitter")
    resp = await alice.runs.SubmitRun(
        rs.SubmitRunRequest(agent="echo", capability="echo", input_json='{"text": "hi"}'),
        metadata=alice.md)
    assert resp.run.state == RUN_STATE_QUEUED
    assert resp.run.submitter == "alice"
