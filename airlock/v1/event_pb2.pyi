import datetime

from airlock.v1 import run_pb2 as _run_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunEventPayload(_message.Message):
    __slots__ = ("schema_version", "event_id", "run_id", "sequence", "agent", "version", "capability", "state", "previous_state", "attempt", "reason", "actor", "create_time", "traceparent", "chain_sequence", "prev_hash", "hash")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    run_id: str
    sequence: int
    agent: str
    version: str
    capability: str
    state: _run_pb2.RunState
    previous_state: _run_pb2.RunState
    attempt: int
    reason: str
    actor: str
    create_time: _timestamp_pb2.Timestamp
    traceparent: str
    chain_sequence: int
    prev_hash: str
    hash: str
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., capability: _Optional[str] = ..., state: _Optional[_Union[_run_pb2.RunState, str]] = ..., previous_state: _Optional[_Union[_run_pb2.RunState, str]] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ..., chain_sequence: _Optional[int] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...
