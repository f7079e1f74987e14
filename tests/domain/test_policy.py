"""Risk assessment (declared risk raised by what a run asks for) and the approval policy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.limits import Limits
from agents.manifest import Risk
from server.domain.policy import Policy, Rule, assess

DEFAULT = Limits()


def run_risk(
    declared: Risk,
    *,
    network: bool = False,
    secrets: tuple[str, ...] = (),
    limits: Limits = DEFAULT,
) -> tuple[Risk, tuple[str, ...]]:
    a = assess(declared, network=network, secrets=secrets, limits=limits, default=DEFAULT)
    return a.risk, a.reasons


@pytest.mark.parametrize("declared", list(Risk))
def test_declared_risk_alone(declared: Risk) -> None:
    assert run_risk(declared) == (declared, (f"declared risk {declared.label}",))


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (Risk.LOW, Risk.HIGH),
        (Risk.MEDIUM, Risk.HIGH),
        (Risk.HIGH, Risk.HIGH),
        (Risk.CRITICAL, Risk.CRITICAL),
    ],
)
def test_network_egress_is_at_least_high(declared: Risk, expected: Risk) -> None:
    risk, reasons = run_risk(declared, network=True)
    assert risk == expected
    assert any("network egress" in r for r in reasons)


def test_secrets_and_limits_raise_to_medium_with_reasons() -> None:
    risk, reasons = run_risk(Risk.LOW, secrets=("API_TOKEN", "DB_URL"))
    assert risk == Risk.MEDIUM and any("API_TOKEN, DB_URL" in r for r in reasons)
    risk, reasons = run_risk(Risk.LOW, limits=Limits(memory_mib=DEFAULT.memory_mib * 2, cpus=2))
    assert risk == Risk.MEDIUM
    assert any("memory_mib" in r and "cpus" in r for r in reasons)
    # Lower than or equal to the defaults raises nothing.
    assert run_risk(Risk.LOW, limits=Limits(memory_mib=16, timeout_seconds=1))[0] == Risk.LOW


def test_highest_wins_and_every_raise_has_a_reason() -> None:
    risk, reasons = run_risk(Risk.MEDIUM, network=True, secrets=("K",), limits=Limits(pids=1000))
    assert risk == Risk.HIGH
    assert len(reasons) == 4 and reasons[0] == "declared risk medium"
    assert run_risk(Risk.CRITICAL, network=True, secrets=("K",))[0] == Risk.CRITICAL


def test_default_policy() -> None:
    p = Policy()
    assert [p.rule_for(r).approvals for r in Risk] == [0, 0, 1, 2]
    assert all(p.rule_for(r).expires_after == timedelta(hours=1) for r in Risk)


def test_missing_risks_inherit_from_the_next_lower_rule() -> None:
    p = Policy({Risk.LOW: Rule(0, timedelta(minutes=1)), Risk.HIGH: Rule(3, timedelta(minutes=5))})
    assert p.rule_for(Risk.MEDIUM) == Rule(0, timedelta(minutes=1))
    assert p.rule_for(Risk.CRITICAL) == Rule(3, timedelta(minutes=5))


def test_from_mapping_overrides_defaults() -> None:
    p = Policy.from_mapping(
        {
            "high": {"approvals": 2, "expires_after_seconds": 600},
            "MEDIUM": {"approvals": 1},
            "low": None,
        }
    )
    assert p.rule_for(Risk.HIGH) == Rule(2, timedelta(seconds=600))
    assert p.rule_for(Risk.MEDIUM) == Rule(1, timedelta(hours=1))
    assert p.rule_for(Risk.LOW) == Rule(0, timedelta(hours=1))
    assert p.rule_for(Risk.CRITICAL) == Rule(2, timedelta(hours=1))  # untouched default


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ([1, 2], "policy:"),
        ("high", "policy:"),
        ({"extreme": {"approvals": 1}}, "policy.extreme:"),
        ({"high": {"approvals": -1}}, "policy.high.approvals:"),
        ({"high": {"approvals": 11}}, "policy.high.approvals:"),
        ({"high": {"approvals": "two"}}, "policy.high.approvals:"),
        ({"high": {"approvals": True}}, "policy.high.approvals: must be a number, not"),
        ({"low": {"approvals": False}}, "policy.low.approvals: must be a number, not"),
        ({"high": {"expires_after_seconds": True}},
         "policy.high.expires_after_seconds: must be a number, not"),
        ({"high": {"expires_after_seconds": 0}}, "policy.high.expires_after_seconds:"),
        ({"critical": {"aprovals": 2}}, "policy.critical.aprovals:"),
        ({"high": 3}, "policy.high:"),
        ({"high": [1]}, "policy.high:"),
    ],
)
def test_bad_policy_names_the_key(data: Any, names: str) -> None:
    with pytest.raises(ValueError) as info:
        Policy.from_mapping(data)
    assert str(info.value).startswith(names + " "), str(info.value)


def test_load_file(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("high: {approvals: 2, expires_after_seconds: 30}\ncritical: {approvals: 3}\n")
    p = Policy.load(f)
    assert p.rule_for(Risk.HIGH) == Rule(2, timedelta(seconds=30))
    assert p.rule_for(Risk.CRITICAL).approvals == 3


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("high: {approvals: -2}\n", "policy.high.approvals:"),
        ("high:\n  approvals: true\n", "policy.high.approvals: must be a number, not"),
        ("medium:\n  approvals: 1\n  expires: 3\n", "policy.medium.expires:"),
        ("", "policy:"),
        ("high: [\n", "policy:"),  # not YAML at all: still a ValueError, so start-up can report it
    ],
)
def test_bad_policy_file_is_a_value_error_naming_the_key(
    tmp_path: Path, text: str, names: str
) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text(text)
    with pytest.raises(ValueError) as info:
        Policy.load(f)
    assert str(info.value).startswith(names + " "), str(info.value)
