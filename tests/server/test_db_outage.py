"""The database goes away and comes back: every transport answers UNAVAILABLE with a clear
message (never INTERNAL, never the driver's text), health says NOT_SERVING while it lasts,
open streams end with UNAVAILABLE, and everything recovers by itself.

The database is a PRIVATE PostgreSQL this test starts (``initdb`` + ``pg_ctl`` as the
``postgres`` user, its own data directory and free port on 127.0.0.1), so stopping it touches
nothing else; the machine's own server is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import nats
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from server.app import DB_CHECK_DOWN_SECONDS, DB_CHECK_SECONDS
from server.domain.errors import DatabaseUnavailable
from server.store.engine import CONNECT_TIMEOUT_SECONDS
from server.store.notify import APPROVALS
from server.store.store import PING_TIMEOUT_SECONDS
from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.api import expect_code, get_run, register, submit
from tests.helpers.private_pg import PrivatePg
from tests.helpers.requirements import require
from tests.helpers.wait import assert_eventually, wait_for_condition
from tests.helpers.web import WebClient

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

MESSAGE = DatabaseUnavailable.MESSAGE
SHARED_NATS = os.environ.get("AIRLOCK_TEST_NATS", "nats://127.0.0.1:4222")
# The health contract: a call that finds the database unreachable wakes the health check at
# once; even with no calls, the periodic probe (every DB_CHECK_SECONDS, each bounded by
# PING_TIMEOUT_SECONDS) finds it. Recovery is seen within one DB_CHECK_DOWN_SECONDS period
# plus a probe. SLACK covers scheduling on a loaded 2-core test machine.
SLACK = 5.0
DOWN_BOUND = DB_CHECK_SECONDS + PING_TIMEOUT_SECONDS + SLACK
UP_BOUND = DB_CHECK_DOWN_SECONDS + PING_TIMEOUT_SECONDS + SLACK


def _nats_reachable() -> str | None:
    host, _, port = SHARED_NATS.removeprefix("nats://").partition(":")
    try:
        with socket.create_connection((host, int(port or 4222)), timeout=2):
            return None
    except OSError as e:
        return f"NATS not reachable at {SHARED_NATS}: {e}"


@pytest.fixture
async def outage_plane(private_pg: PrivatePg) -> AsyncIterator[Plane]:
    require("NATS", _nats_reachable())
    subject = f"t{uuid.uuid4().hex[:12]}.submit"
    plane = await start_plane(private_pg.url, nats_url=SHARED_NATS, nats_submit_subject=subject,
                              auth_cache_seconds=0)  # every call asks the database for its key
    try:
        yield plane
    finally:
        await plane.close()


async def _health(plane: Plane) -> int:
    ch = grpc.aio.insecure_channel(plane.address)
    try:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        return int(resp.status)
    finally:
        await ch.close()


async def _healthz(http_address: str) -> int:
    async with httpx.AsyncClient() as c:
        return (await c.get(f"http://{http_address}/healthz")).status_code


async def _web_code(web: WebClient, run_id: str) -> tuple[Code, str]:
    try:
        await web.runs.get_run(rs.GetRunRequest(run_id=run_id), headers=web.headers)
    except ConnectError as e:
        return e.code, e.message
    raise AssertionError("GetRun over gRPC-Web succeeded while the database was down")


async def _web_watch_approvals(web: WebClient, opened: asyncio.Event) -> ConnectError | None:
    """Watch approvals over gRPC-Web until the stream ends; its error, if it ended with one."""
    try:
        async with contextlib.aclosing(web.approvals.watch_approvals(
                aps.WatchApprovalsRequest(), headers=web.headers)) as stream:
            opened.set()
            async for _ in stream:
                pass
    except ConnectError as e:
        return e
    return None


async def _nats_submit(nc: nats.NATS, subject: str, token: str) -> tuple[str, dict[str, object]]:
    body = {"agent": "echo", "capability": "echo", "input_json": json.dumps({"text": "hi"})}
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
    return (msg.headers or {}).get("Airlock-Status", ""), json.loads(msg.data)


async def test_database_outage_answers_unavailable_and_recovers(
        private_pg: PrivatePg, outage_plane: Plane) -> None:
    plane = outage_plane
    assert plane.cp.http_address is not None and plane.cp.nats_submit is not None
    await asyncio.wait_for(plane.cp.nats_submit.ready.wait(), 10)
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    alice = await plane.key("alice", "submitter")
    run = (await submit(alice, text="before")).run
    assert (await get_run(alice, run.id)).id == run.id
    web = WebClient(f"http://{plane.cp.http_address}", alice.token, "alice")
    nc = await nats.connect(SHARED_NATS)
    try:
        assert (await web.runs.get_run(rs.GetRunRequest(run_id=run.id),
                                       headers=web.headers)).run.id == run.id
        status, _ = await _nats_submit(nc, plane.cp.nats_submit.subject, alice.token or "")
        assert status == "OK"
        assert await _health(plane) == health_pb2.HealthCheckResponse.SERVING
        assert await _healthz(plane.cp.http_address) == 200

        # An open WatchRun stream: the run stays QUEUED (no executor), so it stays open.
        watch = alice.runs.WatchRun(rs.WatchRunRequest(run_id=run.id), metadata=alice.md)
        first = await asyncio.wait_for(watch.read(), 10)
        assert first is not grpc.aio.EOF
        # And an open WatchApprovals stream over gRPC-Web (the admin may watch approvals).
        admin_web = WebClient(f"http://{plane.cp.http_address}", plane.cp.admin_token, "admin")
        opened = asyncio.Event()
        web_watch = asyncio.create_task(_web_watch_approvals(admin_web, opened))
        await asyncio.wait_for(opened.wait(), 10)
        notifier = plane.cp.store.notifier
        await wait_for_condition(lambda: notifier.waiting(APPROVALS) >= 1, what="a live stream")

        private_pg.stop()

        # Unary calls: UNAVAILABLE with the clear message on gRPC, gRPC-Web and NATS.
        err = await expect_code(alice.runs.GetRun(rs.GetRunRequest(run_id=run.id),
                                                  metadata=alice.md), grpc.StatusCode.UNAVAILABLE)
        assert err.details() == MESSAGE
        err = await expect_code(alice.runs.SubmitRun(
            rs.SubmitRunRequest(agent="echo", capability="echo", input_json='{"text": "x"}'),
            metadata=alice.md), grpc.StatusCode.UNAVAILABLE)
        assert err.details() == MESSAGE
        assert await _web_code(web, run.id) == (Code.UNAVAILABLE, MESSAGE)
        status, body = await _nats_submit(nc, plane.cp.nats_submit.subject, alice.token or "")
        assert status == "UNAVAILABLE"
        assert body == {"error": {"code": "UNAVAILABLE", "message": MESSAGE}}

        # The open stream ends with UNAVAILABLE (its next poll finds the database gone).
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while True:
                item = await asyncio.wait_for(watch.read(), 30)
                assert item is not grpc.aio.EOF, "WatchRun ended without an error"
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert info.value.details() == MESSAGE
        web_error = await asyncio.wait_for(web_watch, 30)
        assert web_error is not None and (web_error.code, web_error.message) == (
            Code.UNAVAILABLE, MESSAGE), web_error
        await admin_web.close()

        # Health: NOT_SERVING on gRPC, 503 on /healthz, within the stated bound.
        await assert_eventually(lambda: _health(plane),
                                lambda s: s == health_pb2.HealthCheckResponse.NOT_SERVING,
                                timeout=DOWN_BOUND, what="gRPC health NOT_SERVING")
        await assert_eventually(lambda: _healthz(plane.cp.http_address or ""),
                                lambda code: code == 503, timeout=DOWN_BOUND,
                                what="/healthz 503")

        private_pg.start()

        # Recovery without a restart: health SERVING, /healthz 200, calls succeed again.
        await assert_eventually(lambda: _health(plane),
                                lambda s: s == health_pb2.HealthCheckResponse.SERVING,
                                timeout=UP_BOUND + CONNECT_TIMEOUT_SECONDS,
                                what="gRPC health SERVING again")
        assert await _healthz(plane.cp.http_address) == 200
        assert (await get_run(alice, run.id)).id == run.id
        assert (await web.runs.get_run(rs.GetRunRequest(run_id=run.id),
                                       headers=web.headers)).run.id == run.id
        status, _ = await _nats_submit(nc, plane.cp.nats_submit.subject, alice.token or "")
        assert status == "OK"
        again = alice.runs.WatchRun(rs.WatchRunRequest(run_id=run.id), metadata=alice.md)
        assert await asyncio.wait_for(again.read(), 10) is not grpc.aio.EOF
        again.cancel()
    finally:
        await nc.close()
        await web.close()
