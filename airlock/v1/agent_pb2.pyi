import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Risk(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_UNSPECIFIED: _ClassVar[Risk]
    RISK_LOW: _ClassVar[Risk]
    RISK_MEDIUM: _ClassVar[Risk]
    RISK_HIGH: _ClassVar[Risk]
    RISK_CRITICAL: _ClassVar[Risk]
RISK_UNSPECIFIED: Risk
RISK_LOW: Risk
RISK_MEDIUM: Risk
RISK_HIGH: Risk
RISK_CRITICAL: Risk

class Limits(_message.Message):
    __slots__ = ("memory_mib", "timeout_seconds", "pids", "cpus", "output_kib", "log_kib")
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIB_FIELD_NUMBER: _ClassVar[int]
    LOG_KIB_FIELD_NUMBER: _ClassVar[int]
    memory_mib: int
    timeout_seconds: float
    pids: int
    cpus: float
    output_kib: int
    log_kib: int
    def __init__(self, memory_mib: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., pids: _Optional[int] = ..., cpus: _Optional[float] = ..., output_kib: _Optional[int] = ..., log_kib: _Optional[int] = ...) -> None: ...

class Capability(_message.Message):
    __slots__ = ("name", "description", "input_schema_json", "output_schema_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    input_schema_json: str
    output_schema_json: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., input_schema_json: _Optional[str] = ..., output_schema_json: _Optional[str] = ...) -> None: ...

class AgentVersion(_message.Message):
    __slots__ = ("agent", "version", "description", "image", "image_digest", "entrypoint", "risk", "network", "secrets", "default_limits", "max_limits", "capabilities", "deprecated", "deprecation_reason", "create_time", "created_by", "manifest_json")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DEPRECATED_FIELD_NUMBER: _ClassVar[int]
    DEPRECATION_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    version: str
    description: str
    image: str
    image_digest: str
    entrypoint: _containers.RepeatedScalarFieldContainer[str]
    risk: Risk
    network: bool
    secrets: _containers.RepeatedScalarFieldContainer[str]
    default_limits: Limits
    max_limits: Limits
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    deprecated: bool
    deprecation_reason: str
    create_time: _timestamp_pb2.Timestamp
    created_by: str
    manifest_json: str
    def __init__(self, agent: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., image: _Optional[str] = ..., image_digest: _Optional[str] = ..., entrypoint: _Optional[_Iterable[str]] = ..., risk: _Optional[_Union[Risk, str]] = ..., network: _Optional[bool] = ..., secrets: _Optional[_Iterable[str]] = ..., default_limits: _Optional[_Union[Limits, _Mapping]] = ..., max_limits: _Optional[_Union[Limits, _Mapping]] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., deprecated: _Optional[bool] = ..., deprecation_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., manifest_json: _Optional[str] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("name", "description", "latest_version", "versions", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    latest_version: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., latest_version: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
