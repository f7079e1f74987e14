"""Every API response carries a request id (header and trailer) on gRPC, gRPC-Web and Connect,
and the server's log lines for that request carry the same id: a caller's error report can be
matched to the logs. A caller's own id is kept when it is a sane token."""

from __future__ import annotations

import io
import json
import logging
import re
import struct
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from airlock.v1 import run_service_pb2 as rs
from server.logs import JsonFormatter, _Enrich
from tests.conftest import Plane, start_plane
from tests.helpers.db import SqliteTemplates

UNKNOWN_RUN = "run_" + "0" * 26
GET_RUN = "/airlock.v1.RunService/GetRun"
MADE = re.compile(r"req_[0-9a-f]{32}")


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    p = await start_plane(SqliteTemplates(tmp_path_factory.mktemp("rid")).fresh())
    yield p
    await p.close()


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """The server's log lines as the service writes them (JSON, enriched), on the root logger."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_Enrich())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines_with(out: io.StringIO, request_id: str) -> list[dict[str, str]]:
    docs = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [d for d in docs if d.get("request_id") == request_id]


async def call(plane: Plane, transport: str, body: bytes, headers: dict[str, str],
               path: str = GET_RUN) -> tuple[str, str, str]:
    """(status code name, request id header, request id trailer) of one call (GetRun)."""
    if transport == "grpc":
        ch = grpc.aio.insecure_channel(plane.address)
        try:
            c = ch.unary_unary(path)(body, metadata=tuple(headers.items()))
            try:
                await c
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
            initial = dict(await c.initial_metadata() or ())
            trailing = dict(await c.trailing_metadata() or ())
            return code, str(initial.get("x-request-id")), str(trailing.get("x-request-id"))
        finally:
            await ch.close()
    async with httpx.AsyncClient(base_url=f"http://{plane.cp.http_address}") as client:
        if transport == "grpc-web":
            resp = await client.post(path, content=b"\x00" + struct.pack(">I", len(body)) + body,
                                     headers={"content-type": "application/grpc-web+proto",
                                              **headers})
            trailers = dict(resp.headers)  # a trailers-only answer has them in the headers
            data = resp.content
            while data:
                flag, n = data[0], struct.unpack(">I", data[1:5])[0]
                if flag & 0x80:
                    trailers = {k.strip().lower(): v.strip() for k, v in (
                        line.split(":", 1) for line in data[5:5 + n].decode().strip().split("\r\n"))}
                data = data[5 + n:]
            code = {"0": "OK", "5": "NOT_FOUND", "16": "UNAUTHENTICATED"}[trailers["grpc-status"]]
            return code, resp.headers["x-request-id"], trailers["x-request-id"]
        resp = await client.post(path, content=body, headers={
            "content-type": "application/proto", "connect-protocol-version": "1", **headers})
        code = "OK" if resp.status_code == 200 else resp.json()["code"].upper()
        return code, resp.headers["x-request-id"], resp.headers["trailer-x-request-id"]


TRANSPORTS = ("grpc", "grpc-web", "connect")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_error_response_request_id_is_in_the_server_log(
        plane: Plane, server_log: io.StringIO, transport: str) -> None:
    auth = {"authorization": f"Bearer {plane.admin.token}"}
    body = rs.GetRunRequest(run_id=UNKNOWN_RUN).SerializeToString()
    code, header, trailer = await call(plane, transport, body, auth)
    assert code == "NOT_FOUND"
    assert MADE.fullmatch(header) and trailer == header
    logged = lines_with(server_log, header)
    assert logged, f"no server log line carries {header}: {server_log.getvalue()[-2000:]}"
    assert any("NOT_FOUND" in d["message"] and GET_RUN in d["message"] for d in logged)
    # The key is checked before anything else: the refusal is logged with its request id too.
    code, header, trailer = await call(plane, transport, body, {})
    assert code == "UNAUTHENTICATED" and trailer == header
    assert any("UNAUTHENTICATED" in d["message"] for d in lines_with(server_log, header))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_caller_request_id_kept_when_sane(plane: Plane, transport: str) -> None:
    auth = {"authorization": f"Bearer {plane.admin.token}"}
    ok_body = rs.GetRunRequest(run_id=UNKNOWN_RUN).SerializeToString()
    _, header, trailer = await call(plane, transport, ok_body, {**auth, "x-request-id": "abc-123.Z"})
    assert header == trailer == "abc-123.Z"
    for insane in ("x" * 200, "has space", "<script>", "-leading-dash"):
        _, header, trailer = await call(plane, transport, ok_body, {**auth, "x-request-id": insane})
        assert MADE.fullmatch(header) and trailer == header, insane
    # Two calls without one get two different ids.
    first = (await call(plane, transport, ok_body, auth))[1]
    assert first != (await call(plane, transport, ok_body, auth))[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_success_carries_a_request_id(plane: Plane, transport: str) -> None:
    code, header, trailer = await call(plane, transport, b"",
                                       {"authorization": f"Bearer {plane.admin.token}"},
                                       "/airlock.v1.AdminService/WhoAmI")
    assert code == "OK" and MADE.fullmatch(header) and trailer == header
