import datetime

from airlock.v1 import agent_pb2 as _agent_pb2
from airlock.v1 import run_pb2 as _run_pb2
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

class GetAnalyticsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "bucket_seconds")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket_seconds: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_seconds: _Optional[int] = ...) -> None: ...

class Percentiles(_message.Message):
    __slots__ = ("p50", "p90", "p95", "p99")
    P50_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p90: float
    p95: float
    p99: float
    def __init__(self, p50: _Optional[float] = ..., p90: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class StateCount(_message.Message):
    __slots__ = ("state", "runs")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    state: _run_pb2.RunState
    runs: int
    def __init__(self, state: _Optional[_Union[_run_pb2.RunState, str]] = ..., runs: _Optional[int] = ...) -> None: ...

class GroupUsage(_message.Message):
    __slots__ = ("key", "runs", "cpu_seconds", "wall_seconds", "peak_memory_max_bytes", "peak_memory_avg_bytes", "duration")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_AVG_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    key: str
    runs: int
    cpu_seconds: float
    wall_seconds: float
    peak_memory_max_bytes: int
    peak_memory_avg_bytes: float
    duration: Percentiles
    def __init__(self, key: _Optional[str] = ..., runs: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., peak_memory_max_bytes: _Optional[int] = ..., peak_memory_avg_bytes: _Optional[float] = ..., duration: _Optional[_Union[Percentiles, _Mapping]] = ...) -> None: ...

class SeriesPoint(_message.Message):
    __slots__ = ("start_time", "state", "runs")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    state: _run_pb2.RunState
    runs: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[_run_pb2.RunState, str]] = ..., runs: _Optional[int] = ...) -> None: ...

class GetAnalyticsResponse(_message.Message):
    __slots__ = ("start_time", "end_time", "bucket_seconds", "total_runs", "by_state", "duration", "queue_wait", "by_agent", "by_owner", "series")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RUNS_FIELD_NUMBER: _ClassVar[int]
    BY_STATE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    BY_AGENT_FIELD_NUMBER: _ClassVar[int]
    BY_OWNER_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket_seconds: int
    total_runs: int
    by_state: _containers.RepeatedCompositeFieldContainer[StateCount]
    duration: Percentiles
    queue_wait: Percentiles
    by_agent: _containers.RepeatedCompositeFieldContainer[GroupUsage]
    by_owner: _containers.RepeatedCompositeFieldContainer[GroupUsage]
    series: _containers.RepeatedCompositeFieldContainer[SeriesPoint]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_seconds: _Optional[int] = ..., total_runs: _Optional[int] = ..., by_state: _Optional[_Iterable[_Union[StateCount, _Mapping]]] = ..., duration: _Optional[_Union[Percentiles, _Mapping]] = ..., queue_wait: _Optional[_Union[Percentiles, _Mapping]] = ..., by_agent: _Optional[_Iterable[_Union[GroupUsage, _Mapping]]] = ..., by_owner: _Optional[_Iterable[_Union[GroupUsage, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[SeriesPoint, _Mapping]]] = ...) -> None: ...
