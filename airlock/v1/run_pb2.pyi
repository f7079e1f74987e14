import datetime

from airlock.v1 import agent_pb2 as _agent_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING_APPROVAL: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_TIMED_OUT: _ClassVar[RunState]
    RUN_STATE_OOM_KILLED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]
    RUN_STATE_REJECTED: _ClassVar[RunState]
    RUN_STATE_EXPIRED: _ClassVar[RunState]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING_APPROVAL: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_TIMED_OUT: RunState
RUN_STATE_OOM_KILLED: RunState
RUN_STATE_CANCELLED: RunState
RUN_STATE_REJECTED: RunState
RUN_STATE_EXPIRED: RunState

class Run(_message.Message):
    __slots__ = ("id", "agent", "version", "capability", "state", "reason", "effective_risk", "risk_reasons", "submitter", "idempotency_key", "network", "secrets", "limits", "attempt", "input_json", "create_time", "update_time", "start_time", "finish_time", "executor_id", "peak_memory_bytes", "duration_seconds", "exit_code", "last_sequence", "cancel_requested", "cpu_seconds", "output_bytes", "log_bytes", "workflow_id", "workflow_step", "input_sha256", "output_sha256", "logs_sha256", "action_digest", "chain_sequence", "chain_head")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RISK_FIELD_NUMBER: _ClassVar[int]
    RISK_REASONS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_STEP_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    LOGS_SHA256_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHAIN_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HEAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent: str
    version: str
    capability: str
    state: RunState
    reason: str
    effective_risk: _agent_pb2.Risk
    risk_reasons: _containers.RepeatedScalarFieldContainer[str]
    submitter: str
    idempotency_key: str
    network: bool
    secrets: _containers.RepeatedScalarFieldContainer[str]
    limits: _agent_pb2.Limits
    attempt: int
    input_json: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    executor_id: str
    peak_memory_bytes: int
    duration_seconds: float
    exit_code: int
    last_sequence: int
    cancel_requested: bool
    cpu_seconds: float
    output_bytes: int
    log_bytes: int
    workflow_id: str
    workflow_step: str
    input_sha256: str
    output_sha256: str
    logs_sha256: str
    action_digest: str
    chain_sequence: int
    chain_head: str
    def __init__(self, id: _Optional[str] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., capability: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., reason: _Optional[str] = ..., effective_risk: _Optional[_Union[_agent_pb2.Risk, str]] = ..., risk_reasons: _Optional[_Iterable[str]] = ..., submitter: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., network: _Optional[bool] = ..., secrets: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[_agent_pb2.Limits, _Mapping]] = ..., attempt: _Optional[int] = ..., input_json: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., executor_id: _Optional[str] = ..., peak_memory_bytes: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., exit_code: _Optional[int] = ..., last_sequence: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., cpu_seconds: _Optional[float] = ..., output_bytes: _Optional[int] = ..., log_bytes: _Optional[int] = ..., workflow_id: _Optional[str] = ..., workflow_step: _Optional[str] = ..., input_sha256: _Optional[str] = ..., output_sha256: _Optional[str] = ..., logs_sha256: _Optional[str] = ..., action_digest: _Optional[str] = ..., chain_sequence: _Optional[int] = ..., chain_head: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("id", "run_id", "sequence", "state", "previous_state", "reason", "attempt", "actor", "create_time", "agent", "version", "capability", "chain_sequence", "prev_hash", "hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    CHAIN_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    id: str
    run_id: str
    sequence: int
    state: RunState
    previous_state: RunState
    reason: str
    attempt: int
    actor: str
    create_time: _timestamp_pb2.Timestamp
    agent: str
    version: str
    capability: str
    chain_sequence: int
    prev_hash: str
    hash: str
    def __init__(self, id: _Optional[str] = ..., run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., state: _Optional[_Union[RunState, str]] = ..., previous_state: _Optional[_Union[RunState, str]] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ..., actor: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., capability: _Optional[str] = ..., chain_sequence: _Optional[int] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...
