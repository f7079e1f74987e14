"""Resolved resource limits: the one place where defaults, manifest and run requests meet.

``resolve_limits`` is used by the control plane at submit and by ``airlock agent run-local``,
so a run gets the same limits (and the same refusals) from both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from pydantic import ValidationError

from agents.manifest import LimitsSpec


@dataclass(frozen=True, slots=True)
class Limits:
    """Concrete limits enforced on one run (every field set)."""

    memory_mib: int = 256
    timeout_seconds: float = 60.0
    pids: int = 128
    cpus: float = 1.0
    output_kib: int = 1024
    log_kib: int = 1024

    def overlay(self, spec: LimitsSpec | None) -> Limits:
        if spec is None:
            return self
        changes = {f.name: getattr(spec, f.name) for f in fields(self) if getattr(spec, f.name) is not None}
        return replace(self, **changes)

    def exceeds(self, other: Limits) -> list[str]:
        """Names of the fields where ``self`` asks for more than ``other``."""
        return [f.name for f in fields(self) if getattr(self, f.name) > getattr(other, f.name)]

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Deployment-wide defaults and ceilings; a manifest may lower or raise within the ceiling.
DEFAULT_LIMITS = Limits()
CEILING_LIMITS = Limits(
    memory_mib=8192, timeout_seconds=3600, pids=1024, cpus=4, output_kib=16384, log_kib=16384
)


class LimitsRefused(ValueError):
    """Raised when a requested limit is malformed or above the agent's maximum.

    ``field`` is the limit's name (``memory_mib``); ``above_maximum`` tells the two apart.
    """

    def __init__(self, field: str, problem: str, *, above_maximum: bool) -> None:
        super().__init__(f"limits.{field}: {problem}")
        self.field = field
        self.problem = problem
        self.above_maximum = above_maximum


def resolve_limits(requested: Mapping[str, object] | None, default: LimitsSpec | None = None,
                   maximum: LimitsSpec | None = None) -> tuple[Limits, Limits]:
    """(limits for the run, the agent's defaults).

    The deployment defaults overlaid by the manifest's ``default`` and then by the fields the
    request sets (None or absent: not set); refused above the manifest's ``max`` (itself
    within the deployment ceiling).
    """
    base = DEFAULT_LIMITS.overlay(default)
    ceiling = CEILING_LIMITS.overlay(maximum)
    try:
        spec = LimitsSpec.model_validate(dict(requested or {}))
    except ValidationError as e:
        err = e.errors()[0]
        raise LimitsRefused(".".join(str(x) for x in err["loc"]), err["msg"],
                            above_maximum=False) from None
    wanted = base.overlay(spec)
    for name in wanted.exceeds(ceiling):
        raise LimitsRefused(name, f"{getattr(wanted, name)} exceeds this agent's maximum "
                            f"{getattr(ceiling, name)}", above_maximum=True)
    return wanted, base
