"""`airlock executor` with AIRLOCK_RELAY_EVENTS=true also publishes the outbox to JetStream."""

from __future__ import annotations

import pytest

from airlock.v1 import run_service_pb2 as rs
from tests.conftest import Plane
from tests.e2e.conftest import SAMPLES, register, wait_terminal
from tests.e2e.test_crash_safety import executor_process
from tests.events.conftest import Names, fetch_all
from tests.executor.conftest import base_image, podman_runtime, sample_images  # noqa: F401

pytestmark = [pytest.mark.podman, pytest.mark.postgres, pytest.mark.nats]


@pytest.mark.usefixtures("sample_images")
async def test_executor_process_relays_its_runs_events(pg_plane: Plane, nats_url: str, names: Names) -> None:
    await register(pg_plane.admin, SAMPLES / "text-transform")
    alice = await pg_plane.key("alice", "submitter")
    with executor_process(pg_plane.url, "relaying", AIRLOCK_RELAY_EVENTS="true",
                          AIRLOCK_NATS_URL=nats_url, AIRLOCK_NATS_STREAM=names.stream,
                          AIRLOCK_NATS_SUBJECT_PREFIX=names.prefix, AIRLOCK_RELAY_POLL_SECONDS="0.5"):
        sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-transform", capability="uppercase", input_json='{"text": "relay me"}'),
            metadata=alice.md)
        await wait_terminal(alice, sub.run.id)
        got = await fetch_all(nats_url, names, expected=3)
    mine = [m for m in got if m.payload.run_id == sub.run.id]
    assert [m.subject.rsplit(".", 1)[-1] for m in mine] == ["queued", "running", "succeeded"]
    assert [m.headers["Nats-Msg-Id"] for m in mine] == [f"{sub.run.id}.{i}" for i in (1, 2, 3)]
