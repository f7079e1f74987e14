"""Random and malformed requests at every RPC: never INTERNAL/UNKNOWN, the server stays up,
and INVALID_ARGUMENT names the field.

Field values are drawn from the request descriptors (strings with unicode, NUL and huge
lengths, extreme integers and doubles, unknown enum numbers, repeated fields of random
length), mixed with plausible values (existing names and ids, valid JSON and manifests) so the
requests also get past the first checks. Raw random bytes and mutated valid encodings go
through a generic byte-level callable.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import run_service_pb2 as rs
from server.services.page_tokens import encode_token
from server.transport.convert import state_from_pb
from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.api import approve, cancel, expect_code, register, submit
from tests.helpers.client import Client
from tests.helpers.db import PgTemplates
from tests.helpers.rpcs import Rpc, all_rpcs, call

Code = grpc.StatusCode
RPCS = all_rpcs()
NEVER = {Code.INTERNAL, Code.UNKNOWN}
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
T = FieldDescriptor

INT_RANGES = {
    T.TYPE_INT32: (-(2**31), 2**31 - 1),
    T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    T.TYPE_ENUM: (-(2**31), 2**31 - 1),
    T.TYPE_INT64: (-(2**63), 2**63 - 1),
    T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    T.TYPE_UINT32: (0, 2**32 - 1),
    T.TYPE_FIXED32: (0, 2**32 - 1),
    T.TYPE_UINT64: (0, 2**64 - 1),
    T.TYPE_FIXED64: (0, 2**64 - 1),
}

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "echo\x00",
    "echo\n",
    "\n",
    "Ω≈ç√∫",
    "🙂" * 50,
    "\u202e\u200b",
    "'; DROP TABLE runs; --",
    "%s%n",
    "../../etc/passwd",
    "AA",
    "AAA=",
    "cnVuXw",
    "!!!",
    "x" * 201,
    "é" * 5000,
    "z" * 300_000,
    "null",
    "{}",
    "[]",
    "NaN",
    "1e999",
    '{"text": 1}',
    "[" * 5000,
    '{"a":' * 3000,
    "9" * 5000,
    "1.0.0\n",
    "run_" + "0" * 26 + "\n",
]


@dataclass
class Target:
    plane: Plane
    admin: Client
    callers: list[Client]
    known: list[str]  # plausible values: names, ids, tokens, JSON, manifests
    valid: dict[str, dict[str, Any]]  # operation -> a request that gets past validation
    strategies: dict[str, st.SearchStrategy[Any]] = field(default_factory=dict)

    def __repr__(self) -> str:  # keeps hypothesis' falsifying examples short
        return f"Target({self.plane.url})"

    def request(self, desc: Descriptor, cls: Any) -> st.SearchStrategy[Any]:
        if desc.full_name not in self.strategies:
            self.strategies[desc.full_name] = message(desc, cls, self.known, depth=0)
        return self.strategies[desc.full_name]


def strings(known: list[str]) -> st.SearchStrategy[str]:
    # Plausible and nasty values get most of the draws: they reach deeper than random text.
    # Chosen uniformly (``sampled_from`` favours a few positions of a long list).
    values = known + NASTY_STRINGS
    pool = st.randoms(use_true_random=False).map(lambda r: r.choice(values))
    return st.one_of(
        pool,
        pool,
        pool,
        st.text(max_size=64),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
        st.builds(
            lambda k, s: k + s,
            st.sampled_from(known),
            st.sampled_from(["\x00", "\n", " ", "x" * 300]),
        ),
    )


def scalar(f: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    if f.type == T.TYPE_STRING:
        return strings(known)
    if f.type == T.TYPE_BYTES:
        return st.binary(max_size=256)
    if f.type == T.TYPE_BOOL:
        return st.booleans()
    if f.type in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        width = 32 if f.type == T.TYPE_FLOAT else 64
        return st.one_of(st.floats(width=width), st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1.0]))
    lo, hi = INT_RANGES[f.type]
    edges = [v for v in (lo, hi, -1, 0, 1, 2, 3, 4, 5, 100, 2**31 - 1) if lo <= v <= hi]
    return st.one_of(st.integers(lo, hi), st.sampled_from(edges))


def message(desc: Descriptor, cls: Any, known: list[str], depth: int) -> st.SearchStrategy[Any]:
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.type == T.TYPE_MESSAGE:
            if depth > 3:
                continue
            sub_cls = type(getattr(cls(), f.name)) if not _repeated(f) else None
            sub = message(f.message_type, sub_cls or _cls_of(f), known, depth + 1)
        else:
            sub = scalar(f, known)
        if _repeated(f):
            sub = st.one_of(st.lists(sub, max_size=5), st.lists(sub, min_size=50, max_size=300))
        optional[f.name] = sub
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: cls(**kw))


def _repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


def _cls_of(f: FieldDescriptor) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(f.message_type)


def names_a_field(rpc: Rpc, details: str) -> bool:
    """'field: problem' where the root of the field path is a field of the request."""
    head, sep, _ = details.partition(":")
    if not sep:
        return False
    root = re.split(r"[.\[]", head, maxsplit=1)[0]
    return root == "request" or root in rpc.request_class.DESCRIPTOR.fields_by_name


async def check_call(
    target: Target, rpc: Rpc, request: Any, caller: Client, *, raw: bool = False, what: Any = None
) -> Code:
    code, details = await call(
        rpc,
        caller.channel,
        request,
        metadata=caller.md,
        deadline=0.3 if rpc.streaming else 20,
        raw=raw,
    )
    shown = what if what is not None else request
    assert code not in NEVER, f"{rpc.operation} gave {code.name} ({details}) for {str(shown)[:500]!r}"
    if code == Code.INVALID_ARGUMENT:
        assert names_a_field(rpc, details), f"{rpc.operation}: message names no field: {details!r}"
    return code


async def assert_serving(plane: Plane) -> None:
    async with grpc.aio.insecure_channel(plane.address) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def make_target(url: str) -> Target:
    plane = await start_plane(url)
    admin = plane.admin
    # Two versions: a random deprecation of 1.0.0 leaves runs possible.
    for version in ("1.0.0", "1.1.0"):
        await register(admin, manifest_text("echo", version, network=True, secrets=("API_TOKEN",)))
    await register(admin, manifest_text("risky", risk="critical"))
    alice = await plane.key("alice", "submitter")
    bob = await plane.key("bob", "approver")
    queued = (await submit(alice)).run.id
    pending = (await submit(alice, "risky")).run.id
    await approve(bob, pending)  # one of two approvals
    done = (await submit(alice)).run.id
    await cancel(alice, done)
    # Runs for the sweep to decide on, so WatchApprovals keeps having pending ones to send.
    to_decide = [(await submit(alice, "risky", text=str(i))).run.id for i in range(2)]
    # A key that may be revoked by the requests thrown at the server (not one of the callers).
    victim = await plane.key("victim", "viewer")
    key_id = (await victim.admin.WhoAmI(adm.WhoAmIRequest(), metadata=victim.md)).key.id
    b64 = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")  # noqa: E731
    known = [
        "echo",
        "risky",
        "echo-2",
        "1.0.0",
        "2.0.0",
        "echo",
        "alice",
        "bob",
        queued,
        pending,
        done,
        key_id,
        "key_000000000000",
        "run_" + "0" * 26,
        '{"text": "hi"}',
        '{"text": "x", "n": NaN}',
        '{"text": "\\u0000"}',
        "API_TOKEN",
        "sha256:" + "a" * 64,
        b64(queued),
        b64("echo"),
        b64("\x00"),
        b64("\U0010ffff"),
        b64("zzzz"),
        manifest_text("echo-2", "2.0.0"),
        manifest_text("echo", "3.0.0").replace("test agent", '"bad\\0desc"'),
        manifest_text("echo", "4.0.0").replace("localhost/airlock/echo:1", '"img\\0"'),
        manifest_text("echo", "5.0.0").replace("risk: low", "risk: 7"),
        manifest_text("echo", "6.0.0").replace("capabilities:", "capabilities: []\nx:"),
        "name: x\nversion: 1\n",
        "- a\n- b\n",
        "a: [",
        "!!python/object:os.system\n",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-00",
    ]
    valid: dict[str, dict[str, Any]] = {
        "RegistryService.RegisterAgentVersion": {"manifest": manifest_text("echo-3")},
        "RegistryService.GetAgent": {"name": "echo"},
        "RegistryService.GetAgentVersion": {"name": "echo", "version": "1.0.0"},
        "RegistryService.ListAgents": {
            "page_size": 1,
            "page_token": encode_token("echo", {"list": "agents", "name_prefix": "e"}),
            "name_prefix": "e",
        },
        # Single-field changes must not hit a real version (names and versions are in `known`).
        "RegistryService.DeprecateAgentVersion": {
            "name": "nosuch",
            "version": "9.9.9",
            "reason": "x",
        },
        "RunService.SubmitRun": {
            "agent": "echo",
            "capability": "echo",
            "input_json": '{"text": "a"}',
            "idempotency_key": "sweep",
            "network": True,
            "secrets": ["API_TOKEN"],
            "limits": {"memory_mib": 256, "cpus": 0.5},
        },
        "RunService.GetRun": {"run_id": queued},
        "RunService.ListRuns": {
            "page_size": 2,
            "page_token": encode_token(queued, {"list": "runs", "agent": "echo",
                                                "states": [state_from_pb("", 2).value],
                                                "submitter": "alice"}),
            "agent": "echo",
            "states": [2],
            "submitter": "alice",
        },
        "RunService.CancelRun": {"run_id": queued, "reason": "sweep"},
        "RunService.WatchRun": {"run_id": done, "from_sequence": 1},
        "RunService.GetRunResult": {"run_id": done},
        "ApprovalService.ListApprovals": {
            "page_size": 1,
            "page_token": encode_token(pending, {"list": "approvals", "statuses": ["pending"],
                                                 "actionable_by": "admin"}),
            "statuses": [1],
            "actionable_only": True,
        },
        "ApprovalService.GetApproval": {"run_id": pending},
        "ApprovalService.Approve": {"run_id": to_decide[0], "reason": "ok"},
        "ApprovalService.Reject": {"run_id": to_decide[1], "reason": "no"},
        "AdminService.CreateApiKey": {"owner": "sweeper", "role": 4},
        "AdminService.RevokeApiKey": {"id": "key_000000000000"},
    }
    return Target(plane, admin, [admin, alice, bob], known, valid)


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "postgresql":
        pg: PgTemplates = request.getfixturevalue("pg_templates")
        url = pg.fresh()
    else:
        url = request.getfixturevalue("sqlite_templates").fresh()
    t = await make_target(url)
    try:
        yield t
        await assert_serving(t.plane)
    finally:
        await t.plane.close()
        if request.param == "postgresql":
            pg.drop(url)


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.operation)
@SETTINGS
@given(data=st.data())
async def test_random_requests(target: Target, rpc: Rpc, data: st.DataObject) -> None:
    request = data.draw(target.request(rpc.method.input_type, rpc.request_class), label="request")
    caller = data.draw(st.sampled_from(target.callers), label="caller")
    await check_call(target, rpc, request, caller)


def raw_requests(rpc: Rpc, known: list[str]) -> st.SearchStrategy[bytes]:
    valid = message(rpc.method.input_type, rpc.request_class, known, depth=0).map(lambda m: m.SerializeToString())

    def mutate(data: bytes, where: int, value: int, cut: int) -> bytes:
        if not data:
            return bytes([value])
        i = where % len(data)
        return (data[:i] + bytes([value]) + data[i + 1 :])[: max(1, len(data) - cut)]

    return st.one_of(
        st.binary(max_size=512),
        st.builds(mutate, valid, st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 8)),
        st.sampled_from(
            [
                b"\x0a\xff\xff\xff\xff\x0f",
                b"\x0a\x02\xff\xfe",
                b"\xff" * 16,
                b"\x0a" * 64,
                b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
            ]
        ),
    )


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.operation)
@settings(SETTINGS, max_examples=25)
@given(data=st.data())
async def test_random_bytes(target: Target, rpc: Rpc, data: st.DataObject) -> None:
    if rpc.operation not in target.strategies:
        target.strategies[rpc.operation] = raw_requests(rpc, target.known)
    payload = data.draw(target.strategies[rpc.operation], label="payload")
    await check_call(target, rpc, payload, target.admin, raw=True, what=payload)


async def test_server_still_serving(target: Target) -> None:
    await assert_serving(target.plane)
    resp = await target.admin.runs.ListRuns(rs.ListRunsRequest(), metadata=target.admin.md)
    assert resp.runs


@pytest.mark.parametrize("token", ["AA", "AAA", "cnVu", "_w", "4pyT", "%%%"])
async def test_page_tokens_we_did_not_make(target: Target, token: str) -> None:
    """Decoding a foreign token yields arbitrary text (even NUL): refused, never INTERNAL."""
    for rpc in RPCS:
        if "page_token" in rpc.request_class.DESCRIPTOR.fields_by_name:
            await check_call(target, rpc, rpc.request_class(page_token=token), target.admin)


_M = manifest_text("echo", "9.0.0")
_DEEP = "{type: object, properties: {a: " * 40 + "{}" + "}}" * 40
TARGETED: list[tuple[str, dict[str, Any], str]] = [
    # Documents that break the YAML or JSON Schema machinery (recursion, int digit limit).
    ("RegistryService.RegisterAgentVersion", {"manifest": "[" * 5000}, "manifest:"),
    ("RegistryService.RegisterAgentVersion", {"manifest": "9" * 5000}, "manifest:"),
    (
        "RegistryService.RegisterAgentVersion",
        {"manifest": _M.replace("{type: object}\n", _DEEP + "\n")},
        "manifest.capabilities.0.output_schema:",
    ),
    # Sequences are 32-bit in the database.
    ("RunService.WatchRun", {"run_id": "run_" + "0" * 26, "from_sequence": 2**63 - 1}, "from_sequence:"),
    ("RunService.WatchRun", {"run_id": "run_" + "0" * 26, "from_sequence": 2**31}, "from_sequence:"),
    # Strings PostgreSQL cannot store (NUL via a YAML escape) are refused, naming the field.
    (
        "RegistryService.RegisterAgentVersion",
        {"manifest": _M.replace("test agent", '"a\\0b"')},
        "manifest.description:",
    ),
    (
        "RegistryService.RegisterAgentVersion",
        {"manifest": _M.replace("localhost/airlock/echo:1", '"img\\0"')},
        "manifest.image:",
    ),
    (
        "RegistryService.RegisterAgentVersion",
        {"manifest": _M.replace("- name: echo", '- name: echo\n    description: "\\0"')},
        "manifest.capabilities.0.description:",
    ),
    (
        "RegistryService.RegisterAgentVersion",
        {"manifest": _M.replace("secrets: []", 'secrets: ["A\\n"]')},
        "manifest.permissions.secrets:",
    ),
    # Patterns match whole values: a trailing newline is not part of a valid name.
    ("AdminService.CreateApiKey", {"owner": "alice\n", "role": 2}, "owner:"),
    (
        "RunService.SubmitRun",
        {
            "agent": "echo",
            "capability": "echo",
            "input_json": '{"text": "x"}',
            "idempotency_key": "k\n",
        },
        "idempotency_key:",
    ),
    (
        "RunService.SubmitRun",
        {"agent": "echo\n", "capability": "echo", "input_json": "{}"},
        "agent:",
    ),
    ("RunService.GetRun", {"run_id": "run_" + "0" * 26 + "\n"}, "run_id:"),
    # Input is JSON as other languages read it: no NaN or Infinity.
    (
        "RunService.SubmitRun",
        {"agent": "echo", "capability": "echo", "input_json": '{"text": "x", "n": NaN}'},
        "input_json:",
    ),
    (
        "RunService.SubmitRun",
        {"agent": "echo", "capability": "echo", "input_json": '{"text": "x", "n": -Infinity}'},
        "input_json:",
    ),
    (
        "RunService.SubmitRun",
        {
            "agent": "echo",
            "capability": "echo",
            "input_json": '{"text": "x"}',
            "limits": {"cpus": float("nan")},
        },
        "limits.cpus:",
    ),
    (
        "RunService.SubmitRun",
        {
            "agent": "echo",
            "capability": "echo",
            "input_json": '{"text": "x"}',
            "limits": {"memory_mib": -5},
        },
        "limits.memory_mib:",
    ),
    (
        "RunService.WatchRun",
        {"run_id": "run_" + "0" * 26, "from_sequence": -(2**63)},
        "from_sequence:",
    ),
    ("ApprovalService.ListApprovals", {"statuses": [99]}, "statuses[0]:"),
    ("RunService.ListRuns", {"states": [1, -7]}, "states[1]:"),
    ("RunService.ListRuns", {"page_size": -1}, "page_size:"),
]


@pytest.mark.parametrize(("op", "fields", "prefix"), TARGETED, ids=[f"{o}-{p}" for o, _, p in TARGETED])
async def test_targeted_invalid_values(target: Target, op: str, fields: dict[str, Any], prefix: str) -> None:
    rpc = next(r for r in RPCS if r.operation == op)
    code, details = await call(
        rpc, target.admin.channel, rpc.request_class(**fields), metadata=target.admin.md, deadline=5
    )
    assert (code, details.split(" ")[0]) == (Code.INVALID_ARGUMENT, prefix), details


def field_values(f: FieldDescriptor, pool: list[str]) -> list[Any]:
    if f.type == T.TYPE_STRING:
        return pool
    if f.type == T.TYPE_BYTES:
        return [b"", b"\x00", b"\xff" * 1000]
    if f.type == T.TYPE_BOOL:
        return [True, False]
    if f.type in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        return [math.nan, math.inf, -math.inf, -1.0, -0.0, 1e-300, 1e300, 3.5]
    lo, hi = INT_RANGES[f.type]
    return [v for v in (lo, hi, -1, 0, 1, 2, 5, 99, 100, 2**31 - 1) if lo <= v <= hi]


def one_field_changed(desc: Descriptor, base: dict[str, Any], pool: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, request fields) for every field of ``desc`` set to every nasty value."""
    for f in desc.fields:
        if f.type == T.TYPE_MESSAGE:
            if not f.is_repeated:
                for path, sub in one_field_changed(f.message_type, base.get(f.name, {}), pool):
                    yield f"{f.name}.{path}", {**base, f.name: sub}
            continue
        values = field_values(f, pool)
        if f.is_repeated:
            values = [[v] for v in values] + [[values[0]] * 300, values[:60], []]
        for v in values:
            yield f.name, {**base, f.name: v}


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.operation)
async def test_one_field_at_a_time(target: Target, rpc: Rpc) -> None:
    """From a request that passes validation, change one field to each nasty value."""
    base = target.valid.get(rpc.operation, {})
    rpc.request_class(**base)  # the base itself is well-formed
    pool = target.known + NASTY_STRINGS
    for _path, fields in one_field_changed(rpc.method.input_type, base, pool):
        await check_call(target, rpc, rpc.request_class(**fields), target.admin)
    await assert_serving(target.plane)


