"""The one place where a ``SandboxResult`` becomes a run's final state and reason.

Every runtime (podman, dagger, ...) reports what happened in the same raw form; this module
applies the agent contract to it: exit code 0 plus ``{"output": ...}`` valid against the
capability's output schema is ``SUCCEEDED``, anything else is a precise failure. It never
raises: a malformed or hostile result is a failed run with a reason, not an executor crash.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from agents.limits import Limits
from agents.schemas import SchemaRefused, check_schema_safe, first_error
from agents.states import OUTCOME_STATES, RunState
from executor.runtime.base import SandboxResult, Termination

_MAX_DETAIL = 300  # keeps reasons readable: instances in schema errors can be megabytes
_MAX_ERROR_CODE = 100
_MAX_ERROR_MESSAGE = 1000
# Deepest nesting of arrays/objects accepted in an agent's output. Valid JSON deeper than this
# is refused with a reason naming the limit (parsing and validating it would otherwise exhaust
# the interpreter's recursion limit, which is not a number an agent author can know).
MAX_JSON_DEPTH = 128
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A run's final state, with what the caller and the approver UI need to see."""

    state: RunState  # one of OUTCOME_STATES
    reason: str  # "" on success
    output: Any | None = None  # the capability's result (SUCCEEDED only)
    error_code: str | None = None  # the agent's own error code, when it reported one
    exit_code: int | None = None
    logs: str = ""
    logs_truncated: bool = False
    duration_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    image_digest: str | None = None
    cpu_seconds: float | None = None
    output_bytes: int | None = None
    log_bytes: int | None = None

    def __post_init__(self) -> None:
        state = RunState(self.state)  # also accepts the state's name as text
        if state not in OUTCOME_STATES:
            raise ValueError(f"{state} is not a run outcome; expected one of "
                             f"{', '.join(sorted(OUTCOME_STATES))}")
        object.__setattr__(self, "state", state)

    @property
    def succeeded(self) -> bool:
        return self.state is RunState.SUCCEEDED


def _clip(text: str, limit: int = _MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: float) -> str:
    return f"{value:g}s" if value == int(value) else f"{value:.1f}s"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(text: str) -> int:
    """Deepest array/object nesting of ``text`` (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the limit: skip the scan
    depth = deepest = 0
    for c in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if c in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


TOO_DEEP = f"output is nested more than {MAX_JSON_DEPTH} levels deep (the limit for agent output)"


def _parse(raw: bytes) -> tuple[Any, str | None]:
    """Decode the output file: (document, None) or (None, reason)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"output is not valid JSON: not UTF-8 at byte {e.start}"
    if _depth(text) > MAX_JSON_DEPTH:
        return None, TOO_DEEP
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except (json.JSONDecodeError, ValueError) as e:
        return None, f"output is not valid JSON: {_clip(str(e))}"
    except RecursionError:  # a backstop: the depth check above should come first
        return None, TOO_DEEP


def _agent_error(doc: Any) -> tuple[str, str] | None:
    """``(code, message)`` if ``doc`` is the contract's ``{"error": {...}}`` form."""
    if not isinstance(doc, dict) or "error" not in doc or "output" in doc:
        return None
    err = doc["error"]
    if isinstance(err, dict):
        code = str(err.get("code") or "E_UNKNOWN")
        message = str(err.get("message") or "")
    else:
        code, message = "E_UNKNOWN", str(err)
    return _clip(code, _MAX_ERROR_CODE), _clip(message, _MAX_ERROR_MESSAGE)


def _schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    try:
        # Manifests are checked at registration; this is a backstop for rows stored before.
        jsonschema.Draft202012Validator.check_schema(schema)
        check_schema_safe(schema)
        error = first_error(schema, value)  # RE2 patterns, nothing fetched
    except jsonschema.SchemaError as e:
        return f"the capability's output schema is invalid: {_clip(e.message)}"
    except SchemaRefused as e:
        return f"the capability's output schema is refused: {_clip(str(e))}"
    except RecursionError:
        return (f"output is nested too deeply to validate against the output schema "
                f"(at most {MAX_JSON_DEPTH} levels are accepted; this schema allows fewer)")
    except Exception as e:  # e.g. UnknownType, a bad $ref: never crash the executor
        return f"the output could not be validated: {_clip(str(e).splitlines()[0])}"
    if error is None:
        return None
    return f"output does not match the output schema at {error.json_path}: {_clip(error.message)}"


def interpret(
    result: SandboxResult, output_schema: dict[str, Any], *, limits: Limits | None = None
) -> Outcome:
    """Turn a raw sandbox result into the run's final ``Outcome``.

    ``limits`` (the limits the run was given) only sharpens reasons ("timed out after 5s");
    without it the reason falls back to what was measured.
    """
    base = Outcome(
        state=RunState.FAILED,
        reason="",
        exit_code=result.exit_code,
        logs=result.logs.decode("utf-8", errors="replace"),
        logs_truncated=result.logs_truncated,
        duration_seconds=result.duration_seconds,
        peak_memory_bytes=result.peak_memory_bytes,
        image_digest=result.image_digest,
        cpu_seconds=result.cpu_seconds,
        output_bytes=result.output_bytes,
        log_bytes=result.log_bytes,
    )

    def fail(state: RunState, reason: str, error_code: str | None = None) -> Outcome:
        return replace(base, state=state, reason=reason, error_code=error_code)

    t = result.termination
    if t is Termination.CANCELLED:
        return fail(RunState.CANCELLED, "cancelled")
    if t is Termination.TIMED_OUT:
        limit = limits.timeout_seconds if limits else math.floor(result.duration_seconds)
        return fail(RunState.TIMED_OUT, f"timed out after {_seconds(limit)}")
    if t is Termination.OOM_KILLED:
        if limits:
            return fail(RunState.OOM_KILLED, f"memory limit of {limits.memory_mib} MiB exceeded")
        return fail(RunState.OOM_KILLED, "memory limit exceeded")
    if t is Termination.START_FAILED:
        detail = _clip(result.detail.strip() or "no detail")
        return fail(RunState.FAILED, f"sandbox failed to start: {detail}")

    # EXITED: the agent ended by itself; apply the contract.
    if result.output_truncated:
        kib = limits.output_kib if limits else len(result.output or b"") // 1024
        return fail(RunState.FAILED, f"output larger than {kib} KiB")
    doc, parse_error = (None, None) if result.output is None else _parse(result.output)
    agent_error = _agent_error(doc) if parse_error is None else None
    if agent_error is not None:  # the agent said why, whatever its exit code
        code, message = agent_error
        reason = f"agent error {code}: {message}" if message else f"agent error {code}"
        return fail(RunState.FAILED, reason, code)
    if result.exit_code != 0:
        return fail(RunState.FAILED, f"agent exited with code {result.exit_code}")
    if result.output is None:
        return fail(RunState.FAILED, "no output written")
    if parse_error is not None:
        return fail(RunState.FAILED, parse_error)
    if not isinstance(doc, dict) or "output" not in doc:
        return fail(RunState.FAILED, 'output must be a JSON object with an "output" or "error" member')
    problem = _schema_problem(doc["output"], output_schema)
    if problem is not None:
        return fail(RunState.FAILED, problem)
    return replace(base, state=RunState.SUCCEEDED, output=doc["output"])
