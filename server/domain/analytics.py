"""Analytics over runs submitted in a time range: the records the store answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

QUANTILES = (0.5, 0.9, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Continuous percentiles (linear interpolation, as PostgreSQL's ``percentile_cont``) of
    the values that exist; all None when there are none."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        """From values (computed here: SQLite has no percentile function)."""
        if not values:
            return cls()
        s = sorted(values)
        out = []
        for q in QUANTILES:
            pos = q * (len(s) - 1)
            lo = int(pos)
            hi = min(lo + 1, len(s) - 1)
            out.append(s[lo] + (s[hi] - s[lo]) * (pos - lo))
        return cls(*out)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Runs of one agent (or one owner) in the range, and what they used."""

    key: str
    runs: int
    cpu_seconds: float
    wall_seconds: float
    peak_memory_max: int | None
    peak_memory_avg: float | None
    duration: Percentiles


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """Runs submitted in one bucket of the range that are now in ``state``."""

    start: datetime
    state: str
    runs: int


@dataclass(frozen=True, slots=True)
class Analytics:
    start: datetime
    end: datetime
    bucket_seconds: int
    total: int
    by_state: dict[str, int]
    duration: Percentiles  # wall time of the runs' last attempts
    queue_wait: Percentiles  # submission (or approval wait) to the last attempt's start
    by_agent: list[GroupStats] = field(default_factory=list)  # busiest first
    by_owner: list[GroupStats] = field(default_factory=list)  # busiest first
    series: list[SeriesPoint] = field(default_factory=list)  # by bucket, then state
