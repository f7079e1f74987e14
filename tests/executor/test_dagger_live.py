"""DaggerRuntime against a real Dagger engine, wherever one is reachable.

On machines without an engine (these development machines: its image is in a registry they
cannot reach) the live tests skip with the probe's reason, and the runtime must refuse quickly
and clearly instead of hanging or downloading anything.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from agents.limits import Limits
from executor.runtime.base import RunSpec, RuntimeUnavailable, Termination
from executor.runtime.dagger import (
    PROBE_TIMEOUT_SECONDS,
    DaggerRuntime,
    engine_reachable,
    probe_engine,
)

# An image the engine can pull; override where the default registry is not reachable.
LIVE_IMAGE = os.environ.get("AIRLOCK_DAGGER_TEST_IMAGE", "python:3.11-slim")


async def _require_engine() -> None:
    if not await engine_reachable():
        probe = await probe_engine()
        pytest.skip(f"no Dagger engine reachable ({probe.reason})")


def _spec(code: str, **kw: object) -> RunSpec:
    fields: dict[str, object] = {
        "run_id": f"live-{time.time_ns()}", "attempt": 1, "image": LIVE_IMAGE,
        "capability": "echo", "input": {"text": "hi"},
        "limits": Limits(memory_mib=256, timeout_seconds=30, pids=32, log_kib=64, output_kib=64),
        "entrypoint": ("python3", "-c", code),
    }
    fields.update(kw)
    return RunSpec(**fields)  # type: ignore[arg-type]


async def test_engine_probe_is_quick() -> None:
    started = time.monotonic()
    await engine_reachable()
    # The probe's contract: it gives up after PROBE_TIMEOUT_SECONDS; plus 2 s of slack.
    assert time.monotonic() - started < PROBE_TIMEOUT_SECONDS + 2


async def test_check_raises_runtime_unavailable_quickly_without_an_engine() -> None:
    probe = await probe_engine()
    if probe.reachable is not False:
        pytest.skip(f"an engine may be reachable here ({probe.reason})")
    started = time.monotonic()
    with pytest.raises(RuntimeUnavailable, match="no Dagger engine reachable"):
        await DaggerRuntime().check()
    # The probe's contract: it gives up after PROBE_TIMEOUT_SECONDS; plus 2 s of slack.
    assert time.monotonic() - started < PROBE_TIMEOUT_SECONDS + 2


async def test_run_without_an_engine_fails_to_start_quickly() -> None:
    probe = await probe_engine()
    if probe.reachable is not False:
        pytest.skip(f"an engine may be reachable here ({probe.reason})")
    started = time.monotonic()
    result = await DaggerRuntime().run(_spec("print(1)"), asyncio.Event())
    assert result.termination is Termination.START_FAILED
    # The probe's contract: it gives up after PROBE_TIMEOUT_SECONDS; plus 2 s of slack.
    assert time.monotonic() - started < PROBE_TIMEOUT_SECONDS + 2


@pytest.mark.slow
async def test_live_trivial_agent_runs() -> None:
    await _require_engine()
    code = (
        "import json, os; req = json.load(open(os.environ['AIRLOCK_INPUT'])); print('hello');"
        "json.dump({'output': req['input']}, open(os.environ['AIRLOCK_OUTPUT'], 'w'))"
    )
    runtime = DaggerRuntime()
    await runtime.check()
    result = await runtime.run(_spec(code), asyncio.Event())
    assert result.termination is Termination.EXITED, result.detail
    assert result.exit_code == 0
    assert result.output == b'{"output": {"text": "hi"}}'
    assert b"hello" in result.logs


@pytest.mark.slow
async def test_live_timeout_is_enforced_inside_the_exec() -> None:
    await _require_engine()
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    spec = _spec(code, limits=Limits(timeout_seconds=2, memory_mib=256))
    result = await DaggerRuntime().run(spec, asyncio.Event())
    assert result.termination is Termination.TIMED_OUT, result.detail
    assert "backstop" not in result.detail  # the jail's supervisor killed it, not the client


@pytest.mark.slow
async def test_live_memory_limit_is_enforced() -> None:
    await _require_engine()
    spec = _spec("b = bytearray(1024 * 1024 * 1024)", limits=Limits(memory_mib=128))
    result = await DaggerRuntime().run(spec, asyncio.Event())
    assert result.termination is Termination.OOM_KILLED, result.detail