async def test_oversized_request_is_resource_exhausted(pg_templates: PgTemplates) -> None:
    url = pg_templates.fresh()
    plane = await start_plane(url, max_message_bytes=64 * 1024)
    try:
        admin = plane.admin
        await register(admin, manifest_text("echo"))
        req = rs.SubmitRunRequest(agent="echo", capability="echo", input_json='{"text": "' + "x" * (70 * 1024) + '"}')
        assert req.ByteSize() > 64 * 1024
        await expect_code(admin.runs.SubmitRun(req, metadata=admin.md), Code.RESOURCE_EXHAUSTED)
        await expect_code(admin.runs.SubmitRun(req), Code.RESOURCE_EXHAUSTED)  # before auth
        rpc = next(r for r in RPCS if r.operation == "RunService.GetRun")
        code, _ = await call(rpc, admin.channel, b"\x0a" + b"\xff" * 70_000, metadata=admin.md, raw=True)
        assert code == Code.RESOURCE_EXHAUSTED
        # Below the limit the same request is served normally.
        ok = rs.SubmitRunRequest(agent="echo", capability="echo", input_json='{"text": "' + "x" * 9000 + '"}')
        assert (await admin.runs.SubmitRun(ok, metadata=admin.md)).run.id
        await assert_serving(plane)
    finally:
        await plane.close()
        pg_templates.drop(url)
