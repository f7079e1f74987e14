"""Run events on NATS: subjects, the JSON payload (``airlock.v1.RunEventPayload``), headers.

The one module that knows the wire shape of an event; the relay publishes with it and tests
(and any Python consumer) decode with it. JSON is the protobuf JSON mapping with proto field
names, enum names, RFC 3339 timestamps and every field present (see ``proto/.../event.proto``
and ``docs/events.md``).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from airlock.v1 import event_pb2
from server.domain.models import RunEvent
from server.domain.states import RunState
from server.wire.timestamps import ts

SCHEMA_VERSION = 1
SCHEMA = f"airlock.v1.RunEventPayload/{SCHEMA_VERSION}"
CONTENT_TYPE = "application/json"

# Header names (NATS headers are case-sensitive; these are the exact spellings we send).
MSG_ID = "Nats-Msg-Id"
TRACEPARENT = "traceparent"
CONTENT_TYPE_HEADER = "Content-Type"
SCHEMA_HEADER = "Airlock-Schema"


def subject(prefix: str, agent: str, state: str) -> str:
    """``airlock.runs.<agent>.<state lower case>``. Agent names (``[a-z][a-z0-9-]*``) and
    state names are valid subject tokens as they are."""
    return f"{prefix}.{agent}.{state.lower()}"


def _state_name(s: RunState | None) -> str:
    return f"RUN_STATE_{s.value}" if s is not None else "RUN_STATE_UNSPECIFIED"


def payload(e: RunEvent) -> event_pb2.RunEventPayload:
    return event_pb2.RunEventPayload(
        schema_version=SCHEMA_VERSION, event_id=e.event_id, run_id=e.run_id, sequence=e.seq,
        agent=e.agent, version=e.version, capability=e.capability,
        state=_state_name(e.state), previous_state=_state_name(e.previous_state),
        attempt=e.attempt, reason=e.reason, actor=e.actor, create_time=ts(e.created_at),
        traceparent=e.traceparent, chain_sequence=e.chain_seq, prev_hash=e.prev_hash, hash=e.hash,
    )


def to_json_bytes(msg: Message) -> bytes:
    """The protobuf JSON mapping as Airlock writes it on NATS (compact, UTF-8)."""
    doc = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def encode(e: RunEvent) -> bytes:
    return to_json_bytes(payload(e))


def decode(data: bytes) -> event_pb2.RunEventPayload:
    """Parse a payload; fields added by a newer publisher are ignored."""
    return json_format.Parse(data, event_pb2.RunEventPayload(), ignore_unknown_fields=True)


def headers(e: RunEvent, traceparent: str) -> dict[str, Any]:
    h = {MSG_ID: e.event_id, CONTENT_TYPE_HEADER: CONTENT_TYPE, SCHEMA_HEADER: SCHEMA}
    if traceparent:
        h[TRACEPARENT] = traceparent
    return h
