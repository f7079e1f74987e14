"""Workflow events on NATS: subject, JSON payload (``airlock.v1.WorkflowEventPayload``), headers.

Published by the events relay into the run events' stream, beside them (see
``proto/airlock/v1/workflow.proto`` and ``docs/events.md``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from airlock.v1 import workflow_pb2
from server.domain.workflow_models import WorkflowEvent
from server.domain.workflows import WorkflowState
from server.wire.event_codec import CONTENT_TYPE, CONTENT_TYPE_HEADER, MSG_ID, SCHEMA_HEADER, TRACEPARENT, to_json_bytes
from server.wire.timestamps import ts

SCHEMA_VERSION = 1
SCHEMA = f"airlock.v1.WorkflowEventPayload/{SCHEMA_VERSION}"
SUBJECT_TOKEN = "_workflows"  # never an agent name ([a-z][a-z0-9-]*)


def subject(prefix: str, name: str, state: str) -> str:
    """``<prefix>._workflows.<name>.<state lower case>``."""
    return f"{prefix}.{SUBJECT_TOKEN}.{name}.{state.lower()}"


def event_id(e: WorkflowEvent) -> str:
    return f"{e.workflow_id}.{e.seq}"


def _state(s: WorkflowState | None) -> str:
    return f"WORKFLOW_STATE_{s.value}" if s is not None else "WORKFLOW_STATE_UNSPECIFIED"


def encode(e: WorkflowEvent) -> bytes:
    return to_json_bytes(workflow_pb2.WorkflowEventPayload(
        schema_version=SCHEMA_VERSION, event_id=event_id(e), workflow_id=e.workflow_id,
        sequence=e.seq, name=e.name, state=_state(e.state),
        previous_state=_state(e.previous_state),
        reason=e.reason, actor=e.actor, create_time=ts(e.created_at), traceparent=e.traceparent))


def decode(data: bytes) -> workflow_pb2.WorkflowEventPayload:
    return json_format.Parse(data, workflow_pb2.WorkflowEventPayload(), ignore_unknown_fields=True)


def headers(e: WorkflowEvent) -> dict[str, Any]:
    h = {MSG_ID: event_id(e), CONTENT_TYPE_HEADER: CONTENT_TYPE, SCHEMA_HEADER: SCHEMA}
    if e.traceparent:
        h[TRACEPARENT] = e.traceparent
    return h
