"""The sandbox runtime interface: frozen inputs in, a raw result out.

A runtime only *runs* a container under limits and reports what happened. Interpreting the
result (output parsing, schema validation, the final run state and reason) happens once, in
``executor.results``, for every runtime alike.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from agents.errors import Unavailable
from agents.limits import Limits

# Where the agent contract puts things inside every sandbox.
INPUT_PATH = "/airlock/input.json"
OUTPUT_DIR = "/airlock/out"
OUTPUT_PATH = f"{OUTPUT_DIR}/output.json"
SECRETS_DIR = "/run/secrets"
LABEL_RUN_ID = "airlock.run_id"
LABEL_EXECUTOR = "airlock.executor"


class RuntimeUnavailable(Unavailable):
    """Raised when a runtime cannot run sandboxes on this host (never fall back to no sandbox)."""


@dataclass(frozen=True, slots=True, repr=False)
class SecretValue:
    """A secret's bytes; its repr never shows the value, so it cannot leak into logs."""

    value: bytes

    def __repr__(self) -> str:
        return "SecretValue(***)"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """Everything a runtime needs to run one attempt of one run.

    The capability's input is ``input_json``, JSON text. The executor passes the text the
    control plane stored at submit (parsed and checked there), so no run's input is parsed
    and re-serialised on its way into the sandbox. Callers holding a value instead (``agent
    run-local``, tests, benchmarks) may give ``input=`` and leave ``input_json`` unset: it is
    serialised once, here.
    """

    run_id: str
    attempt: int
    image: str
    capability: str
    input: Any = None  # the JSON value, for callers without text; see input_json
    limits: Limits
    entrypoint: tuple[str, ...] | None = None  # None: the image's own entrypoint/cmd
    network: bool = False
    secrets: Mapping[str, SecretValue] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. TRACEPARENT
    executor_id: str = "local"
    input_json: str = ""  # the input as JSON text; set from ``input`` when empty

    def __post_init__(self) -> None:
        if not self.input_json:
            object.__setattr__(self, "input_json", json.dumps(self.input, ensure_ascii=False))

    @property
    def sandbox_name(self) -> str:
        return f"airlock-{self.run_id}-{self.attempt}"

    def request_json(self) -> bytes:
        """What the agent reads at ``INPUT_PATH``: ``{"run_id", "capability", "input"}``.

        ``input_json`` is spliced in as it is (it is valid JSON text by construction).
        """
        head = json.dumps({"run_id": self.run_id, "capability": self.capability},
                          ensure_ascii=False)
        return f'{head[:-1]}, "input": {self.input_json}}}'.encode()


class Termination(enum.Enum):
    """How the sandbox stopped, as the runtime observed it, before the agent contract is applied.

    This is the runtime's raw observation, not the run's outcome: ``EXITED`` may still end as
    ``FAILED`` (bad output, non-zero exit) and ``START_FAILED`` becomes ``FAILED``.
    ``executor.results.interpret`` is the one place that maps it to a ``RunState``.
    """

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
    # Measured usage: CPU time of every process of the sandbox (its cgroup's counter), the
    # size of the output file the agent wrote and every byte it logged (kept or dropped).
    cpu_seconds: float | None = None
    output_bytes: int | None = None
    log_bytes: int | None = None


@runtime_checkable
class SandboxRuntime(Protocol):
    """One sandbox technology (podman, dagger, ...)."""

    name: str
    # Which runs this runtime may take: None = any (network chosen per run: every runtime
    # here, the Dagger one included, whose jail decides it inside the exec); True = only runs
    # granted egress; False = only runs without (a runtime whose network were fixed).
    network_pool: bool | None

    async def check(self) -> None:
        """Raise ``RuntimeUnavailable`` with a clear reason if sandboxes cannot run here."""

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        """Run one attempt to completion; setting ``cancel`` stops it within about a second."""

    async def reap(self, run_id: str) -> int:
        """Remove any sandbox left for ``run_id`` (e.g. after an executor crash); return count."""


class RuntimeSettings(BaseModel):
    """A runtime's own options, built from the executor's settings.

    The registry validates this model from the values of ``ExecutorSettings`` (one source of
    ``AIRLOCK_`` variables, read once per process): each runtime declares the options it takes,
    by field name or ``validation_alias`` (``podman_work_root`` -> ``work_root``), and ignores
    the rest.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


SettingsT = TypeVar("SettingsT", bound=RuntimeSettings)


@dataclass(frozen=True, slots=True)
class RuntimeFactory(Generic[SettingsT]):
    """How the registry builds one runtime: its settings model and a constructor taking it.

    ``probe``, when set, is a quick look used only by ``auto``: it returns None when the runtime
    is worth a full ``check()`` here, else why not (``auto`` then moves on without a session).
    """

    settings: type[SettingsT]
    create: Callable[[SettingsT], SandboxRuntime]
    probe: Callable[[], Awaitable[str | None]] | None = None

    def build(self, options: Mapping[str, Any]) -> SandboxRuntime:
        """A runtime (not yet checked) from executor setting values; raises ``ValueError``
        (pydantic's ``ValidationError``) naming an option of the wrong type."""
        return self.create(self.settings.model_validate(dict(options)))
