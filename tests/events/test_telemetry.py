"""Telemetry is off until configured; with an OTLP endpoint, spans and metrics go there."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from server import telemetry


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
        if not telemetry.tracing_enabled():
            assert telemetry.current_traceparent() == tp


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
