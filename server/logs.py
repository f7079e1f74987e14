"""Process logging: one JSON object per line (default for services) or plain text.

Every record carries the run id of the run being handled (``run_context``), the request id of
the API call being handled (``request_context``; the transports send it back as the
``x-request-id`` header and trailer) and the trace id of the active OpenTelemetry span, so logs,
events, traces and a caller's error report join up.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from opentelemetry import trace

_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("airlock_run_id", default=None)
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("airlock_request_id",
                                                                         default=None)
REQUEST_ID_HEADER = "x-request-id"
# A caller's own request id is kept when it is a plain token (what fits in a header and a log
# line unescaped); anything else is replaced by one the server makes.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")


def request_id_for(supplied: str | None) -> str:
    """The caller's request id if it is a sane token, else a new one."""
    if supplied is not None and _SANE_REQUEST_ID.fullmatch(supplied):
        return supplied
    return "req_" + uuid.uuid4().hex


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


@contextlib.contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Tag every log record emitted inside (this task and its children) with ``request_id``."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # left from another context (a closed generator)
            _REQUEST_ID.reset(token)


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
        record.request_id = getattr(record, "request_id", None) or _REQUEST_ID.get()
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
        for key in ("run_id", "request_id", "trace_id"):
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
        tags = [t for t in (getattr(record, "run_id", None), getattr(record, "request_id", None))
                if t]
        return f"{line} [{' '.join(tags)}]" if tags else line


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once, for a whole process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Enrich())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
