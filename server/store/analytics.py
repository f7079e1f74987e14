"""Analytics over the runs submitted in a time range, aggregated by the database.

On PostgreSQL three statements each read the range from ``ix_runs_created_usage`` (it covers
the columns, so the scans read the index alone): percentiles (``percentile_cont``) of wall time
for the whole range and per agent, of queue wait for the whole range, and the plain counts and
sums by state, by owner and by (time bucket, state) in grouping sets. SQLite has neither
grouping sets nor percentiles: there the range's few columns are read and aggregated here, to
the same records (SQLite is the one-process development store). Owners get no percentiles.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text

from server.domain.analytics import QUANTILES, Analytics, GroupStats, Percentiles, SeriesPoint
from server.store import tables as t
from server.store.base import Repository

_R = t.runs

_RANGE = "FROM runs WHERE created_at >= :start AND created_at < :end"
_ARRAY = f"ARRAY[{', '.join(map(str, QUANTILES))}]"
# Ordered-set aggregates (percentiles) sort their input per group: they are asked only where
# they are answered (the whole range and per agent); the plain counts and sums of the other
# groupings hash in one pass. date_bin (PostgreSQL 14+) buckets without numeric arithmetic.
_PG_PERCENTILES = text(f"""
SELECT GROUPING(agent_name) AS g_agent, agent_name, count(*) AS runs,
       coalesce(sum(cpu_seconds), 0) AS cpu, coalesce(sum(duration_seconds), 0) AS wall,
       max(peak_memory_bytes) AS peak_max, avg(peak_memory_bytes) AS peak_avg,
       percentile_cont({_ARRAY}) WITHIN GROUP (ORDER BY duration_seconds) AS duration
{_RANGE}
GROUP BY GROUPING SETS ((), (agent_name))
""")
_PG_WAIT = text(f"""
SELECT percentile_cont({_ARRAY}) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at))
{_RANGE}
""")
_PG_COUNTS = text(f"""
SELECT GROUPING(state) AS g_state, GROUPING(submitter) AS g_owner, state, submitter, bucket,
       count(*) AS runs, coalesce(sum(cpu_seconds), 0) AS cpu,
       coalesce(sum(duration_seconds), 0) AS wall,
       max(peak_memory_bytes) AS peak_max, avg(peak_memory_bytes) AS peak_avg
FROM (SELECT state, submitter, cpu_seconds, duration_seconds, peak_memory_bytes,
             date_bin(make_interval(secs => :bucket), created_at,
                      TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket
      {_RANGE}) AS r
GROUP BY GROUPING SETS ((state), (submitter), (bucket, state))
""")


def _pct(values: Any) -> Percentiles:
    return Percentiles(*[float(v) for v in values]) if values else Percentiles()


def _busiest(groups: Iterable[GroupStats]) -> list[GroupStats]:
    return sorted(groups, key=lambda g: (-g.runs, g.key))


class AnalyticsRepository(Repository):
    """Aggregates over ``runs`` by submission time."""

    __slots__ = ()

    async def summary(self, *, start: datetime, end: datetime, bucket_seconds: int) -> Analytics:
        if self._unit.pg:
            return await self._pg(start, end, bucket_seconds)
        return await self._in_process(start, end, bucket_seconds)

    async def _pg(self, start: datetime, end: datetime, bucket: int) -> Analytics:
        args = {"start": start, "end": end, "bucket": bucket}
        total, duration, agents = 0, Percentiles(), []
        for r in await self._conn.execute(_PG_PERCENTILES, args):
            stats = _stats(r, r.agent_name or "", _pct(r.duration))
            if r.g_agent:
                total, duration = r.runs, stats.duration
            else:
                agents.append(stats)
        wait = _pct((await self._conn.execute(_PG_WAIT, args)).scalar_one())
        by_state, owners, series = {}, [], []
        for r in await self._conn.execute(_PG_COUNTS, args):
            if r.g_state and not r.g_owner:
                owners.append(_stats(r, r.submitter, Percentiles()))
            elif r.bucket is None:
                by_state[r.state] = r.runs
            else:
                series.append(SeriesPoint(r.bucket.astimezone(UTC), r.state, r.runs))
        series.sort(key=lambda p: (p.start, p.state))
        return Analytics(start, end, bucket, total, by_state, duration, wait,
                         _busiest(agents), _busiest(owners), series)

    async def _in_process(self, start: datetime, end: datetime, bucket: int) -> Analytics:
        rows = list(await self._conn.execute(
            select(_R.c.state, _R.c.agent_name, _R.c.submitter, _R.c.cpu_seconds,
                   _R.c.duration_seconds, _R.c.peak_memory_bytes, _R.c.started_at,
                   _R.c.created_at)
            .where(_R.c.created_at >= start, _R.c.created_at < end)))
        by_state: dict[str, int] = defaultdict(int)
        buckets: dict[tuple[int, str], int] = defaultdict(int)
        by_agent: dict[str, list[Any]] = defaultdict(list)
        by_owner: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            by_state[r.state] += 1
            b = int(r.created_at.timestamp() // bucket) * bucket
            buckets[(b, r.state)] += 1
            by_agent[r.agent_name].append(r)
            by_owner[r.submitter].append(r)
        series = [SeriesPoint(datetime.fromtimestamp(b, UTC), s, n)
                  for (b, s), n in sorted(buckets.items())]
        waits = [(r.started_at - r.created_at).total_seconds() for r in rows if r.started_at]
        return Analytics(start, end, bucket, len(rows), dict(by_state),
                         Percentiles.of([r.duration_seconds for r in rows
                                         if r.duration_seconds is not None]),
                         Percentiles.of(waits),
                         _busiest(_group(k, v) for k, v in by_agent.items()),
                         _busiest(replace(_group(k, v), duration=Percentiles())
                                  for k, v in by_owner.items()), series)


def _stats(r: Any, key: str, duration: Percentiles) -> GroupStats:
    return GroupStats(key, r.runs, float(r.cpu), float(r.wall),
                      int(r.peak_max) if r.peak_max is not None else None,
                      float(r.peak_avg) if r.peak_avg is not None else None, duration)


def _group(key: str, rows: list[Any]) -> GroupStats:
    peaks = [r.peak_memory_bytes for r in rows if r.peak_memory_bytes is not None]
    return GroupStats(
        key, len(rows), float(sum(r.cpu_seconds or 0 for r in rows)),
        float(sum(r.duration_seconds or 0 for r in rows)),
        max(peaks) if peaks else None, sum(peaks) / len(peaks) if peaks else None,
        Percentiles.of([r.duration_seconds for r in rows if r.duration_seconds is not None]))
