"""Resolved resource limits: the one place where defaults, manifest and run requests meet."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

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
