"""The executor logs each run's life (start, outcome, OOM, timeout, lease lost, re-queue), with
the run id in the structured log context (``run_id`` of every JSON log line)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from airlock.v1 import run_service_pb2 as rs
from executor.runtime.podman import PodmanRuntime
from server.logs import _Enrich
from server.store import tables as t
from tests.conftest import Plane
from tests.e2e.conftest import MISBEHAVE, register, running_executor, state_name, wait_terminal
from tests.helpers.client import Client
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.podman, pytest.mark.postgres]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of the executor, enriched as the process's log handler does (run_id)."""
    enrich = _Enrich()
    caplog.handler.addFilter(enrich)
    caplog.set_level(logging.INFO, logger="executor")
    yield caplog
    caplog.handler.removeFilter(enrich)


def lines_of(caplog: pytest.LogCaptureFixture, run_id: str) -> list[tuple[str, str]]:
    """(level, message) of every executor record carrying ``run_id`` in its context."""
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name.startswith("executor") and getattr(r, "run_id", None) == run_id]


def has(caplog: pytest.LogCaptureFixture, run_id: str, *words: str) -> bool:
    return any(all(w in msg for w in words) for _, msg in lines_of(caplog, run_id))


async def submit(client: Client, capability: str, payload: str = "{}", **limits: float) -> str:
    sub = await client.runs.SubmitRun(rs.SubmitRunRequest(
        agent="misbehave", capability=capability, input_json=payload, limits=limits or None),
        metadata=client.md)
    return sub.run.id


async def test_start_outcome_timeout_and_oom_are_logged_with_the_run_id(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object,
    logs: pytest.LogCaptureFixture,
) -> None:
    await register(pg_plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await pg_plane.key("alice", "submitter")
    async with running_executor(pg_plane.url, podman_runtime, slots=3):
        ok = await submit(alice, "ok")
        spin = await submit(alice, "spin", timeout_seconds=2)
        hog = await submit(alice, "hog_memory", '{"mib": 256}', memory_mib=64)
        finals = {r: state_name((await wait_terminal(alice, r))[-1].state) for r in (ok, spin, hog)}
    assert finals == {ok: "SUCCEEDED", spin: "TIMED_OUT", hog: "OOM_KILLED"}, finals
    for run_id in (ok, spin, hog):
        assert has(logs, run_id, run_id, "attempt 1 starting on"), lines_of(logs, run_id)
    assert ("INFO", next(m for _, m in lines_of(logs, ok) if "SUCCEEDED" in m)) in lines_of(logs, ok)
    assert has(logs, spin, "TIMED_OUT", "timed out after 2s"), lines_of(logs, spin)
    assert has(logs, hog, "OOM_KILLED", "memory limit of 64 MiB exceeded", "peak memory"), \
        lines_of(logs, hog)
    # Nothing about one run is logged under another's id.
    assert not has(logs, ok, spin) and not has(logs, spin, hog)


async def test_lease_lost_and_requeues_are_logged_with_the_run_id(
    pg_plane: Plane, podman_runtime: PodmanRuntime, e2e_ready: object,
    logs: pytest.LogCaptureFixture,
) -> None:
    await register(pg_plane.admin, MISBEHAVE, **{"risk: critical": "risk: low"})
    alice = await pg_plane.key("alice", "submitter")
    async with running_executor(pg_plane.url, podman_runtime, lease_seconds=2) as ex:
        stolen = await submit(alice, "sleep", '{"seconds": 30}', timeout_seconds=40)
        await assert_eventually(lambda: _async(stolen in ex.active), bool, timeout=60,
                                what="the run is executing")
        # Another executor ("ghost") takes the run over, then dies: its lease lapses.
        async with pg_plane.cp.store.transaction() as tx:
            await tx.conn.execute(update(t.runs).where(t.runs.c.id == stolen).values(
                lease_owner="ghost"))
        await assert_eventually(lambda: _async(has(logs, stolen, "lease lost", "stopping")), bool,
                                timeout=30, what="lease-lost log")
        # The ghost's lapsed lease is recovered by our executor: re-queued, logged as such.
        await assert_eventually(lambda: _async(has(logs, stolen, "lease lost on ghost",
                                                   "re-queued")), bool,
                                timeout=30, what="re-queue log")
        assert has(logs, stolen, "lease lost before the result was recorded")
        shut = await submit(alice, "sleep", '{"seconds": 30}', timeout_seconds=40)
        await assert_eventually(lambda: _async(shut in ex.active), bool, timeout=60,
                                what="the second run is executing")
        ex.settings.grace_seconds = 0  # stop now: the running attempt is re-queued
    assert has(logs, shut, "shutting down", "re-queued"), lines_of(logs, shut)
    warn = [lvl for lvl, m in lines_of(logs, stolen) if "lease lost" in m]
    assert set(warn) == {"WARNING"}


async def _async(value: bool) -> bool:
    return value
