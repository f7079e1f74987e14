"""The same calls over native gRPC and over gRPC-Web give the same codes and equivalent results.

One shared matrix (every service; success, NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED,
UNAUTHENTICATED, FAILED_PRECONDITION, ALREADY_EXISTS, RESOURCE_EXHAUSTED, INTERNAL and server
streams) runs against one control plane through both transports. gRPC-Web goes through
connectrpc's Python client with ``ProtocolType.GRPC_WEB``; a few raw-frame checks make sure the
wire format is what a browser gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from connectrpc.errors import ConnectError
from google.protobuf.message import Message

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from server.store.notify import APPROVALS
from server.transport.errors import INTERNAL_MESSAGE
from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.client import Client
from tests.helpers.db import SqliteTemplates
from tests.helpers.wait import wait_for_condition
from tests.helpers.web import WebClient

UNKNOWN_RUN = "run_" + "0" * 26
WHO = ("admin", "alice", "alice_approver", "bob", "vera", "anon", "forged", "basic")


@dataclass
class World:
    plane: Plane
    grpc: dict[str, Client]
    web: dict[str, WebClient]
    rejected_run: str
    queued_run: str

    async def submit(self, who: str = "alice", agent: str = "risky", text: str = "hi",
                     **kw: Any) -> rs.Run:
        c = self.grpc[who]
        resp = await c.runs.SubmitRun(rs.SubmitRunRequest(
            agent=agent, capability="echo", input_json=json.dumps({"text": text}), **kw),
            metadata=c.md)
        return resp.run


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    db = SqliteTemplates(tmp_path_factory.mktemp("parity")).fresh()
    plane = await start_plane(db)
    admin = plane.admin
    for text in (manifest_text("echo"), manifest_text("risky", risk="high", network=True)):
        await admin.registry.RegisterAgentVersion(reg.RegisterAgentVersionRequest(manifest=text),
                                                  metadata=admin.md)
    g: dict[str, Client] = {"admin": admin}
    for who, owner, role in [("alice", "alice", "submitter"),
                             ("alice_approver", "alice", "approver"),
                             ("bob", "bob", "approver"), ("vera", "vera", "viewer")]:
        g[who] = await plane.key(owner, role)
    g["anon"] = plane.client(None)
    g["forged"] = plane.client("key_000000000000.not-a-real-secret")
    base = f"http://{plane.cp.http_address}"
    web = {who: WebClient(base, c.token, c.owner) for who, c in g.items()}
    # An authorization header with another scheme: both transports must treat it as missing.
    g["basic"] = plane.client("x")
    web["basic"] = WebClient(base, None)
    w = World(plane, g, web, rejected_run="", queued_run="")
    w.queued_run = (await w.submit(agent="echo")).id
    rejected = await w.submit()
    bob = g["bob"]
    await bob.approvals.Reject(aps.RejectRequest(run_id=rejected.id, reason="no"), metadata=bob.md)
    w.rejected_run = rejected.id
    yield w
    for c in web.values():
        await c.close()
    await plane.close()


# --- calling either transport ---------------------------------------------------------------


@dataclass
class Outcome:
    code: str  # "OK" or the status code name (gRPC spelling)
    message: str = ""
    result: Any = None


def _grpc_md(w: World, who: str) -> tuple[tuple[str, str], ...]:
    if who == "basic":
        return (("authorization", "Basic YWxpY2U6c2VjcmV0"),)
    return w.grpc[who].md


def _web_headers(w: World, who: str) -> dict[str, str]:
    if who == "basic":
        return {"authorization": "Basic YWxpY2U6c2VjcmV0"}
    return w.web[who].headers


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


async def via_grpc(w: World, who: str, service: str, method: str, request: Message,
                   take: int | None) -> Outcome:
    stub = getattr(getattr(w.grpc[who], service), method)
    try:
        if take is None:
            return Outcome("OK", result=await stub(request, metadata=_grpc_md(w, who)))
        call = stub(request, metadata=_grpc_md(w, who))
        items = []
        try:
            async with asyncio.timeout(10):
                async for item in call:
                    items.append(item)
                    if len(items) == take:
                        break
        finally:
            call.cancel()
        return Outcome("OK", result=items)
    except grpc.aio.AioRpcError as e:
        return Outcome(e.code().name, e.details() or "")


async def via_web(w: World, who: str, service: str, method: str, request: Message,
                  take: int | None) -> Outcome:
    fn = getattr(getattr(w.web[who], service), _snake(method))
    try:
        if take is None:
            return Outcome("OK", result=await fn(request, headers=_web_headers(w, who)))
        items = []
        async with asyncio.timeout(10):
            async with contextlib.aclosing(fn(request, headers=_web_headers(w, who))) as stream:
                async for item in stream:
                    items.append(item)
                    if len(items) == take:
                        break
        return Outcome("OK", result=items)
    except ConnectError as e:
        name = "CANCELLED" if e.code.name == "CANCELED" else e.code.name
        return Outcome(name, e.message)


VOLATILE = {"id", "run_id", "create_time", "update_time", "expire_time", "decide_time",
            "start_time", "finish_time", "heartbeat_time", "token", "last_sequence",
            # Hash-chain hashes cover the record's ids and times.
            "chain_head", "prev_hash", "hash"}


def normalized(value: Any) -> Any:
    """A copy without the fields that differ between two equivalent calls (ids, times)."""
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if not isinstance(value, Message):
        return value
    out = type(value)()
    out.CopyFrom(value)
    _strip(out)
    return out


def _strip(m: Message) -> None:
    for fd, v in m.ListFields():
        if fd.name in VOLATILE:
            m.ClearField(fd.name)
        elif fd.message_type is not None:
            if fd.is_repeated:
                for item in v:
                    if isinstance(item, Message):
                        _strip(item)
            else:
                _strip(v)


# --- the matrix ---------------------------------------------------------------------------------

Build = Callable[[World], Awaitable[Message]] | Message


@dataclass
class Case:
    name: str
    who: str
    service: str  # attribute of Client / WebClient
    method: str
    request: Build
    code: str
    take: int | None = None  # server stream: messages to read (None = unary)
    fresh: bool = False  # request builds new state per transport: compare normalized results


def _run(field: str = "rejected_run") -> Callable[[World], Awaitable[Message]]:
    async def build(w: World) -> Message:
        return rs.GetRunRequest(run_id=getattr(w, field))
    return build


async def _submit_low(w: World) -> Message:
    return rs.SubmitRunRequest(agent="echo", capability="echo", input_json='{"text": "x"}')


async def _approve_fresh(w: World) -> Message:
    run = await w.submit()
    return aps.ApproveRequest(run_id=run.id, reason="fine by me")


async def _approve_own(w: World) -> Message:
    run = await w.submit()
    return aps.ApproveRequest(run_id=run.id, reason="mine")


async def _reject_blank(w: World) -> Message:
    run = await w.submit()
    return aps.RejectRequest(run_id=run.id, reason="   ")


async def _approve_rejected(w: World) -> Message:
    return aps.ApproveRequest(run_id=w.rejected_run)


async def _cancel_rejected(w: World) -> Message:
    return rs.CancelRunRequest(run_id=w.rejected_run, reason="stop")


async def _watch_rejected(w: World) -> Message:
    return rs.WatchRunRequest(run_id=w.rejected_run)


async def _result(w: World) -> Message:
    return rs.GetRunResultRequest(run_id=w.queued_run)


async def _approval_of_low(w: World) -> Message:
    return aps.GetApprovalRequest(run_id=w.queued_run)


async def _pending_exists(w: World) -> Message:
    await w.submit(text="pending for the watch")
    return aps.WatchApprovalsRequest()


MANIFEST_CHANGED = manifest_text("echo").replace("description: test agent", "description: changed")

CASES = [
    # AdminService
    Case("whoami", "alice", "admin", "WhoAmI", adm.WhoAmIRequest(), "OK"),
    Case("whoami no key", "anon", "admin", "WhoAmI", adm.WhoAmIRequest(), "UNAUTHENTICATED"),
    Case("whoami forged key", "forged", "admin", "WhoAmI", adm.WhoAmIRequest(), "UNAUTHENTICATED"),
    Case("whoami basic scheme", "basic", "admin", "WhoAmI", adm.WhoAmIRequest(), "UNAUTHENTICATED"),
    Case("list keys as submitter", "alice", "admin", "ListApiKeys", adm.ListApiKeysRequest(),
         "PERMISSION_DENIED"),
    Case("list keys", "admin", "admin", "ListApiKeys", adm.ListApiKeysRequest(), "OK"),
    Case("create key bad owner", "admin", "admin", "CreateApiKey",
         adm.CreateApiKeyRequest(owner="", role=adm.ROLE_VIEWER), "INVALID_ARGUMENT"),
    Case("create key no role", "admin", "admin", "CreateApiKey",
         adm.CreateApiKeyRequest(owner="zed"), "INVALID_ARGUMENT"),
    Case("revoke unknown key", "admin", "admin", "RevokeApiKey",
         adm.RevokeApiKeyRequest(id="key_000000000000"), "NOT_FOUND"),
    Case("executors as viewer", "vera", "admin", "ListExecutors", adm.ListExecutorsRequest(), "OK"),
    # RegistryService
    Case("get agent", "vera", "registry", "GetAgent", reg.GetAgentRequest(name="echo"), "OK"),
    Case("get unknown agent", "vera", "registry", "GetAgent", reg.GetAgentRequest(name="nope"),
         "NOT_FOUND"),
    Case("get version", "bob", "registry", "GetAgentVersion",
         reg.GetAgentVersionRequest(name="risky"), "OK"),
    Case("list agents", "alice", "registry", "ListAgents", reg.ListAgentsRequest(), "OK"),
    Case("list agents bad token", "alice", "registry", "ListAgents",
         reg.ListAgentsRequest(page_token="%%%"), "INVALID_ARGUMENT"),
    Case("register as submitter", "alice", "registry", "RegisterAgentVersion",
         reg.RegisterAgentVersionRequest(manifest=manifest_text("other")), "PERMISSION_DENIED"),
    Case("register bad manifest", "admin", "registry", "RegisterAgentVersion",
         reg.RegisterAgentVersionRequest(manifest="name: [unclosed"), "INVALID_ARGUMENT"),
    Case("register changed version", "admin", "registry", "RegisterAgentVersion",
         reg.RegisterAgentVersionRequest(manifest=MANIFEST_CHANGED), "ALREADY_EXISTS"),
    # RunService
    Case("get run", "vera", "runs", "GetRun", _run(), "OK"),
    Case("get run bad id", "vera", "runs", "GetRun", rs.GetRunRequest(run_id="x"),
         "INVALID_ARGUMENT"),
    Case("get unknown run", "vera", "runs", "GetRun", rs.GetRunRequest(run_id=UNKNOWN_RUN),
         "NOT_FOUND"),
    Case("get run no key", "anon", "runs", "GetRun", _run(), "UNAUTHENTICATED"),
    Case("submit as viewer", "vera", "runs", "SubmitRun", _submit_low, "PERMISSION_DENIED"),
    Case("submit", "alice", "runs", "SubmitRun", _submit_low, "OK", fresh=True),
    Case("submit unknown agent", "alice", "runs", "SubmitRun",
         rs.SubmitRunRequest(agent="nope", capability="echo", input_json="{}"), "NOT_FOUND"),
    Case("submit bad input", "alice", "runs", "SubmitRun",
         rs.SubmitRunRequest(agent="echo", capability="echo", input_json='{"text": 1}'),
         "INVALID_ARGUMENT"),
    Case("submit too large", "alice", "runs", "SubmitRun",
         rs.SubmitRunRequest(agent="echo", capability="echo", input_json="x" * (5 << 20)),
         "RESOURCE_EXHAUSTED"),
    Case("list runs bad state", "vera", "runs", "ListRuns", rs.ListRunsRequest(states=[99]),
         "INVALID_ARGUMENT"),
    Case("list runs", "vera", "runs", "ListRuns", rs.ListRunsRequest(agent="risky"), "OK"),
    Case("cancel terminal run", "alice", "runs", "CancelRun", _cancel_rejected,
         "FAILED_PRECONDITION"),
    Case("result", "vera", "runs", "GetRunResult", _result, "OK"),
    Case("watch run to its end", "vera", "runs", "WatchRun", _watch_rejected, "OK", take=100),
    Case("watch unknown run", "vera", "runs", "WatchRun",
         rs.WatchRunRequest(run_id=UNKNOWN_RUN), "NOT_FOUND", take=1),
    Case("watch run no key", "anon", "runs", "WatchRun", _watch_rejected, "UNAUTHENTICATED",
         take=1),
    Case("watch run bad sequence", "vera", "runs", "WatchRun",
         rs.WatchRunRequest(run_id=UNKNOWN_RUN, from_sequence=-1), "INVALID_ARGUMENT", take=1),
    # ApprovalService
    Case("approve", "bob", "approvals", "Approve", _approve_fresh, "OK", fresh=True),
    Case("approve own run", "alice_approver", "approvals", "Approve", _approve_own,
         "PERMISSION_DENIED", fresh=True),
    Case("approve as viewer", "vera", "approvals", "Approve", _approve_rejected,
         "PERMISSION_DENIED"),
    Case("approve decided", "bob", "approvals", "Approve", _approve_rejected,
         "FAILED_PRECONDITION"),
    Case("reject without reason", "bob", "approvals", "Reject", _reject_blank, "INVALID_ARGUMENT",
         fresh=True),
    Case("approval of auto-approved run", "vera", "approvals", "GetApproval", _approval_of_low,
         "NOT_FOUND"),
    Case("list approvals", "vera", "approvals", "ListApprovals", aps.ListApprovalsRequest(), "OK"),
    Case("list approvals as submitter", "alice", "approvals", "ListApprovals",
         aps.ListApprovalsRequest(), "PERMISSION_DENIED"),
    Case("watch approvals", "vera", "approvals", "WatchApprovals", _pending_exists, "OK", take=1),
    Case("watch approvals as submitter", "alice", "approvals", "WatchApprovals",
         aps.WatchApprovalsRequest(), "PERMISSION_DENIED", take=1),
]


async def _request(w: World, build: Build) -> Message:
    return build if isinstance(build, Message) else await build(w)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_same_outcome_over_grpc_and_grpc_web(world: World, case: Case) -> None:
    req_g = await _request(world, case.request)
    got_g = await via_grpc(world, case.who, case.service, case.method, req_g, case.take)
    req_w = await _request(world, case.request) if case.fresh else req_g
    got_w = await via_web(world, case.who, case.service, case.method, req_w, case.take)

    assert got_g.code == case.code, f"gRPC: {got_g}"
    assert got_w.code == got_g.code, f"gRPC-Web {got_w} != gRPC {got_g}"
    if case.code == "OK":
        if case.fresh:
            assert normalized(got_w.result) == normalized(got_g.result)
        else:
            assert got_w.result == got_g.result
        if case.take is not None:
            assert got_g.result, "the stream sent nothing"
    elif case.fresh:  # messages name the per-transport run
        assert got_w.message.replace(req_w.run_id, "R") == got_g.message.replace(req_g.run_id, "R")
    elif case.name != "submit too large":  # the size check's wording is each library's own
        assert got_w.message == got_g.message
        assert got_g.message


async def test_unexpected_error_is_internal_without_details(
        world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("password=hunter2 at db.internal:5432")

    monkeypatch.setattr(world.plane.cp.services.admin, "list_executors", boom)
    req = adm.ListExecutorsRequest()
    got_g = await via_grpc(world, "vera", "admin", "ListExecutors", req, None)
    got_w = await via_web(world, "vera", "admin", "ListExecutors", req, None)
    assert (got_g.code, got_g.message) == ("INTERNAL", INTERNAL_MESSAGE)
    assert (got_w.code, got_w.message) == ("INTERNAL", INTERNAL_MESSAGE)
    assert "hunter2" in caplog.text  # logged for the operator, never sent


async def test_unexpected_error_in_a_stream_is_internal(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: Any, **__: Any) -> AsyncIterator[Any]:
        raise RuntimeError("secret detail")
        yield  # pragma: no cover

    monkeypatch.setattr(world.plane.cp.services.approvals, "watch", broken)
    req = aps.WatchApprovalsRequest()
    got_g = await via_grpc(world, "vera", "approvals", "WatchApprovals", req, 1)
    got_w = await via_web(world, "vera", "approvals", "WatchApprovals", req, 1)
    assert (got_g.code, got_g.message) == ("INTERNAL", INTERNAL_MESSAGE)
    assert (got_w.code, got_w.message) == ("INTERNAL", INTERNAL_MESSAGE)


async def test_live_stream_delivers_new_approvals_on_both(world: World) -> None:
    """A watch opened before a submission sees it, on both transports."""
    wanted: list[str] = []
    seen = {"grpc": asyncio.Event(), "web": asyncio.Event()}

    def note(transport: str, run_id: str) -> None:
        if run_id in wanted:
            seen[transport].set()

    async def watch_grpc() -> None:
        c = world.grpc["bob"]
        async for m in c.approvals.WatchApprovals(aps.WatchApprovalsRequest(), metadata=c.md):
            note("grpc", m.approval.run_id)

    async def watch_web() -> None:
        c = world.web["bob"]
        async with contextlib.aclosing(c.approvals.watch_approvals(
                aps.WatchApprovalsRequest(), headers=c.headers)) as stream:
            async for m in stream:
                note("web", m.approval.run_id)

    tasks = [asyncio.create_task(watch_grpc()), asyncio.create_task(watch_web())]
    try:
        # Submit only once both streams are live: the approval must arrive as a change, not
        # in the opening snapshot.
        notifier = world.plane.cp.store.notifier
        await wait_for_condition(lambda: notifier.waiting(APPROVALS) >= 2, what="both streams live")
        wanted.append((await world.submit(text="watch me")).id)
        async with asyncio.timeout(10):
            await seen["grpc"].wait()
            await seen["web"].wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- raw gRPC-Web frames, as a browser sends them ------------------------------------------------


def frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_web_status(resp: httpx.Response) -> tuple[int, str]:
    """grpc-status / grpc-message from the headers (trailers-only) or the trailer frame."""
    if "grpc-status" in resp.headers:
        return int(resp.headers["grpc-status"]), resp.headers.get("grpc-message", "")
    body = resp.content
    while body:
        flag, n = body[0], struct.unpack(">I", body[1:5])[0]
        chunk, body = body[5:5 + n], body[5 + n:]
        if flag & 0x80:
            fields = dict(line.split(":", 1) for line in chunk.decode().strip().split("\r\n"))
            return int(fields["grpc-status"].strip()), fields.get("grpc-message", "").strip()
    raise AssertionError(f"no gRPC status in {resp.headers} / {resp.content!r}")


async def test_raw_frames_unknown_method_and_bad_body(world: World) -> None:
    base = f"http://{world.plane.cp.http_address}"
    h = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1",
         **world.web["alice"].headers}
    async with httpx.AsyncClient(base_url=base) as client:
        ok = await client.post("/airlock.v1.AdminService/WhoAmI", content=frame(b""), headers=h)
        assert ok.status_code == 200 and grpc_web_status(ok)[0] == 0
        missing = await client.post("/airlock.v1.AdminService/Nope", content=frame(b""), headers=h)
        assert grpc_web_status(missing)[0] == grpc.StatusCode.UNIMPLEMENTED.value[0]
        bad = await client.post("/airlock.v1.AdminService/WhoAmI", content=frame(b"\xff\xff\xff"),
                                headers=h)
        assert grpc_web_status(bad)[0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        connect = await client.post("/airlock.v1.AdminService/WhoAmI", content=b"{}",
                                    headers={**h, "content-type": "application/json"})
        assert connect.status_code == 200 and connect.json()["key"]["owner"] == "alice"
        grpc_h2 = await client.post("/airlock.v1.AdminService/WhoAmI", content=frame(b""),
                                    headers={**h, "content-type": "application/grpc"})
        assert grpc_h2.status_code == 415  # gRPC needs trailers: served on the gRPC port

    # The same garbage over native gRPC: INVALID_ARGUMENT too.
    ch = grpc.aio.insecure_channel(world.plane.address)
    try:
        call = ch.unary_unary("/airlock.v1.AdminService/WhoAmI")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(b"\xff\xff\xff", metadata=world.grpc["alice"].md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        nope = ch.unary_unary("/airlock.v1.AdminService/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await nope(b"", metadata=world.grpc["alice"].md)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await ch.close()


# --- bodies that are not a valid message: one wording, the field named, the key first ----------


async def raw_call(world: World, transport: str, method: str, body: bytes,
                   headers: dict[str, str]) -> tuple[str, str]:
    """(code name, message) of a unary call with these exact body bytes, over one transport."""
    if transport == "grpc":
        ch = grpc.aio.insecure_channel(world.plane.address)
        try:
            call = ch.unary_unary(method)
            try:
                await call(body, metadata=tuple(headers.items()))
            except grpc.aio.AioRpcError as e:
                return e.code().name, e.details() or ""
            return "OK", ""
        finally:
            await ch.close()
    base = f"http://{world.plane.cp.http_address}"
    async with httpx.AsyncClient(base_url=base) as client:
        if transport == "grpc-web":
            resp = await client.post(method, content=frame(body), headers={
                "content-type": "application/grpc-web+proto", "x-grpc-web": "1", **headers})
            status, message = grpc_web_status(resp)
            from urllib.parse import unquote
            return grpc.StatusCode(next(c.value for c in grpc.StatusCode
                                        if c.value[0] == status)).name, unquote(message)
        resp = await client.post(method, content=body, headers={
            "content-type": "application/proto", "connect-protocol-version": "1", **headers})
        if resp.status_code == 200:
            return "OK", ""
        err = resp.json()
        return err["code"].upper().replace("CANCELED", "CANCELLED"), err.get("message", "")


TRANSPORTS = ("grpc", "grpc-web", "connect")


def _bad_utf8_submit() -> bytes:
    body = rs.SubmitRunRequest(agent="echo", capability="echo", input_json="{}",
                               secrets=["OK", "B@D"]).SerializeToString()
    return body.replace(b"B@D", b"B\xffD")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_invalid_utf8_names_the_field(world: World, transport: str) -> None:
    """protobuf's own parse error names no field; the answer names the string at fault."""
    code, message = await raw_call(world, transport, "/airlock.v1.RunService/SubmitRun",
                                   _bad_utf8_submit(), _web_headers(world, "alice"))
    assert (code, message) == ("INVALID_ARGUMENT", "secrets[1]: is not valid UTF-8 (byte 1)")
    code, message = await raw_call(world, transport, "/airlock.v1.RunService/GetRun",
                                   b"\x0a\x02r\xe9", _web_headers(world, "alice"))
    assert (code, message) == ("INVALID_ARGUMENT", "run_id: is not valid UTF-8 (byte 1)")


