"""Schemas are data: no reference reaches the network, patterns run in linear time, and input
JSON that other languages cannot read back the same (lone surrogates, numbers outside a
double) is refused naming the field, through a real control plane (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import yaml
from connectrpc.code import Code as WebCode
from connectrpc.errors import ConnectError

from agents.inputs import InputMismatch, check_input
from agents.manifest import Capability
from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import run_service_pb2 as rs
from server.domain.errors import ResourceExhausted
from server.services.input_check import check_input_bounded
from tests.conftest import Plane, manifest_text
from tests.helpers.api import expect_code, register
from tests.helpers.client import Client
from tests.helpers.web import WebClient

Code = grpc.StatusCode
# WhoAmI reads one cached key: it answers in milliseconds. The freezes this file guards
# against held it for 14 s (a slow $ref fetch) and for minutes (a backtracking pattern) on the
# event loop; 5 s is far below those and leaves room for a loaded two-core test machine.
UNRELATED_CALL_BOUND = 5.0
# The input-schema check is bounded at CHECK_SECONDS (2 s); a refusal must come well within
# this, where Python's backtracking ``re`` needs about 2**30 steps for the hostile input.
HOSTILE_CALL_BOUND = 10.0


def manifest_with_input_schema(schema: dict[str, Any], name: str = "echo") -> str:
    doc = yaml.safe_load(manifest_text(name))
    doc["capabilities"][0]["input_schema"] = schema
    return yaml.safe_dump(doc)


class Recorder:
    """A TCP listener the test owns on 127.0.0.1 that records connections and never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read(65536)  # hold the connection like a slow server would

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/schema.json"


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    r = Recorder()
    r.server = await asyncio.start_server(r._on_connect, "127.0.0.1", 0)
    yield r
    r.server.close()


async def timed(call: Any) -> tuple[float, Any]:
    start = time.monotonic()
    try:
        result: Any = await call
    except grpc.aio.AioRpcError as e:
        result = e
    return time.monotonic() - start, result


async def whoami(client: Client) -> Any:
    return await client.admin.WhoAmI(adm.WhoAmIRequest(), metadata=client.md, timeout=30)


@pytest.mark.parametrize("where", ["$ref", "$dynamicRef", "nested"])
async def test_remote_reference_refused_at_registration(plane: Plane, recorder: Recorder, where: str) -> None:
    admin = plane.admin
    if where == "nested":
        schema: dict[str, Any] = {"type": "object", "properties": {"text": {"$ref": recorder.url}}}
        pointer = "/properties/text/$ref"
    else:
        schema = {where: recorder.url}
        pointer = f"/{where}"
    (_took, err), (fast, me) = await asyncio.gather(
        timed(register(admin, manifest_with_input_schema(schema))), timed(whoami(admin)))
    assert isinstance(err, grpc.aio.AioRpcError), "a schema reaching the network was registered"
    assert err.code() == Code.INVALID_ARGUMENT, err.details()
    assert err.details().startswith("manifest.capabilities.0.input_schema:"), err.details()
    assert f"(at {pointer})" in err.details()
    assert me.key.id and fast < UNRELATED_CALL_BOUND
    assert recorder.connections == 0


async def test_local_references_and_the_metaschema_still_work(plane: Plane) -> None:
    admin = plane.admin
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$defs": {"t": {"type": "string", "maxLength": 5}},
              "type": "object", "properties": {"text": {"$ref": "#/$defs/t"}}, "required": ["text"]}
    await register(admin, manifest_with_input_schema(schema))
    ok = await admin.runs.SubmitRun(rs.SubmitRunRequest(agent="echo", capability="echo",
                                                        input_json='{"text": "hi"}'), metadata=admin.md)
    assert ok.run.id
    err = await expect_code(admin.runs.SubmitRun(rs.SubmitRunRequest(
        agent="echo", capability="echo", input_json='{"text": "too long"}'), metadata=admin.md),
        Code.INVALID_ARGUMENT)
    assert err.details().startswith("input_json: does not match the input schema at $.text"), err.details()


