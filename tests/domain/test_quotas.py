"""Quotas in the policy file: parsing, per-owner overrides, and the refusal messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.limits import Limits
from server.domain.policy import Policy
from server.domain.quotas import (
    OwnerUsage,
    Quota,
    QuotaExceeded,
    Quotas,
    check_limits,
    check_usage,
    day_start,
    next_day,
)

FILE = {
    "high": {"approvals": 1},
    "quotas": {
        "default": {"runs_in_flight": 5, "cpu_seconds_per_day": 3600,
                    "max_limits": {"memory_mib": 256, "timeout_seconds": 60}},
        "owners": {
            "batch": {"runs_per_day": 1000, "runs_in_flight": None},
            "ml": {"max_limits": {"memory_mib": 2048, "timeout_seconds": None}},
        },
    },
}


def test_owners_override_the_default_field_by_field() -> None:
    q = Policy.from_mapping(FILE).quotas
    assert q.for_owner("anyone") == Quota(runs_in_flight=5, cpu_seconds_per_day=3600,
                                          max_limits=(("memory_mib", 256), ("timeout_seconds", 60)))
    # null lifts a default quota; unset fields inherit it
    assert q.for_owner("batch") == Quota(runs_in_flight=None, runs_per_day=1000,
                                         cpu_seconds_per_day=3600,
                                         max_limits=(("memory_mib", 256), ("timeout_seconds", 60)))
    assert q.for_owner("ml").max_limits == (("memory_mib", 2048),)
    assert q.for_owner("ml").runs_in_flight == 5


def test_no_quotas_section_means_unlimited_and_risk_rules_still_load() -> None:
    p = Policy.from_mapping({"high": {"approvals": 1}})
    assert p.quotas == Quotas() and p.quotas.for_owner("x").unlimited
    assert Policy.from_mapping(FILE).rule_for(max(p.rules)).approvals >= 1


@pytest.mark.parametrize(("quotas", "path"), [
    ({"default": {"runs_in_fligt": 1}}, "policy.quotas.default.runs_in_fligt"),
    ({"default": {"runs_per_day": -1}}, "policy.quotas.default.runs_per_day"),
    ({"owners": {"a": {"max_limits": {"memory_mib": 0}}}}, "policy.quotas.owners.a.max_limits.memory_mib"),
    ({"owners": {"a": {"max_limits": {"disk": 1}}}}, "policy.quotas.owners.a.max_limits.disk"),
    ({"defaults": {}}, "policy.quotas.defaults"),
    ({"default": {"runs_in_flight": True}}, "policy.quotas.default.runs_in_flight: must be a number, not true"),
])
def test_a_bad_quota_names_its_path(quotas: dict, path: str) -> None:
    with pytest.raises(ValueError, match=path.replace(".", r"\.")):
        Policy.from_mapping({"quotas": quotas})


NOON = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)


def test_day_bounds_are_utc_midnights() -> None:
    assert day_start(NOON) == datetime(2026, 12, 3, tzinfo=UTC)
    assert next_day(NOON) == datetime(2026, 12, 4, tzinfo=UTC)


def test_each_quota_refuses_at_its_edge_naming_itself_its_value_and_when_it_frees() -> None:
    q = Quota(runs_in_flight=2, runs_per_day=10, cpu_seconds_per_day=100.0)
    check_usage(q, OwnerUsage("t", 1, 9, 99.9), NOON)  # one below every edge: passes
    cases = [
        (OwnerUsage("t", 2, 0, 0), "quota runs_in_flight of owner 't' is 2: 2 run(s) not yet ended; "
                                   "frees when one of them ends"),
        (OwnerUsage("t", 0, 10, 0), "quota runs_per_day of owner 't' is 10: 10 run(s) submitted today "
                                    "(UTC); frees at 2026-12-04T00:00:00Z (the next UTC day)"),
        (OwnerUsage("t", 0, 0, 100.0), "quota cpu_seconds_per_day of owner 't' is 100: 100.0 "
                                       "CPU-seconds used today (UTC); frees at 2026-12-04T00:00:00Z "
                                       "(the next UTC day)"),
    ]
    for usage, message in cases:
        with pytest.raises(QuotaExceeded) as info:
            check_usage(q, usage, NOON)
        assert info.value.message == message


def test_limit_ceiling() -> None:
    q = Quota(max_limits=(("memory_mib", 256.0),))
    check_limits("t", q, Limits(memory_mib=256))
    with pytest.raises(QuotaExceeded) as info:
        check_limits("t", q, Limits(memory_mib=257))
    assert info.value.message == ("quota max_limits.memory_mib of owner 't' is 256: the run asks "
                                  "for limits.memory_mib 257; a ceiling does not free up; ask for less")
