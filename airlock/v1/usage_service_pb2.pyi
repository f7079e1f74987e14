import datetime

from airlock.v1 import agent_pb2 as _agent_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetUsageRequest(_message.Message):
    __slots__ = ("owner",)
    OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    def __init__(self, owner: _Optional[str] = ...) -> None: ...

class OwnerQuota(_message.Message):
    __slots__ = ("runs_in_flight", "runs_per_day", "cpu_seconds_per_day", "max_limits")
    RUNS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    RUNS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    MAX_LIMITS_FIELD_NUMBER: _ClassVar[int]
    runs_in_flight: int
    runs_per_day: int
    cpu_seconds_per_day: float
    max_limits: _agent_pb2.Limits
    def __init__(self, runs_in_flight: _Optional[int] = ..., runs_per_day: _Optional[int] = ..., cpu_seconds_per_day: _Optional[float] = ..., max_limits: _Optional[_Union[_agent_pb2.Limits, _Mapping]] = ...) -> None: ...

class OwnerUsage(_message.Message):
    __slots__ = ("owner", "runs_in_flight", "runs_today", "cpu_seconds_today", "quota")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RUNS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    RUNS_TODAY_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_TODAY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    owner: str
    runs_in_flight: int
    runs_today: int
    cpu_seconds_today: float
    quota: OwnerQuota
    def __init__(self, owner: _Optional[str] = ..., runs_in_flight: _Optional[int] = ..., runs_today: _Optional[int] = ..., cpu_seconds_today: _Optional[float] = ..., quota: _Optional[_Union[OwnerQuota, _Mapping]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("owners", "day_start_time", "day_end_time")
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    DAY_START_TIME_FIELD_NUMBER: _ClassVar[int]
    DAY_END_TIME_FIELD_NUMBER: _ClassVar[int]
    owners: _containers.RepeatedCompositeFieldContainer[OwnerUsage]
    day_start_time: _timestamp_pb2.Timestamp
    day_end_time: _timestamp_pb2.Timestamp
    def __init__(self, owners: _Optional[_Iterable[_Union[OwnerUsage, _Mapping]]] = ..., day_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., day_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
