"""GetAnalytics over known runs, on both dialects (PostgreSQL aggregates in SQL, SQLite in the
store): counts by state, duration and queue-wait percentiles, usage by agent and by owner,
runs per bucket by state; and its argument checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from airlock.v1 import usage_service_pb2 as us
from airlock.v1.run_pb2 import RunState as PbState
from server.domain.models import AttemptResult
from server.domain.states import RunState
from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.api import expect_code, register, submit
from tests.helpers.clock import ManualClock

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def stamp(t: datetime) -> Timestamp:
    s = Timestamp()
    s.FromDatetime(t)
    return s


async def run_at(plane: Plane, clock: ManualClock, who: object, agent: str, at: datetime, *,
                 wait: float | None = None, state: RunState = RunState.SUCCEEDED,
                 duration: float = 0, cpu: float = 0, peak: int = 0) -> str:
    """A run submitted at ``at``; when ``wait`` is given, leased ``wait`` s later and ended."""
    clock.now = at
    run_id = str((await submit(who, agent)).run.id)  # type: ignore[arg-type]
    if wait is None:
        return run_id
    clock.now = at + timedelta(seconds=wait)
    now = clock.now
    async with plane.cp.store.transaction() as tx:
        run = await tx.runs.get(run_id, lock=True)
        assert run is not None
        run = await tx.runs.lease(run, executor_id="ex", until=now + timedelta(minutes=5), now=now)
        await tx.runs.record_outcome(run, state, reason="done", actor="ex", now=now,
                                     result=AttemptResult(duration_seconds=duration, cpu_seconds=cpu,
                                                          peak_memory_bytes=peak))
    return run_id


@pytest.fixture
async def seeded(db_url: str) -> AsyncIterator[Plane]:
    clock = ManualClock()
    clock.now = T0 - timedelta(days=2)
    plane = await start_plane(db_url, clock=clock)
    try:
        await register(plane.admin, manifest_text("echo"))
        await register(plane.admin, manifest_text("other"))
        alice = await plane.key("alice", "submitter")
        bob = await plane.key("bob", "submitter")
        await run_at(plane, clock, alice, "echo", T0 - timedelta(days=1), wait=1, duration=99,
                     cpu=99, peak=999)  # before the range
        await run_at(plane, clock, alice, "echo", T0, wait=2, duration=1.0, cpu=0.5, peak=100)
        await run_at(plane, clock, alice, "echo", T0 + timedelta(seconds=60), wait=4,
                     state=RunState.FAILED, duration=3.0, cpu=1.5, peak=300)
        await run_at(plane, clock, bob, "other", T0 + timedelta(seconds=120), wait=6,
                     duration=5.0, cpu=2.0, peak=200)
        await run_at(plane, clock, bob, "echo", T0 + timedelta(seconds=3600))  # still queued
        await run_at(plane, clock, bob, "echo", T0 + timedelta(hours=2))  # at the end: outside
        yield plane
    finally:
        await plane.close()


async def test_aggregates_over_the_range(seeded: Plane) -> None:
    viewer = await seeded.key("vera", "viewer")
    a = await viewer.usage.GetAnalytics(us.GetAnalyticsRequest(
        start_time=stamp(T0), end_time=stamp(T0 + timedelta(hours=2)), bucket_seconds=3600),
        metadata=viewer.md)
    assert a.total_runs == 4 and a.bucket_seconds == 3600
    assert {PbState.Name(s.state): s.runs for s in a.by_state} == {
        "RUN_STATE_SUCCEEDED": 2, "RUN_STATE_FAILED": 1, "RUN_STATE_QUEUED": 1}
    # percentile_cont over [1, 3, 5] and queue waits [2, 4, 6]
    assert (a.duration.p50, a.duration.p90, a.duration.p95, a.duration.p99) == pytest.approx(
        (3.0, 4.6, 4.8, 4.96))
    assert (a.queue_wait.p50, a.queue_wait.p95) == pytest.approx((4.0, 5.8))
    agents = [(g.key, g.runs, g.cpu_seconds, g.wall_seconds, g.peak_memory_max_bytes,
               g.peak_memory_avg_bytes, g.duration.p50) for g in a.by_agent]
    assert agents == [("echo", 3, 2.0, 4.0, 300, 200.0, 2.0), ("other", 1, 2.0, 5.0, 200, 200.0, 5.0)]
    owners = [(g.key, g.runs, g.cpu_seconds) for g in a.by_owner]
    assert owners == [("alice", 2, 2.0), ("bob", 2, 2.0)]
    series = [(p.start_time.ToDatetime(UTC), PbState.Name(p.state), p.runs) for p in a.series]
    assert series == [(T0, "RUN_STATE_FAILED", 1), (T0, "RUN_STATE_SUCCEEDED", 2),
                      (T0 + timedelta(hours=1), "RUN_STATE_QUEUED", 1)]
    assert a.by_agent[0].duration.HasField("p99")  # set: the group has durations


async def test_an_empty_range_has_no_percentiles(seeded: Plane) -> None:
    admin = seeded.admin
    a = await admin.usage.GetAnalytics(us.GetAnalyticsRequest(
        start_time=stamp(T0 - timedelta(days=10)), end_time=stamp(T0 - timedelta(days=9))),
        metadata=admin.md)
    assert a.total_runs == 0 and not a.by_state and not a.series and not a.by_agent
    assert not a.duration.HasField("p50") and not a.queue_wait.HasField("p95")
    assert a.bucket_seconds == 1800  # about 48 buckets in a day


@pytest.mark.parametrize(("fields", "message"), [
    ({"start_time": T0, "end_time": T0}, "end_time: must be after start_time"),
    ({"start_time": T0 - timedelta(days=400), "end_time": T0}, "start_time: the range may be at most 366 days"),
    ({"bucket_seconds": -1}, "bucket_seconds: must not be negative"),
    ({"bucket_seconds": 60, "start_time": T0 - timedelta(days=2), "end_time": T0},
     "bucket_seconds: makes more than 1000 buckets in the range; use at least 173"),
])
async def test_bad_arguments_name_the_field(seeded: Plane, fields: dict, message: str) -> None:
    req = us.GetAnalyticsRequest(**{k: stamp(v) if isinstance(v, datetime) else v
                                    for k, v in fields.items()})
    err = await expect_code(seeded.admin.usage.GetAnalytics(req, metadata=seeded.admin.md),
                            grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details() == message


async def test_cli_usage_report_prints_the_tables(seeded: Plane, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from airlock.cli import main

    capsys.readouterr()
    argv = ["usage", "report", "--since", "2026-12-03T10:00:00", "--until", "2026-12-03T12:00:00",
            "--address", seeded.address, "--token", str(seeded.admin.token)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    blocks = [b.splitlines() for b in out.strip().split("\n\n")]
    assert blocks[0] == ["runs submitted 2026-12-03 10:00:00Z .. 2026-12-03 12:00:00Z: 4"]
    assert [line.split() for line in blocks[1]] == [
        ["STATE", "RUNS"], ["FAILED", "1"], ["QUEUED", "1"], ["SUCCEEDED", "2"]]
    assert blocks[2][1].split() == ["duration", "3.00s", "4.60s", "4.80s", "4.96s"]
    assert blocks[2][2].split() == ["queue", "wait", "4.00s", "5.60s", "5.80s", "5.96s"]
    assert blocks[3][0].split()[0] == "AGENT"
    assert blocks[3][1].split() == ["echo", "3", "2.0", "4.0", "2.00s", "2.90s", "0.0", "0.0"]
    assert [line.split()[0] for line in blocks[4]] == ["OWNER", "alice", "bob"]
    # a bad time names the option
    r = await asyncio.to_thread(main, ["usage", "report", "--since", "yesterday", "--address",
                                       seeded.address, "--token", str(seeded.admin.token)])
    assert r == 1 and "--since: give a duration ago (24h, 7d, 30m) or an ISO time" in capsys.readouterr().err
