"""Risk policy: effective risk of a run and what approval it needs.

Effective risk is the highest of the version's declared risk and what the run asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from agents.limits import Limits
from agents.manifest import Risk
from server.domain.quotas import Quotas


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    risk: Risk
    reasons: tuple[str, ...]


def assess(
    declared: Risk, *, network: bool, secrets: tuple[str, ...], limits: Limits, default: Limits
) -> RiskAssessment:
    """Combine declared risk with the run's requests; every raise gives a reason."""
    risk, reasons = declared, [f"declared risk {declared.label}"]
    if network:
        risk = max(risk, Risk.HIGH)
        reasons.append("network egress requested (at least high)")
    if secrets:
        risk = max(risk, Risk.MEDIUM)
        reasons.append(f"secrets requested: {', '.join(secrets)} (at least medium)")
    above = limits.exceeds(default)
    if above:
        risk = max(risk, Risk.MEDIUM)
        reasons.append(f"limits above default: {', '.join(above)} (at least medium)")
    return RiskAssessment(risk, tuple(reasons))


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    approvals: int = Field(default=0, ge=0, le=10)
    expires_after_seconds: float = Field(default=3600, gt=0)

    @field_validator("approvals", "expires_after_seconds", mode="before")
    @classmethod
    def _not_a_boolean(cls, v: Any) -> Any:
        # YAML's true/false are bools, which pydantic would read as 1 and 0: `approvals: true`
        # meant "needs approval" to whoever wrote it, not "one approver".
        if isinstance(v, bool):
            raise PydanticCustomError("bool_refused", "must be a number, not {value}",
                                      {"value": str(v).lower()})
        return v


@dataclass(frozen=True, slots=True)
class Rule:
    approvals: int  # distinct approvers needed; 0 = auto-approve
    expires_after: timedelta


@dataclass(frozen=True, slots=True)
class Policy:
    """Maps effective risk to a rule (missing risks inherit from the next lower one), and
    holds the owners' quotas (``server.domain.quotas``, the file's ``quotas`` section)."""

    rules: dict[Risk, Rule] = field(
        default_factory=lambda: {
            Risk.LOW: Rule(0, timedelta(hours=1)),
            Risk.MEDIUM: Rule(0, timedelta(hours=1)),
            Risk.HIGH: Rule(1, timedelta(hours=1)),
            Risk.CRITICAL: Rule(2, timedelta(hours=1)),
        }
    )
    quotas: Quotas = field(default_factory=Quotas)

    def rule_for(self, risk: Risk) -> Rule:
        for r in sorted(Risk, reverse=True):
            if r <= risk and r in self.rules:
                return self.rules[r]
        return Rule(0, timedelta(hours=1))

    @classmethod
    def from_mapping(cls, data: Any) -> Policy:
        """Build from ``{low: {approvals: 0}, high: {approvals: 1, expires_after_seconds: 600},
        quotas: {default: {...}, owners: {team: {...}}}}``."""
        if not isinstance(data, dict):
            raise ValueError("policy: must be a mapping of risk -> rule")
        rules: dict[Risk, Rule] = dict(cls().rules)
        quotas = Quotas.from_mapping(data.get("quotas"))
        for key, value in data.items():
            if key == "quotas":
                continue
            try:
                risk = Risk.parse(key)
                rm = RuleModel.model_validate(value or {})
            except ValidationError as e:
                err = e.errors()[0]
                path = ".".join(map(str, (key, *err["loc"])))
                raise ValueError(f"policy.{path}: {err['msg']}") from None
            except ValueError as e:
                raise ValueError(f"policy.{key}: {e}") from None
            rules[risk] = Rule(rm.approvals, timedelta(seconds=rm.expires_after_seconds))
        return cls(rules, quotas)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"policy: not valid YAML: {e}") from None
        return cls.from_mapping(data)
