"""Telemetry is off until configured; with an OTLP endpoint, spans and metrics go there. RPC
server spans, run outcome spans and the resource follow OpenTelemetry's conventions."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from server import telemetry
from server.transport import tracing


class Collector:
    """A stand-in OTLP/HTTP collector: records (path, content type, body size) per POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, int]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.posts.append((self.path, self.headers.get("Content-Type", ""), len(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


def test_off_without_configuration() -> None:
    assert telemetry.setup_tracing("x", None) is None
    assert telemetry.setup_metrics("x", None) is None
    assert telemetry.setup_telemetry("x", None) == []
    # The context still travels when nothing exports: a no-op span carries its parent.
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with telemetry.span("child", parent=tp):
        got = telemetry.current_traceparent()
    # Same trace, whether or not an earlier test left an SDK provider installed in this
    # process (with none, the no-op span carries the parent's context unchanged).
    assert got.split("-")[1] == tp.split("-")[1]


def test_otlp_http_export(collector: Collector) -> None:
    handles = telemetry.setup_telemetry("airlock-test", collector.url)
    assert len(handles) == 2 and telemetry.tracing_enabled()
    try:
        with telemetry.span("airlock.test"):
            pass
        telemetry.metrics_api().run_finished("SUCCEEDED")
        for h in handles:
            h.force_flush()
    finally:
        for h in handles:
            h.shutdown()
    paths = {(p, ct) for p, ct, size in collector.posts if size > 0}
    assert ("/v1/traces", "application/x-protobuf") in paths
    assert ("/v1/metrics", "application/x-protobuf") in paths
    assert not telemetry.metrics_enabled()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    handle = telemetry.setup_tracing("airlock-test", exporter=exp)
    assert handle is not None
    try:
        yield exp
    finally:
        handle.shutdown()


def test_resource_has_service_version(exporter: InMemorySpanExporter) -> None:
    with telemetry.span("airlock.test"):
        pass
    [s] = [s for s in exporter.get_finished_spans() if s.name == "airlock.test"]
    assert s.resource.attributes["service.version"] == version("airlock")
    assert telemetry.resource_attributes("x")["service.version"] == version("airlock")


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED", "TIMED_OUT", "OOM_KILLED",
                                   "CANCELLED", "REJECTED", "EXPIRED"])
def test_run_span_status_by_outcome(exporter: InMemorySpanExporter, state: str) -> None:
    """Failures are ERROR with "<STATE>: <reason>"; decisions (cancel, reject, expiry) and
    success keep the default status. The span starts at submission and joins the run's trace."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    created = datetime.now(UTC) - timedelta(seconds=3)
    telemetry.run_ended(run_id="run_x", traceparent=tp, agent="a", capability="c", attempt=1,
                        created_at=created, state=state, reason="why")
    [s] = [s for s in exporter.get_finished_spans() if s.name == "airlock.run"]
    assert format(s.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert s.parent is not None and format(s.parent.span_id, "016x") == "b7ad6b7169203331"
    assert s.start_time == int(created.timestamp() * 1e9)
    assert dict(s.attributes or {})["airlock.outcome"] == state
    if state in ("FAILED", "TIMED_OUT", "OOM_KILLED"):
        assert (s.status.status_code, s.status.description) == (StatusCode.ERROR, f"{state}: why")
    else:
        assert s.status.status_code is StatusCode.UNSET


class _Failing:
    """A gRPC service whose methods end with a given status (or raise)."""

    @staticmethod
    def handlers() -> grpc.GenericRpcHandler:
        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            what = request.decode()
            if what == "raise":
                raise RuntimeError("boom")
            if what != "ok":
                await context.abort(grpc.StatusCode[what], "no")
            return b"fine"

        async def stream(request: bytes, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[bytes]:
            for _ in range(3):
                yield telemetry.current_traceparent().encode()

        ident = (lambda b: b)  # noqa: E731
        return grpc.method_handlers_generic_handler("test.v1.Probe", {
            "Call": grpc.unary_unary_rpc_method_handler(call, ident, ident),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, ident, ident)})


async def test_rpc_server_spans_follow_conventions(exporter: InMemorySpanExporter) -> None:
    [interceptor] = tracing.server_interceptors()
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers([_Failing.handlers()])
    port = server.add_insecure_port("127.0.0.1:0")
    tracing.set_server_address("127.0.0.1", port)
    await server.start()
    caller = "00-11111111111111111111111111111111-2222222222222222-01"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/test.v1.Probe/Call")
            assert await call(b"ok", metadata=(("traceparent", caller),)) == b"fine"
            for what in ("NOT_FOUND", "INTERNAL", "raise"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(what.encode())
            got = [m async for m in ch.unary_stream("/test.v1.Probe/Stream")(b"")]
    finally:
        await server.stop(0)
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("test.v1.Probe/")]
    calls = [s for s in spans if s.name == "test.v1.Probe/Call"]
    assert len(calls) == 4
    ok, not_found, internal, raised = calls
    for s in spans:
        a = dict(s.attributes or {})
        assert s.kind is SpanKind.SERVER
        assert (a["rpc.system"], a["rpc.service"]) == ("grpc", "test.v1.Probe")
        assert a["rpc.method"] == s.name.split("/")[1]
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", port)
        assert a["client.address"] == "127.0.0.1" and isinstance(a["client.port"], int)
        assert not [k for k in a if k.startswith("net.")]
    # The caller's traceparent is continued.
    assert format(ok.context.trace_id, "032x") == "1" * 32
    assert ok.parent is not None and format(ok.parent.span_id, "016x") == "2" * 16
    # Status codes: the caller's mistakes leave the span UNSET; server faults are ERROR.
    codes = [dict(s.attributes or {})["rpc.grpc.status_code"] for s in calls]
    assert codes == [0, grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.INTERNAL.value[0],
                     grpc.StatusCode.UNKNOWN.value[0]]
    assert [s.status.status_code for s in calls] == [
        StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR, StatusCode.ERROR]
    assert (internal.status.description or "").startswith("INTERNAL")
    assert [e.name for e in raised.events] == ["exception"] and not not_found.events
    # A streaming handler runs inside its span (each message carries the span's context).
    [stream_span] = [s for s in spans if s.name == "test.v1.Probe/Stream"]
    assert {m.decode().split("-")[2] for m in got} == {format(stream_span.context.span_id, "016x")}