async def test_submit_check_never_fetches(recorder: Recorder) -> None:
    """The check used at submit resolves nothing remote, even for a schema registration
    would refuse (one stored before the rule): a clear mismatch, no request."""
    cap = Capability.model_construct(name="echo", description="", output_schema={},
                                     input_schema={"$ref": recorder.url})
    with pytest.raises(InputMismatch, match="cannot be resolved"):
        await asyncio.wait_for(asyncio.to_thread(check_input, cap, {"text": "x"}), HOSTILE_CALL_BOUND)
    assert recorder.connections == 0


async def test_backtracking_pattern_answers_promptly(plane: Plane) -> None:
    admin = plane.admin
    schema = {"type": "object", "properties": {"text": {"type": "string", "pattern": "^(a+)+$"}},
              "patternProperties": {"^x(a+)+$": {"type": "integer"}}, "required": ["text"]}
    await register(admin, manifest_with_input_schema(schema))
    hostile = json.dumps({"text": "a" * 30 + "!"})
    (took, err), (fast, me) = await asyncio.gather(
        timed(admin.runs.SubmitRun(rs.SubmitRunRequest(agent="echo", capability="echo", input_json=hostile),
                                   metadata=admin.md, timeout=30)),
        timed(whoami(admin)))
    assert isinstance(err, grpc.aio.AioRpcError) and err.code() == Code.INVALID_ARGUMENT, err
    assert err.details().startswith("input_json: does not match the input schema at $.text"), err.details()
    assert took < HOSTILE_CALL_BOUND
    assert me.key.id and fast < UNRELATED_CALL_BOUND
    # patternProperties run on the same engine: the hostile key is matched in linear time.
    (took, err) = await timed(admin.runs.SubmitRun(rs.SubmitRunRequest(
        agent="echo", capability="echo", input_json=json.dumps({"text": "aaa", "x" + "a" * 30 + "!": "s"})),
        metadata=admin.md, timeout=30))
    assert isinstance(err, rs.SubmitRunResponse), err  # the key does not match: not checked
    assert took < HOSTILE_CALL_BOUND


@pytest.mark.parametrize(("pattern", "where"), [
    ("(?=a)b", "/properties/text/pattern"),
    ("(a)\\1", "/properties/text/pattern"),
])
async def test_pattern_re2_cannot_run_is_refused(plane: Plane, pattern: str, where: str) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string", "pattern": pattern}}}
    err = await expect_code(register(plane.admin, manifest_with_input_schema(schema)), Code.INVALID_ARGUMENT)
    assert err.details().startswith("manifest.capabilities.0.input_schema:"), err.details()
    assert f"(at {where})" in err.details() and "RE2" in err.details()


async def test_pattern_properties_re2_cannot_run_is_refused(plane: Plane) -> None:
    schema = {"type": "object", "patternProperties": {"^(?!x)": {}}}
    err = await expect_code(register(plane.admin, manifest_with_input_schema(schema)), Code.INVALID_ARGUMENT)
    assert "(at /patternProperties/^(?!x))" in err.details(), err.details()


@pytest.mark.parametrize(("text", "path"), [
    ('{"text": "\\ud800"}', "$.text"),
    ('{"text": "x", "more": ["ok", "\\udfff"]}', "$.more[1]"),
    ('{"text": "x", "\\ud800": 1}', "a key of $"),
])
async def test_lone_surrogate_is_invalid_argument(plane: Plane, text: str, path: str) -> None:
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    err = await expect_code(admin.runs.SubmitRun(rs.SubmitRunRequest(
        agent="echo", capability="echo", input_json=text), metadata=admin.md), Code.INVALID_ARGUMENT)
    assert err.details().startswith("input_json: has a lone surrogate"), err.details()
    assert f"at {path};" in err.details()


@pytest.mark.parametrize(("literal", "path"), [
    ("1e400", "$.n"), ("-1e400", "$.n"), ("1e-400", "$.n"), ("[0, 2.5E+999]", "$.n[1]")])
