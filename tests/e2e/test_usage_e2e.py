"""Usage end to end: a run of known work, leased by a real executor on the jail, is stored
with what its sandbox measured, answered by GetRun (gRPC) and shown by the CLI, and counted
in the OpenTelemetry metrics with its agent, capability, owner and outcome."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from agents.build import build_image
from airlock.cli import main
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.jail import JailRuntime
from server.telemetry import setup_metrics
from tests.conftest import REPO, start_plane
from tests.e2e.conftest import register, running_executor, state_name, wait_terminal
from tests.executor import jail_support

pytestmark = [pytest.mark.podman, pytest.mark.postgres]
jail_runtime = jail_support.jail_runtime  # fixture

BURNER = REPO / "tests" / "agents" / "burner"
MiB = 1 << 20


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[str, ...], Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    for p in m.data.data_points:
                        a = dict(p.attributes or {})
                        found[(a["agent"], a["capability"], a["owner"], a["outcome"])] = p
    return found


async def test_usage_is_stored_answered_and_exported(pg_url: str, jail_runtime: JailRuntime,
                                                     base_image: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    await asyncio.to_thread(build_image, BURNER, base_image=base_image)
    reader = InMemoryMetricReader()
    handle = setup_metrics("airlock-test", reader=reader)
    assert handle is not None
    plane = await start_plane(pg_url)
    try:
        await register(plane.admin, BURNER)
        alice = await plane.key("alice", "submitter")
        async with running_executor(pg_url, jail_runtime):
            sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
                agent="burner", capability="burn",
                input_json=json.dumps({"mib": 40, "cpu_seconds": 0.5, "log_kib": 8})),
                metadata=alice.md)
            events = await wait_terminal(alice, sub.run.id)
        assert state_name(events[-1].state) == "SUCCEEDED"
        run = (await alice.runs.GetRun(rs.GetRunRequest(run_id=sub.run.id), metadata=alice.md)).run
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["runs", "get", run.id, "--address", plane.address,
                                              "--token", str(alice.token)]) == 0
        shown = dict(re.split(r"\s{2,}", line, maxsplit=1)
                     for line in capsys.readouterr().out.splitlines() if "  " in line)
    finally:
        await plane.close()
    # Tolerances as in tests/executor/test_usage_measured.py.
    assert 0.5 <= run.cpu_seconds <= 1.0, run.cpu_seconds
    assert 40 * MiB <= run.peak_memory_bytes <= 72 * MiB, run.peak_memory_bytes
    assert run.log_bytes == 8 * 1024
    assert run.output_bytes > 0 and run.duration_seconds >= 0.5
    assert shown["cpu time"] == f"{run.cpu_seconds:.2f}s", shown
    assert shown["logs"] == "8192 bytes" and shown["output"] == f"{run.output_bytes} bytes"

    key = ("burner", "burn", "alice", "SUCCEEDED")
    assert points(reader, "airlock.usage.cpu_time")[key].value == pytest.approx(run.cpu_seconds)
    assert points(reader, "airlock.usage.log_size")[key].value == run.log_bytes
    assert points(reader, "airlock.usage.output_size")[key].value == run.output_bytes
    assert points(reader, "airlock.usage.wall_time")[key].value == pytest.approx(run.duration_seconds)
    assert points(reader, "airlock.run.cpu_time")[key].count == 1
    memory = points(reader, "airlock.run.peak_memory")[key]
    assert memory.count == 1 and memory.sum == run.peak_memory_bytes
    handle.shutdown()
