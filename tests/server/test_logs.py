"""Structured logs carry the run id and the trace id."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from server.logs import JsonFormatter, _Enrich, run_context


def capture() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_Enrich())
    logger = logging.getLogger(f"test-logs-{id(out)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_carry_run_id_and_trace_id() -> None:
    logger, out = capture()
    tracer = TracerProvider().get_tracer("t")
    with run_context("run_abc"), tracer.start_as_current_span("work") as span:
        logger.info("started %s", "x")
    logger.warning("outside")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "started x" and first["run_id"] == "run_abc"
    assert first["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert "run_id" not in second and "trace_id" not in second
    assert second["level"] == "WARNING"
