"""A TEST DOUBLE sandbox runtime: it runs nothing, in-process, and answers with a canned result.

It exists to prove the runtime registry's promise (a new runtime is one module plus one line
in ``executor.runtime.registry.RUNTIMES``) and to drive the executor's control flow without
containers. It gives no isolation whatsoever: never register it outside tests. Every executor
behaviour that depends on a real sandbox is proven with podman (and Dagger) elsewhere.

Register it with one line, e.g. ``monkeypatch.setitem(RUNTIMES, FAKE_NAME, FAKE_FACTORY_PATH)``.
"""

from __future__ import annotations

import asyncio
import json

from executor.runtime.base import (
    RunSpec,
    RuntimeFactory,
    RuntimeSettings,
    RuntimeUnavailable,
    SandboxResult,
    Termination,
)

FAKE_NAME = "fake"
FAKE_FACTORY_PATH = "tests.helpers.fake_runtime:FACTORY"


class FakeSettings(RuntimeSettings):
    """The double's options: ``executor_id`` comes from the executor's settings like any
    runtime's; ``fake_usable`` (tests only) makes ``check()`` refuse."""

    executor_id: str | None = None
    fake_usable: bool = True


class FakeRuntime:
    """Answers every run with exit 0 and ``{"output": {"echo": <the run's input>}}``."""

    name = FAKE_NAME
    network_pool: bool | None = None

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.specs: list[RunSpec] = []  # what it was asked to run, for assertions

    async def check(self) -> None:
        if not self.settings.fake_usable:
            raise RuntimeUnavailable("fake runtime: configured unusable")

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        self.specs.append(spec)
        if cancel.is_set():
            return SandboxResult(Termination.CANCELLED, None, None, False, b"", False, 0.0)
        request = json.loads(spec.request_json())  # the bytes a real sandbox would receive
        output = json.dumps({"output": {"echo": request["input"]}}).encode()
        return SandboxResult(Termination.EXITED, 0, output, False, b"fake runtime\n", False, 0.0,
                             image_digest="sha256:" + "0" * 64)

    async def reap(self, run_id: str) -> int:
        return 0


FACTORY = RuntimeFactory(settings=FakeSettings, create=FakeRuntime)
