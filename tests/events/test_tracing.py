"""One trace per run, from the submitting RPC through approval, lease, sandbox, completion and
the NATS publishes; the container sees the sandbox span's context as TRACEPARENT.

Everything is real (gRPC, PostgreSQL, podman, JetStream); spans go to an in-memory exporter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from server.telemetry import setup_metrics, setup_tracing
from tests.conftest import start_plane
from tests.e2e.conftest import MISBEHAVE, register, running_executor, state_name, wait_terminal
from tests.events.conftest import Names, fetch_all, relay_settings, running_relay, unpublished
from tests.executor.conftest import base_image, misbehave_image, podman_runtime  # noqa: F401
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.podman, pytest.mark.postgres, pytest.mark.nats]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    handle = setup_tracing("airlock-test", exporter=exp)
    assert handle is not None
    try:
        yield exp
    finally:
        handle.shutdown()


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


async def test_one_trace_per_run(exporter: InMemorySpanExporter, pg_url: str, nats_url: str,
                                 names: Names, podman_runtime: PodmanRuntime,  # noqa: F811
                                 misbehave_image: str) -> None:  # noqa: F811
    reader = InMemoryMetricReader()
    metrics_handle = setup_metrics("airlock-test", reader=reader)
    assert metrics_handle is not None
    plane = await start_plane(pg_url)  # tracing is on: the RPC interceptor is installed
    try:
        admin = plane.admin
        await register(admin, MISBEHAVE, **{"risk: critical": "risk: high"})  # one approval
        alice = await plane.key("alice", "submitter")
        bob = await plane.key("bob", "approver")
        async with running_executor(pg_url, podman_runtime), \
                running_relay(relay_settings(pg_url, nats_url, names)) as rr:
            sub = await alice.runs.SubmitRun(rs.SubmitRunRequest(
                agent="misbehave", capability="whoami", input_json="{}"), metadata=alice.md)
            run_id = sub.run.id
            await bob.approvals.Approve(aps.ApproveRequest(run_id=run_id), metadata=bob.md)
            events = await wait_terminal(alice, run_id)
            assert [state_name(e.state) for e in events] == [
                "PENDING_APPROVAL", "QUEUED", "RUNNING", "SUCCEEDED"]
            await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)
        res = await alice.runs.GetRunResult(rs.GetRunResultRequest(run_id=run_id),
                                            metadata=alice.md)
        async with plane.cp.store.read() as tx:
            run = await tx.get_run(run_id)
        assert run is not None
    finally:
        await plane.close()

    finished: list[ReadableSpan] = list(exporter.get_finished_spans())
    _, trace_hex, rpc_span_hex, _ = run.traceparent.split("-")
    in_trace = [s for s in finished if _hex(s.context.trace_id, 32) == trace_hex]
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in in_trace:
        by_name.setdefault(s.name, []).append(s)

    # The submitting RPC is the root, and its context is what the run stored.
    [rpc] = by_name["/airlock.v1.RunService/SubmitRun"]
    assert rpc.kind is SpanKind.SERVER and rpc.parent is None
    assert _hex(rpc.context.span_id, 16) == rpc_span_hex

    def one(name: str) -> ReadableSpan:
        found = by_name.get(name, [])
        assert len(found) == 1, (name, sorted(by_name))
        return found[0]

    def parent_of(s: ReadableSpan) -> int:
        assert s.parent is not None, s.name
        return s.parent.span_id

    approval, lease, execute = one("airlock.approval.wait"), one("airlock.run.lease"), \
        one("airlock.run.execute")
    start, sandbox, complete = one("airlock.sandbox.start"), one("airlock.sandbox"), \
        one("airlock.run.complete")
    for s in (approval, lease, execute):
        assert parent_of(s) == rpc.context.span_id, s.name
    for s in (start, sandbox, complete):
        assert parent_of(s) == execute.context.span_id, s.name
    assert dict(approval.attributes or {})["airlock.approval.result"] == "approved"
    assert approval.start_time is not None and rpc.start_time is not None
    assert approval.start_time >= rpc.start_time - 10**9  # opened at submission
    assert dict(sandbox.attributes or {})["airlock.sandbox.termination"] == "exited"
    assert dict(complete.attributes or {})["airlock.outcome"] == "SUCCEEDED"

    # One producer span per event, in the same trace; the headers carry each one's context.
    publishes = by_name["airlock.events.publish"]
    assert sorted(str(p.attributes["airlock.state"]) for p in publishes if p.attributes) == sorted(
        ["PENDING_APPROVAL", "QUEUED", "RUNNING", "SUCCEEDED"])
    assert all(p.kind is SpanKind.PRODUCER and parent_of(p) == rpc.context.span_id
               for p in publishes)
    got = await fetch_all(nats_url, names, 4)
    header_spans = {m.headers["traceparent"].split("-")[2] for m in got}
    assert {m.headers["traceparent"].split("-")[1] for m in got} == {trace_hex}
    assert header_spans == {_hex(p.context.span_id, 16) for p in publishes}
    assert {m.payload.traceparent for m in got} == {run.traceparent}

    # Nothing about this run lives in another trace; other RPCs are traces of their own.
    about_run = [s for s in finished
                 if s.attributes and s.attributes.get("airlock.run_id") == run_id]
    assert {_hex(s.context.trace_id, 32) for s in about_run} == {trace_hex}
    approve_rpc = [s for s in finished if s.name == "/airlock.v1.ApprovalService/Approve"]
    assert approve_rpc and all(_hex(s.context.trace_id, 32) != trace_hex for s in approve_rpc)

    # The container saw the sandbox span's context.
    version, trace_id, span_id, flags = json.loads(res.output_json)["env"]["TRACEPARENT"].split("-")
    assert (version, trace_id, span_id) == ("00", trace_hex, _hex(sandbox.context.span_id, 16))
    assert int(flags, 16) & 1  # sampled

    # Metrics recorded along the way.
    names_seen = {m.name: m for rm in reader.get_metrics_data().resource_metrics
                  for sm in rm.scope_metrics for m in sm.metrics}
    assert {"airlock.runs.finished", "airlock.approval.wait", "airlock.sandbox.start_latency",
            "airlock.sandbox.duration", "airlock.events.published"} <= set(names_seen)
    outcomes = {dict(p.attributes or {}).get("outcome"): p.value
                for p in names_seen["airlock.runs.finished"].data.data_points}
    assert outcomes.get("SUCCEEDED", 0) >= 1
    metrics_handle.shutdown()
