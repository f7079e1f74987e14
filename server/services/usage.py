"""Owners' consumption against their quotas (the quotas themselves: ``server.domain.quotas``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.domain.clock import Clock, utcnow
from server.domain.policy import Policy
from server.domain.principal import Principal, Scope, scope_of
from server.domain.quotas import OwnerUsage, Quota, day_start, next_day
from server.services.validation import check
from server.store import Store


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
