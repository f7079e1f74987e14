"""The HTTP side of the control plane: UI files, security headers, CORS, health, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_service_pb2 as aps
from server.settings import ServerSettings
from server.store.notify import APPROVALS
from server.transport.grpcweb import WebApp, build_web_app
from tests.conftest import Plane, start_plane
from tests.helpers.db import SqliteTemplates
from tests.helpers.wait import wait_for_condition
from tests.helpers.web import WebClient

ORIGIN = "https://approvals.example.com"


@pytest.fixture(scope="module")
async def sqlite_plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    p = await start_plane(SqliteTemplates(tmp_path_factory.mktemp("web")).fresh())
    yield p
    await p.close()


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    root = tmp_path / "webui"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Airlock</title>" + " " * 600)
    (root / "assets" / "index-abc123.js").write_text("console.log('ui');" * 100)
    (root / ".hidden").write_text("no")
    (tmp_path / "secret.txt").write_text("outside the root")
    return root


def http(app: WebApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui")


def app_for(plane: Plane, webui: Path, **settings: object) -> WebApp:
    s = ServerSettings(database_url="sqlite:///unused.db", **settings)  # type: ignore[arg-type]
    return build_web_app(plane.cp.services, s, webui_dir=webui)


async def test_ui_files_spa_fallback_and_security_headers(sqlite_plane: Plane, webui: Path) -> None:
    async with http(app_for(sqlite_plane, webui)) as c:
        index = await c.get("/")
        assert index.status_code == 200 and "Airlock" in index.text
        csp = index.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        assert index.headers["referrer-policy"] == "no-referrer"
        assert index.headers["cache-control"] == "no-cache"

        route = await c.get("/runs/run_123")  # a client-side route
        assert route.status_code == 200 and route.text == index.text

        asset = await c.get("/assets/index-abc123.js", headers={"accept-encoding": "gzip"})
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith("text/javascript")
        assert asset.headers["content-encoding"] == "gzip"
        assert "immutable" in asset.headers["cache-control"]
        assert asset.text.startswith("console.log")  # httpx decoded the gzip body
        raw = await c.get("/assets/index-abc123.js", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in raw.headers
        assert gzip.compress(raw.content)  # served as is

        assert (await c.get("/assets/missing.js")).status_code == 404
        assert (await c.get("/.hidden")).status_code == 404
        for evil in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
            r = await c.get(evil)
            assert "outside the root" not in r.text, evil
        assert (await c.head("/")).content == b""
        assert (await c.delete("/")).status_code == 405


async def test_ui_not_built_says_how(sqlite_plane: Plane, tmp_path: Path) -> None:
    async with http(app_for(sqlite_plane, tmp_path / "nothing")) as c:
        r = await c.get("/approvals")
        assert r.status_code == 404 and "ui/build.sh" in r.text


async def test_health(sqlite_plane: Plane, webui: Path) -> None:
    app = app_for(sqlite_plane, webui)
    async with http(app) as c:
        assert (await c.get("/healthz")).text == "ok\n"
        app.close()
        assert (await c.get("/healthz")).status_code == 503


async def test_no_cors_unless_configured(sqlite_plane: Plane, webui: Path) -> None:
    async with http(app_for(sqlite_plane, webui)) as c:
        pre = await c.options("/airlock.v1.AdminService/WhoAmI", headers={
            "origin": ORIGIN, "access-control-request-method": "POST"})
        assert pre.status_code == 403
        assert "access-control-allow-origin" not in pre.headers


async def test_cors_allows_exactly_the_configured_origins(sqlite_plane: Plane, webui: Path) -> None:
    app = app_for(sqlite_plane, webui, cors_origins=[ORIGIN])
    async with http(app) as c:
        pre = await c.options("/airlock.v1.ApprovalService/Approve", headers={
            "origin": ORIGIN, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == ORIGIN
        allowed = {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")}
        assert {"content-type", "authorization", "x-grpc-web", "x-user-agent",
                "connect-protocol-version", "grpc-timeout"} <= allowed
        assert pre.headers["access-control-allow-methods"] == "POST"

        other = await c.options("/airlock.v1.ApprovalService/Approve", headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers

        call = await c.post("/airlock.v1.AdminService/WhoAmI", content=b"\x00\x00\x00\x00\x00",
                            headers={"origin": ORIGIN,
                                     "content-type": "application/grpc-web+proto"})
        assert call.headers["access-control-allow-origin"] == ORIGIN
        exposed = {h.strip() for h in call.headers["access-control-expose-headers"].split(",")}
        assert {"grpc-status", "grpc-message"} <= exposed


async def test_port_zero_and_disabled(tmp_path: Path) -> None:
    db = SqliteTemplates(tmp_path).fresh()
    p = await start_plane(db)
    try:
        host, port = p.cp.http_address.rsplit(":", 1)  # type: ignore[union-attr]
        assert host == "127.0.0.1" and int(port) > 0
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"http://{p.cp.http_address}/healthz")).status_code == 200
    finally:
        await p.close()
    off = await start_plane(db, http_enabled=False)
    try:
        assert off.cp.http_address is None
    finally:
        await off.close()


async def test_busy_port_fails_start_cleanly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError):
            await start_plane(SqliteTemplates(tmp_path).fresh(), http_listen=f"127.0.0.1:{port}")


async def test_stop_ends_open_streams_with_unavailable(tmp_path: Path) -> None:
    p = await start_plane(SqliteTemplates(tmp_path).fresh())
    web = WebClient(f"http://{p.cp.http_address}", p.cp.admin_token)
    errors: list[ConnectError] = []
    opened = asyncio.Event()

    async def watch() -> None:
        try:
            async with contextlib.aclosing(web.approvals.watch_approvals(
                    aps.WatchApprovalsRequest(), headers=web.headers)) as stream:
                opened.set()
                async for _ in stream:
                    pass
        except ConnectError as e:
            errors.append(e)

    task = asyncio.create_task(watch())
    try:
        await web.admin.who_am_i(adm.WhoAmIRequest(), headers=web.headers)
        await opened.wait()
        notifier = p.cp.store.notifier  # the stream is open on the server, waiting for changes
        await wait_for_condition(lambda: notifier.waiting(APPROVALS) >= 1, what="a live stream")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await p.close()
        assert loop.time() - t0 < 3, "an open stream held up the shutdown"
        await asyncio.wait_for(task, 5)
        assert errors and errors[0].code is Code.UNAVAILABLE
    finally:
        task.cancel()
        await web.close()
