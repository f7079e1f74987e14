"""Owners' consumption against their quotas (the quotas themselves: ``server.domain.quotas``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.analytics import Analytics
from server.domain.clock import Clock, utcnow
from server.domain.errors import InvalidArgument
from server.domain.policy import Policy
from server.domain.principal import Principal, Scope, scope_of
from server.domain.quotas import OwnerUsage, Quota, day_start, next_day
from server.services.validation import check
from server.store import Store

MAX_RANGE = timedelta(days=366)
MAX_BUCKETS = 1000
DEFAULT_RANGE = timedelta(hours=24)
_NICE_BUCKETS = (60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)


@dataclass(frozen=True, slots=True)
class AnalyticsRequest:
    """Runs submitted in [start, end) (None: end = now, start = end - 24 h), in buckets of
    ``bucket_seconds`` (0: about 48 buckets)."""

    start: datetime | None = None
    end: datetime | None = None
    bucket_seconds: int = 0


@dataclass(frozen=True, slots=True)
class OwnerReport:
    """One owner's usage now and today, and its quota."""

    usage: OwnerUsage
    quota: Quota


@dataclass(frozen=True, slots=True)
class UsageReport:
    owners: list[OwnerReport]
    day_start: datetime
    day_end: datetime


class UsageService:
    def __init__(self, store: Store, policy: Policy, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock

    async def usage(self, who: Principal, owner: str = "") -> UsageReport:
        """Every owner's usage (scope ALL), or the caller's own (OWN, whatever ``owner`` is)."""
        check("owner", owner, max_len=200)
        if scope_of("UsageService.GetUsage", who) is not Scope.ALL:
            owner = who.owner
        now = self.clock()
        since = day_start(now)
        quotas = self.policy.quotas
        async with self.store.read() as tx:
            if owner:
                found = [await tx.usage.owner_usage(owner, since=since)]
            else:
                found = await tx.usage.all_owners(since=since)
        by_owner = {u.owner: u for u in found}
        if not owner:  # owners with a quota of their own are listed even when idle
            for name in quotas.owners:
                by_owner.setdefault(name, OwnerUsage(name, 0, 0, 0.0))
        reports = [OwnerReport(u, quotas.for_owner(u.owner))
                   for _, u in sorted(by_owner.items())]
        return UsageReport(reports, since, next_day(now))

    async def analytics(self, req: AnalyticsRequest) -> Analytics:
        """Aggregates over the runs submitted in the range (admins and viewers: every run)."""
        end = req.end or self.clock()
        start = req.start or end - DEFAULT_RANGE
        if end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        span = end - start
        if span > MAX_RANGE:
            raise InvalidArgument("start_time", f"the range may be at most {MAX_RANGE.days} days")
        bucket = req.bucket_seconds
        if bucket < 0:
            raise InvalidArgument("bucket_seconds", "must not be negative")
        if bucket == 0:
            want = span.total_seconds() / 48
            bucket = next((b for b in _NICE_BUCKETS if b >= want), _NICE_BUCKETS[-1])
        if span.total_seconds() / bucket > MAX_BUCKETS:
            raise InvalidArgument("bucket_seconds", f"makes more than {MAX_BUCKETS} buckets in "
                                                    f"the range; use at least "
                                                    f"{int(span.total_seconds() // MAX_BUCKETS) + 1}")
        async with self.store.read() as tx:
            return await tx.analytics.summary(start=start, end=end, bucket_seconds=bucket)
