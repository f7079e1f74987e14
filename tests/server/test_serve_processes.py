"""``airlock serve --processes N``: several serving processes on one port, all real.

Which serving process answered a call is read from /proc (the process holding the accepted
connection), not from anything the server says. Covered: calls succeed on every process (and
a page token from one is good on another); the once-only duties run in one process and move
to another when it dies; killing a serving process with SIGKILL loses no call it had answered,
the port keeps answering and the process is replaced; a database outage answers UNAVAILABLE on
every process and every process recovers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_pb2 as rp
from airlock.v1 import run_service_pb2 as rs
from server.domain.errors import DatabaseUnavailable
from tests.conftest import manifest_text
from tests.helpers.api import expect_code, get_run, register, submit
from tests.helpers.client import Client
from tests.helpers.private_pg import PrivatePg
from tests.helpers.serving import Served, http_status_per_process, serve_processes
from tests.helpers.wait import assert_eventually, wait_for_condition

pytestmark = [pytest.mark.postgres]

HOLDS = re.compile(r"serving process (\d+) holds the once-only duties")
REPLACES = re.compile(r"serving process (\d+) replaces")
POLICY = "high: {approvals: 1, expires_after_seconds: 1}\n"


def holders(served: Served) -> list[int]:
    """Every serving process that took the once-only duties, in order."""
    return [int(m.group(1)) for line in served.log_messages() if (m := HOLDS.search(line))]


def replaced(served: Served) -> list[int]:
    """Serving processes the supervisor started (and saw ready) in place of one that died."""
    return [int(m.group(1)) for line in served.log_messages()
            if (m := REPLACES.search(line))]


def env_for(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {"AIRLOCK_DATABASE_URL": url, "AIRLOCK_POLICY_FILE": str(policy),
            "AIRLOCK_EXPIRY_SWEEP_SECONDS": "0.2", **extra}


async def versions(c: Client) -> list[str]:
    resp = await c.registry.GetAgent(reg.GetAgentRequest(name="echo"), metadata=c.md)
    return [v.version for v in resp.versions]


async def health(c: Client) -> int:
    resp = await health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest())
    return int(resp.status)


async def test_calls_succeed_on_every_serving_process(pg_url: str, tmp_path: Path) -> None:
    with serve_processes(env_for(pg_url, tmp_path), tmp_path / "serve.log") as served:
        pids = served.pids
        assert len(pids) == 2, pids
        admin = served.client(served.admin_token, "admin")
        await register(admin, manifest_text("echo"))
        per = await served.client_per_process(served.admin_token, "admin")
        assert set(per) == set(pids)
        # A run submitted through one process is read through every other one.
        ids = {pid: (await submit(c, text=str(pid))).run.id for pid, c in per.items()}
        for c in per.values():
            for run_id in ids.values():
                assert (await get_run(c, run_id)).state == rp.RUN_STATE_QUEUED
        # A page token made by one process is accepted by the other (one shared key).
        a, b = (per[p] for p in pids)
        page = await a.runs.ListRuns(rs.ListRunsRequest(page_size=1), metadata=a.md)
        assert page.next_page_token
        rest = await b.runs.ListRuns(rs.ListRunsRequest(page_size=1,
                                                        page_token=page.next_page_token),
                                     metadata=b.md)
        assert len(rest.runs) == 1 and rest.runs[0].id != page.runs[0].id
        # A registry change through one process reaches every other one's registry cache
        # (each read the agent just above, at submit) by LISTEN/NOTIFY.
        await register(a, manifest_text("echo", "1.1.0"))
        for c in per.values():
            await assert_eventually(lambda c=c: versions(c),  # type: ignore[misc]
                                    lambda v: v == ["1.0.0", "1.1.0"],
                                    what="the new version on every process")
            assert (await submit(c)).run.version == "1.1.0"
        # The HTTP port is shared the same way.
        assert http_status_per_process(served.http_address, "/healthz", pids) == {
            p: 200 for p in pids}
        # The once-only duties: exactly one process took them.
        assert len(holders(served)) == 1 and holders(served)[0] in pids, served.log_messages()
        await served.close_channels()


async def test_sigkill_loses_no_answered_call_and_the_process_is_replaced(
        pg_url: str, tmp_path: Path) -> None:
    with serve_processes(env_for(pg_url, tmp_path), tmp_path / "serve.log") as served:
        first = served.pids
        admin = served.client(served.admin_token, "admin")
        await register(admin, manifest_text("echo"))
        await register(admin, manifest_text("risky", risk="high"))
        await wait_for_condition(lambda: len(holders(served)) == 1, what="a duty holder")
        holder = holders(served)[0]

        accepted: list[str] = []  # runs whose SubmitRun answered OK
        after_kill: list[str] = []
        killed = asyncio.Event()
        failures: list[str] = []

        async def submitter(i: int) -> None:
            c = served.client(served.admin_token, "admin")
            n = 0
            while len(after_kill) < 40:
                try:
                    r = await submit(c, text=f"{i}-{n}")
                except grpc.aio.AioRpcError as e:
                    # Calls in flight on the killed process fail; they were never answered.
                    failures.append(e.code().name)
                    c = served.client(served.admin_token, "admin")
                    continue
                finally:
                    n += 1
                accepted.append(r.run.id)
                if killed.is_set():
                    after_kill.append(r.run.id)

        load = [asyncio.create_task(submitter(i)) for i in range(6)]
        await wait_for_condition(lambda: len(accepted) >= 30, timeout=60, what="load running")
        os.kill(holder, signal.SIGKILL)
        killed.set()
        await asyncio.wait_for(asyncio.gather(*load), 120)
        assert set(failures) <= {"UNAVAILABLE"}, failures

        # Every call that was answered OK is committed: the run is there.
        reader = served.client(served.admin_token, "admin")
        for run_id in accepted:
            assert (await get_run(reader, run_id)).id == run_id
        # A replacement took the killed process's place and serves calls too.
        await wait_for_condition(lambda: replaced(served), timeout=60,
                                 what="a replacement serving process ready")
        replacement = replaced(served)[0]
        assert replacement not in first and sorted(served.pids) == sorted(
            [p for p in first if p != holder] + [replacement])
        per = await served.client_per_process(served.admin_token, "admin")
        assert replacement in per
        assert (await get_run(per[replacement], accepted[0])).id == accepted[0]

        # The duties moved to a live process, which now expires approvals (1 s deadline).
        await wait_for_condition(lambda: len(holders(served)) == 2, timeout=30,
                                 what="the duties taken over")
        assert holders(served)[1] in served.pids
        risky = (await submit(reader, "risky")).run
        assert risky.state == rp.RUN_STATE_PENDING_APPROVAL
        await assert_eventually(lambda: get_run(reader, risky.id),
                                lambda r: r.state == rp.RUN_STATE_EXPIRED, timeout=30,
                                what="the pending run expired by the new duty holder")
        await served.close_channels()


async def test_database_outage_on_every_serving_process(private_pg: PrivatePg,
                                                        tmp_path: Path) -> None:
    env = env_for(private_pg.url, tmp_path, AIRLOCK_AUTH_CACHE_SECONDS="0")
    with serve_processes(env, tmp_path / "serve.log") as served:
        pids = served.pids
        admin = served.client(served.admin_token, "admin")
        await register(admin, manifest_text("echo"))
        run = (await submit(admin)).run
        per = await served.client_per_process(served.admin_token, "admin")
        for c in per.values():
            assert (await get_run(c, run.id)).id == run.id

        private_pg.stop()

        for c in per.values():
            err = await expect_code(c.runs.GetRun(rs.GetRunRequest(run_id=run.id), metadata=c.md),
                                    grpc.StatusCode.UNAVAILABLE)
            assert err.details() == DatabaseUnavailable.MESSAGE
        for c in per.values():
            await assert_eventually(lambda c=c: health(c),  # type: ignore[misc]
                                    lambda s: s == health_pb2.HealthCheckResponse.NOT_SERVING,
                                    timeout=30, what="gRPC health NOT_SERVING")
        assert http_status_per_process(served.http_address, "/healthz", pids) == {
            p: 503 for p in pids}

        private_pg.start()

        for c in per.values():
            await assert_eventually(lambda c=c: health(c),  # type: ignore[misc]
                                    lambda s: s == health_pb2.HealthCheckResponse.SERVING,
                                    timeout=30, what="gRPC health SERVING again")
            assert (await get_run(c, run.id)).id == run.id
        assert http_status_per_process(served.http_address, "/healthz", pids) == {
            p: 200 for p in pids}
        assert served.pids == pids  # recovered in place, not by restarts
        await served.close_channels()
