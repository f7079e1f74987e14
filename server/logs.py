"""Process logging: one JSON object per line (default for services) or plain text.

Every record carries the run id of the run being handled (``run_context``) and the trace id
of the active OpenTelemetry span, so logs, events and traces of one run join up.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from opentelemetry import trace

_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("airlock_run_id", default=None)


@contextlib.contextmanager
def run_context(run_id: str) -> Iterator[None]:
    """Tag every log record emitted inside (this task and its children) with ``run_id``."""
    token = _RUN_ID.set(run_id)
    try:
        yield
    finally:
        _RUN_ID.reset(token)


class _Enrich(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = getattr(record, "run_id", None) or _RUN_ID.get()
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("run_id", "trace_id"):
            if getattr(record, key, None):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        run_id = getattr(record, "run_id", None)
        return f"{line} [{run_id}]" if run_id else line


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once, for a whole process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Enrich())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
