"""End-to-end fixtures: a control plane plus real executors running real podman containers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from airlock.v1.run_pb2 import RunState
from executor.process import open_store
from executor.runtime.podman import PodmanRuntime
from executor.settings import ExecutorSettings
from executor.worker import Executor
from tests.conftest import REPO, Plane
from tests.executor.conftest import base_image, misbehave_image, podman_runtime, sample_images  # noqa: F401
from tests.helpers.client import Client

TERMINAL = {RunState.Value(n) for n in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_TIMED_OUT",
                                        "RUN_STATE_OOM_KILLED", "RUN_STATE_CANCELLED",
                                        "RUN_STATE_REJECTED", "RUN_STATE_EXPIRED")}


def state_name(value: int) -> str:
    return RunState.Name(value).removeprefix("RUN_STATE_")


def manifest_of(path: Path, **replace: str) -> str:
    text = (path / "agent.yaml").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


SAMPLES = REPO / "sample_agents"
MISBEHAVE = REPO / "tests" / "agents" / "misbehave"


@asynccontextmanager
async def running_executor(url: str, runtime: PodmanRuntime, **overrides: Any) -> AsyncIterator[Executor]:
    """A real executor with its own store and LISTEN connection, as in production."""
    settings = ExecutorSettings(database_url=url, slots=overrides.pop("slots", 2),
                                lease_seconds=overrides.pop("lease_seconds", 5),
                                heartbeat_seconds=overrides.pop("heartbeat_seconds", 1),
                                poll_seconds=1, grace_seconds=overrides.pop("grace_seconds", 5),
                                **overrides)
    store, listener = await open_store(url)
    ex = Executor(settings, store, runtime)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()
        if listener:
            await listener.stop()
        await store.dispose()


async def register(admin: Client, folder: Path, **replace: str) -> None:
    await admin.registry.RegisterAgentVersion(
        reg.RegisterAgentVersionRequest(manifest=manifest_of(folder, **replace)), metadata=admin.md)


async def wait_terminal(client: Client, run_id: str) -> list[Any]:
    """Watch the run to its end; returns the events."""
    events = []
    async for msg in client.runs.WatchRun(rs.WatchRunRequest(run_id=run_id), metadata=client.md,
                                          timeout=120):
        events.append(msg.event)
    assert events and events[-1].state in TERMINAL, events
    return events


@pytest.fixture
def e2e_ready(sample_images: dict[str, str], misbehave_image: str) -> Callable[[], None]:  # noqa: F811
    return lambda: None


__all__ = ["Plane"]
