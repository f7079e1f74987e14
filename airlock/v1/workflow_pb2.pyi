import datetime

from airlock.v1 import agent_pb2 as _agent_pb2
from airlock.v1 import approval_pb2 as _approval_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_STATE_UNSPECIFIED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_PENDING_APPROVAL: _ClassVar[WorkflowState]
    WORKFLOW_STATE_RUNNING: _ClassVar[WorkflowState]
    WORKFLOW_STATE_SUCCEEDED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_FAILED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_CANCELLED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_REJECTED: _ClassVar[WorkflowState]
    WORKFLOW_STATE_EXPIRED: _ClassVar[WorkflowState]

class FailurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_POLICY_UNSPECIFIED: _ClassVar[FailurePolicy]
    FAILURE_POLICY_FAIL_WORKFLOW: _ClassVar[FailurePolicy]
    FAILURE_POLICY_CONTINUE: _ClassVar[FailurePolicy]
WORKFLOW_STATE_UNSPECIFIED: WorkflowState
WORKFLOW_STATE_PENDING_APPROVAL: WorkflowState
WORKFLOW_STATE_RUNNING: WorkflowState
WORKFLOW_STATE_SUCCEEDED: WorkflowState
WORKFLOW_STATE_FAILED: WorkflowState
WORKFLOW_STATE_CANCELLED: WorkflowState
WORKFLOW_STATE_REJECTED: WorkflowState
WORKFLOW_STATE_EXPIRED: WorkflowState
FAILURE_POLICY_UNSPECIFIED: FailurePolicy
FAILURE_POLICY_FAIL_WORKFLOW: FailurePolicy
FAILURE_POLICY_CONTINUE: FailurePolicy

class StepSpec(_message.Message):
    __slots__ = ("name", "agent", "version", "capability", "input_json", "limits", "network", "secrets", "depends_on", "gate", "gate_approvals", "description", "on_failure")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    GATE_APPROVALS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    agent: str
    version: str
    capability: str
    input_json: str
    limits: _agent_pb2.Limits
    network: bool
    secrets: _containers.RepeatedScalarFieldContainer[str]
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    gate: bool
    gate_approvals: int
    description: str
    on_failure: FailurePolicy
    def __init__(self, name: _Optional[str] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., capability: _Optional[str] = ..., input_json: _Optional[str] = ..., limits: _Optional[_Union[_agent_pb2.Limits, _Mapping]] = ..., network: _Optional[bool] = ..., secrets: _Optional[_Iterable[str]] = ..., depends_on: _Optional[_Iterable[str]] = ..., gate: _Optional[bool] = ..., gate_approvals: _Optional[int] = ..., description: _Optional[str] = ..., on_failure: _Optional[_Union[FailurePolicy, str]] = ...) -> None: ...

class WorkflowSpec(_message.Message):
    __slots__ = ("name", "steps", "deadline_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    steps: _containers.RepeatedCompositeFieldContainer[StepSpec]
    deadline_seconds: float
    def __init__(self, name: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[StepSpec, _Mapping]]] = ..., deadline_seconds: _Optional[float] = ...) -> None: ...

class WorkflowStep(_message.Message):
    __slots__ = ("name", "state", "reason", "agent", "version", "capability", "image", "effective_risk", "risk_reasons", "limits", "network", "secrets", "depends_on", "gate", "on_failure", "input_json", "run_id", "output_json", "description", "start_time", "finish_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RISK_FIELD_NUMBER: _ClassVar[int]
    RISK_REASONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    reason: str
    agent: str
    version: str
    capability: str
    image: str
    effective_risk: _agent_pb2.Risk
    risk_reasons: _containers.RepeatedScalarFieldContainer[str]
    limits: _agent_pb2.Limits
    network: bool
    secrets: _containers.RepeatedScalarFieldContainer[str]
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    gate: bool
    on_failure: FailurePolicy
    input_json: str
    run_id: str
    output_json: str
    description: str
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., agent: _Optional[str] = ..., version: _Optional[str] = ..., capability: _Optional[str] = ..., image: _Optional[str] = ..., effective_risk: _Optional[_Union[_agent_pb2.Risk, str]] = ..., risk_reasons: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[_agent_pb2.Limits, _Mapping]] = ..., network: _Optional[bool] = ..., secrets: _Optional[_Iterable[str]] = ..., depends_on: _Optional[_Iterable[str]] = ..., gate: _Optional[bool] = ..., on_failure: _Optional[_Union[FailurePolicy, str]] = ..., input_json: _Optional[str] = ..., run_id: _Optional[str] = ..., output_json: _Optional[str] = ..., description: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkflowApproval(_message.Message):
    __slots__ = ("workflow_id", "step", "status", "required", "approvals", "decisions", "create_time", "expire_time")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    step: str
    status: _approval_pb2.ApprovalStatus
    required: int
    approvals: int
    decisions: _containers.RepeatedCompositeFieldContainer[_approval_pb2.Decision]
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, workflow_id: _Optional[str] = ..., step: _Optional[str] = ..., status: _Optional[_Union[_approval_pb2.ApprovalStatus, str]] = ..., required: _Optional[int] = ..., approvals: _Optional[int] = ..., decisions: _Optional[_Iterable[_Union[_approval_pb2.Decision, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "name", "state", "reason", "submitter", "idempotency_key", "risk", "plan_digest", "steps", "approvals", "create_time", "update_time", "finish_time", "deadline_time", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: WorkflowState
    reason: str
    submitter: str
    idempotency_key: str
    risk: _agent_pb2.Risk
    plan_digest: str
    steps: _containers.RepeatedCompositeFieldContainer[WorkflowStep]
    approvals: _containers.RepeatedCompositeFieldContainer[WorkflowApproval]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    deadline_time: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[WorkflowState, str]] = ..., reason: _Optional[str] = ..., submitter: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., risk: _Optional[_Union[_agent_pb2.Risk, str]] = ..., plan_digest: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[WorkflowStep, _Mapping]]] = ..., approvals: _Optional[_Iterable[_Union[WorkflowApproval, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class WorkflowEventPayload(_message.Message):
    __slots__ = ("schema_version", "event_id", "workflow_id", "sequence", "name", "state", "previous_state", "reason", "actor", "create_time", "traceparent")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    event_id: str
    workflow_id: str
    sequence: int
    name: str
    state: WorkflowState
    previous_state: WorkflowState
    reason: str
    actor: str
    create_time: _timestamp_pb2.Timestamp
    traceparent: str
    def __init__(self, schema_version: _Optional[int] = ..., event_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., sequence: _Optional[int] = ..., name: _Optional[str] = ..., state: _Optional[_Union[WorkflowState, str]] = ..., previous_state: _Optional[_Union[WorkflowState, str]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...
