"""The sandbox runtime interface: frozen inputs in, a raw result out.

A runtime only *runs* a container under limits and reports what happened. Interpreting the
result (output parsing, schema validation, the final run state and reason) happens once, in
``executor.results``, for every runtime alike.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agents.limits import Limits

# Where the agent contract puts things inside every sandbox.
INPUT_PATH = "/airlock/input.json"
OUTPUT_DIR = "/airlock/out"
OUTPUT_PATH = f"{OUTPUT_DIR}/output.json"
SECRETS_DIR = "/run/secrets"
LABEL_RUN_ID = "airlock.run_id"
LABEL_EXECUTOR = "airlock.executor"


class RuntimeUnavailable(RuntimeError):
    """Raised when a runtime cannot run sandboxes on this host (never fall back to no sandbox)."""


@dataclass(frozen=True, slots=True, repr=False)
class SecretValue:
    """A secret's bytes; its repr never shows the value, so it cannot leak into logs."""

    value: bytes

    def __repr__(self) -> str:
        return "SecretValue(***)"


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything a runtime needs to run one attempt of one run."""

    run_id: str
    attempt: int
    image: str
    capability: str
    input: Any  # the JSON value given to the capability
    limits: Limits
    entrypoint: tuple[str, ...] | None = None  # None: the image's own entrypoint/cmd
    network: bool = False
    secrets: Mapping[str, SecretValue] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. TRACEPARENT
    executor_id: str = "local"

    @property
    def sandbox_name(self) -> str:
        return f"airlock-{self.run_id}-{self.attempt}"


class Termination(enum.Enum):
    """Why the sandbox stopped, as far as the runtime can tell."""

    EXITED = "exited"  # the agent's process ended by itself (any exit code)
    TIMED_OUT = "timed_out"  # wall-clock limit hit; killed
    OOM_KILLED = "oom_killed"  # memory limit hit; killed by the kernel
    CANCELLED = "cancelled"  # stopped on request
    START_FAILED = "start_failed"  # the sandbox never ran the agent (bad image, ...)


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What happened inside the sandbox, before interpretation."""

    termination: Termination
    exit_code: int | None
    output: bytes | None  # content of OUTPUT_PATH; None if the agent wrote none
    output_truncated: bool  # the agent wrote more than limits.output_kib
    logs: bytes  # stdout+stderr, interleaved, at most limits.log_kib
    logs_truncated: bool
    duration_seconds: float
    peak_memory_bytes: int | None = None
    detail: str = ""  # runtime's own explanation (start failure message, ...)
    image_digest: str | None = None


@runtime_checkable
class SandboxRuntime(Protocol):
    """One sandbox technology (podman, dagger, ...)."""

    name: str
    # Which runs this runtime may take: None = any (network chosen per run, as podman does);
    # True = only runs granted egress; False = only runs without (a Dagger engine's network
    # is fixed by where the engine runs).
    network_pool: bool | None

    async def check(self) -> None:
        """Raise ``RuntimeUnavailable`` with a clear reason if sandboxes cannot run here."""

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        """Run one attempt to completion; setting ``cancel`` stops it within about a second."""

    async def reap(self, run_id: str) -> int:
        """Remove any sandbox left for ``run_id`` (e.g. after an executor crash); return count."""
