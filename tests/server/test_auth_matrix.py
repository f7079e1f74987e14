"""Every RPC × every kind of caller gives the code the role table says (PostgreSQL plane)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from airlock.v1 import admin_service_pb2 as adm
from server.domain.principal import PERMISSIONS, Role
from tests.conftest import Plane, manifest_text, start_plane
from tests.helpers.api import cancel, register, submit
from tests.helpers.db import PgTemplates
from tests.helpers.rpcs import Rpc, all_rpcs, call

Code = grpc.StatusCode
RPCS = all_rpcs()
REFUSED = {Code.UNAUTHENTICATED, Code.PERMISSION_DENIED, Code.INTERNAL, Code.UNKNOWN}


@dataclass
class Matrix:
    plane: Plane
    channel: grpc.aio.Channel
    # caller name -> (metadata, role or None when the caller must be refused as unauthenticated)
    callers: dict[str, tuple[tuple[tuple[str, str], ...], Role | None]]
    # operation -> a valid request for the read-only RPCs (answered OK when allowed)
    valid: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
async def matrix(pg_templates: PgTemplates) -> AsyncIterator[Matrix]:
    url = pg_templates.fresh()
    plane = await start_plane(url)
    try:
        admin = plane.admin
        await register(admin, manifest_text("echo"))
        await register(admin, manifest_text("risky", risk="high"))
        alice = await plane.key("alice", "submitter")
        done = (await submit(alice)).run.id
        await cancel(alice, done)  # terminal, so WatchRun ends by itself
        pending = (await submit(alice, "risky")).run.id  # WatchApprovals has something to send

        callers: dict[str, tuple[tuple[tuple[str, str], ...], Role | None]] = {}
        for role in Role:
            c = await plane.key(f"who-{role.value}", role.value)
            callers[role.value] = (c.md, role)
        revoked = await admin.admin.CreateApiKey(
            adm.CreateApiKeyRequest(owner="gone", role=adm.ROLE_ADMIN), metadata=admin.md
        )
        await admin.admin.RevokeApiKey(
            adm.RevokeApiKeyRequest(id=revoked.key.id), metadata=admin.md
        )
        key_id = revoked.key.id
        callers.update(
            {
                "no token": ((), None),
                "empty bearer": ((("authorization", "Bearer "),), None),
                "garbage": ((("authorization", "Bearer not-a-key"),), None),
                "unknown key": ((("authorization", "Bearer key_000000000000.c2VjcmV0"),), None),
                "wrong secret": ((("authorization", f"Bearer {key_id}.wrong"),), None),
                "not bearer": ((("authorization", f"Basic {revoked.token}"),), None),
                "revoked": ((("authorization", f"Bearer {revoked.token}"),), None),
            }
        )
        valid: dict[str, dict[str, Any]] = {
            "RegistryService.GetAgent": {"name": "echo"},
            "RegistryService.GetAgentVersion": {"name": "echo"},
            "RegistryService.ListAgents": {},
            "RunService.GetRun": {"run_id": done},
            "RunService.ListRuns": {},
            "RunService.WatchRun": {"run_id": done},
            "RunService.GetRunResult": {"run_id": done},
            "ApprovalService.ListApprovals": {},
            "ApprovalService.GetApproval": {"run_id": pending},
            "ApprovalService.WatchApprovals": {},
            "AdminService.ListApiKeys": {},
            "AdminService.ListExecutors": {},
            "AdminService.WhoAmI": {},
        }
        channel = grpc.aio.insecure_channel(plane.address)
        plane.channels.append(channel)
        yield Matrix(plane, channel, callers, valid)
    finally:
        await plane.close()
        pg_templates.drop(url)


def test_permission_table_covers_every_rpc() -> None:
    ops = {r.operation for r in RPCS}
    assert set(PERMISSIONS) == ops, {
        "missing": ops - set(PERMISSIONS),
        "stale": set(PERMISSIONS) - ops,
    }
    for op, roles in PERMISSIONS.items():
        assert Role.ADMIN in roles, f"admin may do everything, but not {op}"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.operation)
async def test_rpc_for_every_caller(matrix: Matrix, rpc: Rpc) -> None:
    valid = matrix.valid.get(rpc.operation)
    request = rpc.request_class(**(valid or {}))
    wrong: list[str] = []
    for name, (md, role) in matrix.callers.items():
        code, details = await call(rpc, matrix.channel, request, metadata=md, deadline=3)
        if role is None:
            ok = code == Code.UNAUTHENTICATED
            want = "UNAUTHENTICATED"
        elif role not in PERMISSIONS[rpc.operation]:
            ok = code == Code.PERMISSION_DENIED
            want = "PERMISSION_DENIED"
        elif valid is not None:
            ok = code == Code.OK
            want = "OK"
        else:
            ok = code not in REFUSED
            want = "not " + "/".join(sorted(c.name for c in REFUSED))
        if not ok:
            wrong.append(f"{name}: want {want}, got {code.name} ({details})")
    assert not wrong, f"{rpc.operation}:\n" + "\n".join(wrong)


async def test_who_am_i_names_the_caller(matrix: Matrix) -> None:
    md, _ = matrix.callers["approver"]
    stub = adm.DESCRIPTOR.services_by_name["AdminService"]
    rpc = Rpc(stub, stub.methods_by_name["WhoAmI"])
    resp = await rpc.callable(matrix.channel)(adm.WhoAmIRequest(), metadata=md)
    assert resp.key.owner == "who-approver" and resp.key.role == adm.ROLE_APPROVER


async def test_database_failure_leaks_nothing(pg_templates: PgTemplates) -> None:
    """With the database gone, authentication and handlers fail without internals in the text."""
    url = pg_templates.fresh()
    plane = await start_plane(url)
    try:
        admin = plane.admin
        await admin.admin.WhoAmI(adm.WhoAmIRequest(), metadata=admin.md)  # admin key now cached
        fresh = await plane.key("late", "viewer")  # never used: not in the auth cache
        pg_templates.drop(url)  # terminates the plane's connections, then the database is gone
        stub = adm.DESCRIPTOR.services_by_name["AdminService"]
        for client, method in ((fresh, "WhoAmI"), (admin, "ListApiKeys")):
            rpc = Rpc(stub, stub.methods_by_name[method])
            code, details = await call(rpc, client.channel, rpc.request_class(), metadata=client.md, deadline=10)
            assert code in (Code.INTERNAL, Code.UNAVAILABLE), (method, code, details)
            for leak in ("psycopg", "sqlalchemy", "OperationalError", "5432", url.rpartition("/")[2]):
                assert leak not in details, (method, details)
    finally:
        await plane.close()
        pg_templates.drop(url)
