"""Unit tests of ``executor.results.interpret``: every way a run can end, and its reason."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from agents.limits import Limits
from executor.results import Outcome, interpret
from executor.runtime.base import SandboxResult, Termination
from server.domain.states import OUTCOME_STATES

SCHEMA = {
    "type": "object",
    "required": ["count"],
    "properties": {"count": {"type": "integer"}, "tags": {"type": "array"}},
}
LIMITS = Limits(memory_mib=64, timeout_seconds=5, output_kib=1024)


def result(
    *,
    termination: Termination = Termination.EXITED,
    exit_code: int | None = 0,
    output: bytes | None = None,
    doc: Any = None,
    output_truncated: bool = False,
    logs: bytes = b"",
    detail: str = "",
) -> SandboxResult:
    if doc is not None:
        output = json.dumps(doc).encode()
    return SandboxResult(
        termination=termination,
        exit_code=exit_code,
        output=output,
        output_truncated=output_truncated,
        logs=logs,
        logs_truncated=False,
        duration_seconds=1.25,
        peak_memory_bytes=12345,
        detail=detail,
        image_digest="sha256:abc",
    )


def test_success_returns_the_output_and_the_measurements() -> None:
    out = interpret(result(doc={"output": {"count": 3}}, logs=b"hello\n"), SCHEMA)
    assert out == Outcome(
        state="SUCCEEDED",
        reason="",
        output={"count": 3},
        error_code=None,
        exit_code=0,
        logs="hello\n",
        logs_truncated=False,
        duration_seconds=1.25,
        peak_memory_bytes=12345,
        image_digest="sha256:abc",
    )
    assert out.succeeded


def test_outcome_is_frozen() -> None:
    out = interpret(result(doc={"output": {"count": 1}}), SCHEMA)
    with pytest.raises(FrozenInstanceError):
        out.state = "FAILED"  # type: ignore[misc]


def test_null_output_is_a_valid_output_when_the_schema_allows_it() -> None:
    out = interpret(result(doc={"output": None}), {"type": "null"})
    assert (out.state, out.output) == ("SUCCEEDED", None)


@pytest.mark.parametrize(
    ("res", "state", "reason"),
    [
        (result(termination=Termination.CANCELLED, exit_code=137), "CANCELLED", "cancelled"),
        (
            result(termination=Termination.TIMED_OUT, exit_code=137),
            "TIMED_OUT",
            "timed out after 5s",
        ),
        (
            result(termination=Termination.OOM_KILLED, exit_code=137),
            "OOM_KILLED",
            "memory limit of 64 MiB exceeded",
        ),
        (
            result(termination=Termination.START_FAILED, exit_code=None, detail="image not known"),
            "FAILED",
            "sandbox failed to start: image not known",
        ),
        (result(exit_code=3), "FAILED", "agent exited with code 3"),
        (result(exit_code=0), "FAILED", "no output written"),
        (
            result(output=b"x" * 1024 * 1024, output_truncated=True),
            "FAILED",
            "output larger than 1024 KiB",
        ),
        (
            result(doc={"error": {"code": "E_BAD", "message": "message"}}, exit_code=1),
            "FAILED",
            "agent error E_BAD: message",
        ),
        (
            result(doc={"output": {"count": "x"}}),
            "FAILED",
            "output does not match the output schema at $.count: 'x' is not of type 'integer'",
        ),
        (
            result(doc={"output": {}}),
            "FAILED",
            "output does not match the output schema at $: 'count' is a required property",
        ),
        (
            result(doc=[1, 2]),
            "FAILED",
            'output must be a JSON object with an "output" or "error" member',
        ),
    ],
)
def test_final_state_and_reason(res: SandboxResult, state: str, reason: str) -> None:
    out = interpret(res, SCHEMA, limits=LIMITS)
    assert (out.state, out.reason) == (state, reason)
    assert out.state in OUTCOME_STATES
    assert out.output is None


def test_reasons_fall_back_to_measurements_without_limits() -> None:
    timed_out = interpret(result(termination=Termination.TIMED_OUT), SCHEMA)
    assert timed_out.reason == "timed out after 1s"
    oom = interpret(result(termination=Termination.OOM_KILLED), SCHEMA)
    assert oom.reason == "memory limit exceeded"
    big = interpret(result(output=b"x" * 2048, output_truncated=True), SCHEMA)
    assert big.reason == "output larger than 2 KiB"


def test_killed_runs_ignore_whatever_output_was_written() -> None:
    res = result(termination=Termination.TIMED_OUT, doc={"output": {"count": 1}})
    assert interpret(res, SCHEMA, limits=LIMITS).state == "TIMED_OUT"


@pytest.mark.parametrize(
    ("raw", "reason_start"),
    [
        (b"this is {not json", "output is not valid JSON: Expecting value: line 1 column 1"),
        (b'{"output": 1', "output is not valid JSON: Expecting ',' delimiter"),
        (b'{"output": NaN}', "output is not valid JSON: NaN is not valid JSON"),
        (b"\xff\xfe", "output is not valid JSON: not UTF-8 at byte 0"),
        (b"[" * 100_000 + b"]" * 100_000, "output is nested more than 128 levels deep"),
    ],
)
def test_garbage_output_is_a_clear_failure(raw: bytes, reason_start: str) -> None:
    out = interpret(result(output=raw), SCHEMA)
    assert out.state == "FAILED"
    assert out.reason.startswith(reason_start), out.reason


def test_agent_error_wins_over_exit_code_and_is_clipped() -> None:
    doc = {"error": {"code": "E" * 500, "message": "m" * 5000}}
    out = interpret(result(doc=doc, exit_code=0), SCHEMA)
    assert out.state == "FAILED"
    assert out.error_code is not None and len(out.error_code) == 100
    assert len(out.reason) < 1200


def test_error_of_unexpected_shape_still_reports() -> None:
    out = interpret(result(doc={"error": "boom"}, exit_code=1), SCHEMA)
    assert (out.reason, out.error_code) == ("agent error E_UNKNOWN: boom", "E_UNKNOWN")


def test_non_zero_exit_with_an_output_is_a_failure() -> None:
    out = interpret(result(doc={"output": {"count": 1}}, exit_code=2), SCHEMA)
    assert (out.state, out.reason) == ("FAILED", "agent exited with code 2")


def test_schema_error_messages_stay_short_for_huge_values() -> None:
    out = interpret(result(doc={"output": {"count": "z" * 1_000_000}}), SCHEMA)
    assert out.reason.startswith("output does not match the output schema at $.count: ")
    assert len(out.reason) < 400


def test_format_keywords_are_checked() -> None:
    schema = {"type": "string", "format": "email"}
    assert interpret(result(doc={"output": "a@b.example"}), schema).state == "SUCCEEDED"
    out = interpret(result(doc={"output": "not an email"}), schema)
    assert (
        out.reason
        == "output does not match the output schema at $: 'not an email' is not a 'email'"
    )


def test_draft_2020_12_keywords_apply() -> None:
    schema = {"type": "array", "prefixItems": [{"type": "integer"}], "items": False}
    assert interpret(result(doc={"output": [1]}), schema).state == "SUCCEEDED"
    out = interpret(result(doc={"output": [1, 2]}), schema)
    assert out.state == "FAILED" and "output schema at $" in out.reason


def test_invalid_logs_bytes_are_decoded_safely() -> None:
    out = interpret(result(doc={"output": {"count": 1}}, logs=b"ok \xff\n"), SCHEMA)
    assert out.logs == "ok \ufffd\n"


def test_an_invalid_output_schema_fails_the_run_instead_of_raising() -> None:
    out = interpret(result(doc={"output": 1}), {"type": "no-such-type"})
    assert out.state == "FAILED"
    assert out.reason.startswith("the capability's output schema is invalid")
