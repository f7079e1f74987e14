"""One trace per run, from the submitting RPC through approval, lease, sandbox, completion and
the NATS publishes; the container sees the sandbox span's context as TRACEPARENT. Later RPCs
about the run (Approve, WatchRun, GetRunResult) are traces of their own, linked to the run's.
A failed run's spans carry ERROR status. Names and attributes follow OpenTelemetry's RPC and
messaging conventions.

Everything is real (gRPC, PostgreSQL, podman, JetStream); spans go to an in-memory exporter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from server.telemetry import service_version, setup_metrics, setup_tracing
from tests.conftest import start_plane
from tests.e2e.conftest import MISBEHAVE, register, running_executor, state_name, wait_terminal
from tests.events.conftest import Names, fetch_all, relay_settings, running_relay, unpublished
from tests.executor.conftest import base_image, misbehave_image, podman_runtime  # noqa: F401
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.podman, pytest.mark.postgres, pytest.mark.nats]

SEQUENCE = {"PENDING_APPROVAL": 1, "QUEUED": 2, "RUNNING": 3, "SUCCEEDED": 4}


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


def in_trace(spans: list[ReadableSpan], trace_hex: str) -> dict[str, list[ReadableSpan]]:
    """The spans of one trace, by name."""
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        if _hex(s.context.trace_id, 32) == trace_hex:
            by_name.setdefault(s.name, []).append(s)
    return by_name


def assert_children_start_after_parents(spans: list[ReadableSpan]) -> None:
    by_id = {s.context.span_id: s for s in spans}
    for s in spans:
        parent = by_id.get(s.parent.span_id) if s.parent is not None else None
        if parent is not None:
            assert s.start_time is not None and parent.start_time is not None
            assert s.start_time >= parent.start_time, (s.name, "starts before", parent.name)


def links_to(s: ReadableSpan, trace_hex: str) -> bool:
    return any(_hex(link.context.trace_id, 32) == trace_hex for link in s.links)


async def test_one_trace_per_run(exporter: InMemorySpanExporter, pg_url: str, nats_url: str,
                                 names: Names, podman_runtime: PodmanRuntime,  # noqa: F811
                                 misbehave_image: str) -> None:  # noqa: F811
    reader = InMemoryMetricReader()
    metrics_handle = setup_metrics("airlock-test", reader=reader)
    assert metrics_handle is not None
    plane = await start_plane(pg_url)  # tracing is on: the RPC interceptor is installed
    plane_port = plane.cp.grpc_port
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
            run = await tx.runs.get(run_id)
        assert run is not None
    finally:
        await plane.close()

    finished: list[ReadableSpan] = list(exporter.get_finished_spans())
    _, trace_hex, rpc_span_hex, _ = run.traceparent.split("-")
    by_name = in_trace(finished, trace_hex)
    everything = [s for group in by_name.values() for s in group]

    # The submitting RPC is the root, and its context is what the run stored. Its name and
    # attributes follow the RPC conventions (no leading slash, no deprecated net.* keys).
    [rpc] = by_name["airlock.v1.RunService/SubmitRun"]
    assert rpc.kind is SpanKind.SERVER and rpc.parent is None
    assert _hex(rpc.context.span_id, 16) == rpc_span_hex
    attrs = dict(rpc.attributes or {})
    assert {k: attrs.get(k) for k in ("rpc.system", "rpc.service", "rpc.method",
                                      "rpc.grpc.status_code", "server.address", "server.port")
            } == {"rpc.system": "grpc", "rpc.service": "airlock.v1.RunService",
                  "rpc.method": "SubmitRun", "rpc.grpc.status_code": 0,
                  "server.address": "127.0.0.1", "server.port": plane_port}
    assert attrs["client.address"] == "127.0.0.1"
    assert not [k for s in finished for k in (s.attributes or {}) if k.startswith("net.")]
    assert not [s.name for s in finished if s.name.startswith("/")]
    assert rpc.resource.attributes["service.version"] == service_version() != ""
    assert rpc.resource.attributes["service.name"]

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
    run_span = one("airlock.run")
    for s in (approval, lease, execute, run_span):
        assert parent_of(s) == rpc.context.span_id, s.name
    for s in (start, sandbox, complete):
        assert parent_of(s) == execute.context.span_id, s.name
    assert dict(approval.attributes or {})["airlock.approval.result"] == "approved"
    # A child never starts before its parent (sandbox.start runs from the lease, and so does
    # the attempt's execute span).
    assert_children_start_after_parents(everything)
    assert start.start_time is not None and execute.start_time is not None
    assert start.start_time >= execute.start_time
    assert dict(sandbox.attributes or {})["airlock.sandbox.termination"] == "exited"
    for s in (execute, complete, run_span):
        assert dict(s.attributes or {})["airlock.outcome"] == "SUCCEEDED", s.name
        assert s.status.status_code is StatusCode.UNSET, s.name

    # One producer span per event, in the same trace, named "publish <subject>" with the
    # messaging attributes; the headers carry each one's context.
    publishes = [s for n, group in by_name.items() if n.startswith("publish ") for s in group]
    assert sorted(p.name for p in publishes) == sorted(
        f"publish {names.prefix}.misbehave.{st}"
        for st in ("pending_approval", "queued", "running", "succeeded"))
    for p in publishes:
        pa = dict(p.attributes or {})
        assert p.kind is SpanKind.PRODUCER and parent_of(p) == rpc.context.span_id
        assert pa["messaging.system"] == "nats"
        assert pa["messaging.destination.name"] == p.name.removeprefix("publish ")
        assert pa["messaging.operation.type"] == "send"  # "publish" is its deprecated name
        assert pa["messaging.operation.name"] == "publish"
        assert pa["messaging.message.id"] == f"{run_id}.{SEQUENCE[str(pa['airlock.state'])]}"
        assert f"nats://{pa['server.address']}:{pa['server.port']}" == nats_url
    got = await fetch_all(nats_url, names, 4)
    header_spans = {m.headers["traceparent"].split("-")[2] for m in got}
    assert {m.headers["traceparent"].split("-")[1] for m in got} == {trace_hex}
    assert header_spans == {_hex(p.context.span_id, 16) for p in publishes}
    assert {m.payload.traceparent for m in got} == {run.traceparent}

    # Nothing about this run lives in another trace; other RPCs are traces of their own.
    about_run = [s for s in finished
                 if s.attributes and s.attributes.get("airlock.run_id") == run_id]
    assert {_hex(s.context.trace_id, 32) for s in about_run} == {trace_hex}
    # RPCs about the run are traces of their own, each linked to the run's trace.
    for name in ("airlock.v1.ApprovalService/Approve", "airlock.v1.RunService/WatchRun",
                 "airlock.v1.RunService/GetRunResult"):
        spans = [s for s in finished if s.name == name]
        assert spans, name
        for s in spans:
            assert _hex(s.context.trace_id, 32) != trace_hex and s.parent is None, name
            assert links_to(s, trace_hex), name

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


async def test_failed_runs_spans_are_errors(exporter: InMemorySpanExporter, pg_url: str,
                                           podman_runtime: PodmanRuntime,  # noqa: F811
                                           misbehave_image: str) -> None:  # noqa: F811
    """FAILED, TIMED_OUT and OOM_KILLED mark the attempt's execute and complete spans and the
    run's span ERROR, with the state and reason as the description; CANCELLED does not (a
    decision, not a fault: see docs/events.md)."""
    plane = await start_plane(pg_url)
    try:
        await register(plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
        alice = await plane.key("alice", "submitter")
        # Cancelled while queued, before any executor exists.
        queued = await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="misbehave", capability="ok", input_json="{}"), metadata=alice.md)
        await alice.runs.CancelRun(rs.CancelRunRequest(run_id=queued.run.id, reason="no"),
                                   metadata=alice.md)
        cases = {"FAILED": ("fail", "{}", {}),
                 "TIMED_OUT": ("spin", "{}", {"timeout_seconds": 1}),
                 "OOM_KILLED": ("hog_memory", '{"mib": 512}', {"memory_mib": 64})}
        async with running_executor(pg_url, podman_runtime, slots=3):
            subs = {want: await alice.runs.SubmitRun(rs.SubmitRunRequest(
                agent="misbehave", capability=cap, input_json=inp, limits=limits),
                metadata=alice.md) for want, (cap, inp, limits) in cases.items()}
            for want, sub in subs.items():
                events = await wait_terminal(alice, sub.run.id)
                assert state_name(events[-1].state) == want, events[-1]
        runs = {}
        async with plane.cp.store.read() as tx:
            for want, sub in [*subs.items(), ("CANCELLED", queued)]:
                runs[want] = await tx.runs.get(sub.run.id)
    finally:
        await plane.close()

    finished: list[ReadableSpan] = list(exporter.get_finished_spans())
    for want, run in runs.items():
        assert run is not None and run.traceparent
        by_name = in_trace(finished, run.traceparent.split("-")[1])
        assert_children_start_after_parents([s for g in by_name.values() for s in g])
        names_ = ["airlock.run"] if want == "CANCELLED" else [
            "airlock.run", "airlock.run.execute", "airlock.run.complete"]
        for name in names_:
            [s] = by_name[name]
            assert dict(s.attributes or {})["airlock.outcome"] == want, (want, name)
            if want == "CANCELLED":
                assert s.status.status_code is StatusCode.UNSET, (want, name)
            else:
                assert s.status.status_code is StatusCode.ERROR, (want, name)
                assert (s.status.description or "").startswith(f"{want}: "), s.status
        # The RPC root itself answered OK: the submission succeeded.
        [rpc] = by_name["airlock.v1.RunService/SubmitRun"]
        assert rpc.status.status_code is StatusCode.UNSET