async def test_numbers_a_double_cannot_hold_are_refused(plane: Plane, literal: str, path: str) -> None:
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    err = await expect_code(admin.runs.SubmitRun(rs.SubmitRunRequest(
        agent="echo", capability="echo", input_json=f'{{"text": "x", "n": {literal}}}'), metadata=admin.md),
        Code.INVALID_ARGUMENT)
    assert err.details().startswith("input_json: number"), err.details()
    assert f"at {path} is out of range" in err.details()


async def test_small_and_zero_numbers_are_kept(plane: Plane) -> None:
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    text = '{"text": "x", "n": [0.0, 0e10, -0.0, 1e-300, 5e-324, 1.5e308]}'
    resp = await admin.runs.SubmitRun(rs.SubmitRunRequest(agent="echo", capability="echo", input_json=text),
                                      metadata=admin.md)
    run = await admin.runs.GetRun(rs.GetRunRequest(run_id=resp.run.id), metadata=admin.md)
    assert json.loads(run.run.input_json)["n"] == [0.0, 0.0, -0.0, 1e-300, 5e-324, 1.5e308]


@pytest.mark.parametrize(("fmt", "bad", "good"), [
    ("email", "not an address", "a@example.com"),
    ("date-time", "yesterday", "2024-01-01T00:00:00Z"),
    ("uri", "no scheme", "http://127.0.0.1/x"),
    ("ipv4", "300.1.1.1", "127.0.0.1"),  # format checks only: nothing is dialled
    ("uuid", "xyz", "123e4567-e89b-12d3-a456-426614174000"),
    ("regex", "(?=x)", "^a+$"),
])
async def test_input_formats_are_checked(plane: Plane, fmt: str, bad: str, good: str) -> None:
    admin = plane.admin
    schema = {"type": "object", "properties": {"text": {"type": "string", "format": fmt}}, "required": ["text"]}
    await register(admin, manifest_with_input_schema(schema))

    def req(value: str) -> rs.SubmitRunRequest:
        return rs.SubmitRunRequest(agent="echo", capability="echo", input_json=json.dumps({"text": value}))

    err = await expect_code(admin.runs.SubmitRun(req(bad), metadata=admin.md), Code.INVALID_ARGUMENT)
    assert err.details().startswith("input_json: does not match the input schema at $.text"), err.details()
    assert (await admin.runs.SubmitRun(req(good), metadata=admin.md)).run.id


async def test_a_check_past_its_bound_is_resource_exhausted() -> None:
    """The caller stops waiting at the bound (here far below the check's cost) and says so."""
    cap = Capability(name="echo", input_schema={"type": "array", "uniqueItems": True}, output_schema={})
    with pytest.raises(ResourceExhausted, match=r"^input_json: checking the input .* took longer than"):
        await check_input_bounded(cap, [{"a": i} for i in range(50_000)], seconds=1e-6)


async def test_unique_items_is_linear() -> None:
    """jsonschema compares unhashable items pairwise; 30,000 objects would take minutes."""
    cap = Capability(name="echo", input_schema={"type": "array", "uniqueItems": True}, output_schema={})
    await check_input_bounded(cap, [{"a": i} for i in range(30_000)])
    with pytest.raises(Exception, match="non-unique"):
        await check_input_bounded(cap, [{"a": [1]}, 2, {"a": [1.0]}])


async def test_lone_surrogate_over_grpc_web(plane: Plane) -> None:
    """The same refusal, in the same words, over gRPC-Web (a browser's transport)."""
    await register(plane.admin, manifest_text("echo"))
    web = WebClient(f"http://{plane.cp.http_address}", plane.cp.admin_token)
    try:
        with pytest.raises(ConnectError) as info:
            await web.runs.submit_run(rs.SubmitRunRequest(agent="echo", capability="echo",
                                                          input_json='{"text": "\\ud800"}'),
                                      headers=web.headers)
        assert info.value.code is WebCode.INVALID_ARGUMENT
        assert info.value.message.startswith("input_json: has a lone surrogate"), info.value.message
        assert "at $.text;" in info.value.message
    finally:
        await web.close()
