"""Quotas per owner: what one owner (a team, a service) may take of a shared control plane.

Four quotas, each optional (unset: unlimited):

- ``runs_in_flight``: runs of the owner not yet ended (``PENDING_APPROVAL``, ``QUEUED``,
  ``RUNNING``) at once; frees when one of them ends;
- ``runs_per_day``: runs submitted per UTC day; frees at the next UTC midnight;
- ``cpu_seconds_per_day``: CPU time of the owner's runs that ended in the UTC day (as their
  sandboxes measured it); a submit is refused once the day's total reached it (a run already
  running is never stopped for it); frees at the next UTC midnight;
- ``max_limits``: a ceiling on each limit a run may ask for (``memory_mib``, ...), below the
  agent's own maximum; never frees (a smaller request passes).

The policy file's ``quotas`` section gives a ``default`` for every owner and per-owner entries
under ``owners``; an owner's entry overrides the default field by field (``null`` lifts one).
Enforcement (``server.services.quota_check``) counts in the submit's own transaction, under a
per-owner lock, so concurrent submits of one owner never overshoot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from agents.limits import Limits
from server.domain.errors import ResourceExhausted

LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def _not_a_boolean(v: Any) -> Any:
    # As in the risk rules: YAML's true/false would be read as 1 and 0.
    if isinstance(v, bool):
        raise PydanticCustomError("bool_refused", "must be a number, not {value}",
                                  {"value": str(v).lower()})
    return v


class _LimitsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _numbers = field_validator("*", mode="before")(_not_a_boolean)
    memory_mib: int | None = Field(default=None, gt=0)
    timeout_seconds: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)
    cpus: float | None = Field(default=None, gt=0)
    output_kib: int | None = Field(default=None, gt=0)
    log_kib: int | None = Field(default=None, gt=0)


class _QuotaModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _numbers = field_validator("runs_in_flight", "runs_per_day", "cpu_seconds_per_day",
                               mode="before")(_not_a_boolean)
    runs_in_flight: int | None = Field(default=None, ge=0)
    runs_per_day: int | None = Field(default=None, ge=0)
    cpu_seconds_per_day: float | None = Field(default=None, ge=0)
    max_limits: _LimitsModel | None = None


class _QuotasModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default: _QuotaModel = _QuotaModel()
    owners: dict[str, _QuotaModel] = {}


@dataclass(frozen=True, slots=True)
class Quota:
    """One owner's quotas (None: unlimited)."""

    runs_in_flight: int | None = None
    runs_per_day: int | None = None
    cpu_seconds_per_day: float | None = None
    max_limits: tuple[tuple[str, float], ...] = ()  # (limit name, ceiling), in LIMIT_NAMES order

    @property
    def counted(self) -> bool:
        """Whether a submit must count the owner's runs (any quota besides the ceiling)."""
        return (self.runs_in_flight is not None or self.runs_per_day is not None
                or self.cpu_seconds_per_day is not None)

    @property
    def unlimited(self) -> bool:
        return not self.counted and not self.max_limits


@dataclass(frozen=True, slots=True)
class Quotas:
    """The default quota and per-owner overrides, from the policy file."""

    default: Quota = Quota()
    owners: dict[str, Quota] = field(default_factory=dict)

    def for_owner(self, owner: str) -> Quota:
        return self.owners.get(owner, self.default)

    @classmethod
    def from_mapping(cls, data: Any) -> Quotas:
        """Build from the policy file's ``quotas`` section; ``ValueError`` names the bad path."""
        try:
            m = _QuotasModel.model_validate(data or {})
        except ValidationError as e:
            err = e.errors()[0]
            path = ".".join(map(str, err["loc"]))
            raise ValueError(f"policy.quotas.{path}: {err['msg']}") from None
        default = _quota(m.default, None)
        raw = data.get("owners") or {} if isinstance(data, dict) else {}
        owners = {name: _quota(q, default, set(raw.get(name) or {}),
                               set((raw.get(name) or {}).get("max_limits") or {}))
                  for name, q in m.owners.items()}
        return cls(default, owners)


def _quota(m: _QuotaModel, base: Quota | None, given: set[str] | None = None,
           given_limits: set[str] | None = None) -> Quota:
    """``m`` over ``base``: fields ``m`` sets (``given``, even to null) win, others inherit."""
    def pick(name: str) -> Any:
        if base is None or (given is not None and name in given):
            return getattr(m, name)
        return getattr(base, name)

    ceilings = dict(base.max_limits) if base is not None else {}
    if m.max_limits is not None:
        for name in LIMIT_NAMES:
            value = getattr(m.max_limits, name)
            if value is not None or (given_limits is not None and name in given_limits):
                ceilings[name] = value
    return Quota(runs_in_flight=pick("runs_in_flight"), runs_per_day=pick("runs_per_day"),
                 cpu_seconds_per_day=pick("cpu_seconds_per_day"),
                 max_limits=tuple((n, float(ceilings[n])) for n in LIMIT_NAMES
                                  if ceilings.get(n) is not None))


def day_start(now: datetime) -> datetime:
    """The start of ``now``'s UTC day (when the daily quotas were last reset)."""
    return datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)


def next_day(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class OwnerUsage:
    """What an owner is using now, counted against its quota."""

    owner: str
    runs_in_flight: int
    runs_today: int
    cpu_seconds_today: float


class QuotaExceeded(ResourceExhausted):
    """Raised at submit when a run would take an owner past one of its quotas."""

    def __init__(self, owner: str, quota: str, value: float, detail: str, frees: str) -> None:
        super().__init__(f"quota {quota} of owner {owner!r} is {_num(value)}: {detail}; {frees}")
        self.owner = owner
        self.quota = quota
        self.value = value


def _num(v: float) -> str:
    return f"{v:g}"


def check_limits(owner: str, quota: Quota, limits: Limits) -> None:
    """Refuse a run asking for more than the owner's ceiling on a limit."""
    for name, ceiling in quota.max_limits:
        asked = getattr(limits, name)
        if asked > ceiling:
            raise QuotaExceeded(owner, f"max_limits.{name}", ceiling,
                                f"the run asks for limits.{name} {_num(asked)}",
                                "a ceiling does not free up; ask for less")


def check_usage(quota: Quota, usage: OwnerUsage, now: datetime) -> None:
    """Refuse one more run when the owner's current usage already reached a quota."""
    owner = usage.owner
    midnight = f"frees at {next_day(now).strftime('%Y-%m-%dT%H:%M:%SZ')} (the next UTC day)"
    if quota.runs_in_flight is not None and usage.runs_in_flight >= quota.runs_in_flight:
        raise QuotaExceeded(owner, "runs_in_flight", quota.runs_in_flight,
                            f"{usage.runs_in_flight} run(s) not yet ended",
                            "frees when one of them ends")
    if quota.runs_per_day is not None and usage.runs_today >= quota.runs_per_day:
        raise QuotaExceeded(owner, "runs_per_day", quota.runs_per_day,
                            f"{usage.runs_today} run(s) submitted today (UTC)", midnight)
    if (quota.cpu_seconds_per_day is not None
            and usage.cpu_seconds_today >= quota.cpu_seconds_per_day):
        raise QuotaExceeded(owner, "cpu_seconds_per_day", quota.cpu_seconds_per_day,
                            f"{usage.cpu_seconds_today:.1f} CPU-seconds used today (UTC)", midnight)
