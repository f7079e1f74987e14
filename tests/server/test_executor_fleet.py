"""The executor fleet as an operator sees it: active, lost and stopped executors, and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airlock.v1 import admin_service_pb2 as adm
from server.domain.models import ExecutorInfo
from tests.cli.test_cli import Cli
from tests.conftest import Plane, start_plane

LEASE = 15.0  # the plane's lease timeout: no heartbeat for longer = lost
RETENTION = 3600.0


async def add(plane: Plane, ex_id: str, *, heartbeat_ago: float, stopped_ago: float | None = None,
              slots_in_use: int = 2) -> None:
    now = datetime.now(UTC)
    async with plane.cp.store.transaction() as tx:
        await tx.fleet.register(ExecutorInfo(
            id=ex_id, host="host-a", runtime="podman", slots=4, slots_in_use=slots_in_use,
            started_at=now - timedelta(seconds=heartbeat_ago + 60),
            heartbeat_at=now - timedelta(seconds=heartbeat_ago),
            stopped_at=None if stopped_ago is None else now - timedelta(seconds=stopped_ago)))


async def test_executors_are_active_lost_or_stopped_and_old_ones_are_dropped(
        db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    plane = await start_plane(db_url, lease_seconds=LEASE, executor_retention_seconds=RETENTION)
    try:
        await add(plane, "ex-active", heartbeat_ago=1)
        await add(plane, "ex-lost", heartbeat_ago=LEASE + 30)  # killed: no heartbeat, no stop
        await add(plane, "ex-stopped", heartbeat_ago=5, stopped_ago=5, slots_in_use=0)
        # Past the retention period: gone from the list and from the database.
        await add(plane, "ex-lost-long-ago", heartbeat_ago=LEASE + RETENTION + 60)
        await add(plane, "ex-stopped-long-ago", heartbeat_ago=RETENTION + 60,
                  stopped_ago=RETENTION + 60, slots_in_use=0)
        # Lost, but less than the retention period ago (counted from when it became lost).
        await add(plane, "ex-lost-recently", heartbeat_ago=RETENTION + 1)

        admin = plane.admin
        resp = await admin.admin.ListExecutors(adm.ListExecutorsRequest(), metadata=admin.md)
        got = {e.id: e for e in resp.executors}
        assert set(got) == {"ex-active", "ex-lost", "ex-stopped", "ex-lost-recently"}
        state = {k: adm.ExecutorState.Name(e.state) for k, e in got.items()}
        assert state == {"ex-active": "EXECUTOR_STATE_ACTIVE", "ex-lost": "EXECUTOR_STATE_LOST",
                         "ex-stopped": "EXECUTOR_STATE_STOPPED",
                         "ex-lost-recently": "EXECUTOR_STATE_LOST"}
        assert [got[k].healthy for k in ("ex-active", "ex-lost", "ex-stopped")] == [True, False, False]
        # A lost executor's slots are not in use: its runs are re-queued by the others.
        assert got["ex-active"].slots_in_use == 2 and got["ex-lost"].slots_in_use == 0
        assert got["ex-stopped"].HasField("stop_time") and not got["ex-lost"].HasField("stop_time")
        async with plane.cp.store.read() as tx:
            assert {e.id for e in await tx.fleet.all()} == set(got)

        cli = Cli(capsys, plane)
        out = (await cli.ok("executors", "list", token=plane.cp.admin_token)).out.splitlines()
        assert out[0].split()[:5] == ["ID", "HOST", "RUNTIME", "SLOTS", "STATE"]
        rows = {line.split()[0]: line.split()[3:5] for line in out[1:]}
        assert rows == {"ex-active": ["2/4", "active"], "ex-lost": ["0/4", "lost"],
                        "ex-lost-recently": ["0/4", "lost"], "ex-stopped": ["0/4", "stopped"]}
    finally:
        await plane.close()


async def test_retention_zero_drops_stopped_and_lost_at_once(db_url: str) -> None:
    plane = await start_plane(db_url, lease_seconds=LEASE, executor_retention_seconds=0)
    try:
        await add(plane, "ex-active", heartbeat_ago=0)
        await add(plane, "ex-lost", heartbeat_ago=LEASE + 1)
        await add(plane, "ex-stopped", heartbeat_ago=1, stopped_ago=1)
        admin = plane.admin
        resp = await admin.admin.ListExecutors(adm.ListExecutorsRequest(), metadata=admin.md)
        assert [e.id for e in resp.executors] == ["ex-active"]
    finally:
        await plane.close()