async def test_bad_protobuf_worded_the_same_on_every_transport(world: World) -> None:
    bodies = [b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", _bad_utf8_submit(),
              b"\x0b\x00"]
    for body in bodies:
        seen = {t: await raw_call(world, t, "/airlock.v1.RunService/SubmitRun", body,
                                  _web_headers(world, "alice")) for t in TRANSPORTS}
        assert len(set(seen.values())) == 1, (body, seen)
        code, message = seen["grpc"]
        assert code == "INVALID_ARGUMENT", (body, seen)
        assert "Error parsing" not in message and "unmarshal" not in message, (body, seen)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("who", ["anon", "forged", "basic"])
async def test_bad_bytes_without_a_key_are_unauthenticated(world: World, transport: str,
                                                           who: str) -> None:
    """The caller is checked before its body is parsed: no key, no parse error to learn from."""
    for body in (b"\xff\xff\xff", _bad_utf8_submit()):
        code, _ = await raw_call(world, transport, "/airlock.v1.RunService/SubmitRun", body,
                                 _web_headers(world, who))
        assert code == "UNAUTHENTICATED", (transport, who, body)
    # And a role that may not call the method is refused before its body is looked at.
    code, _ = await raw_call(world, transport, "/airlock.v1.RunService/SubmitRun", b"\xff\xff\xff",
                             _web_headers(world, "vera"))
    assert code == "PERMISSION_DENIED"
