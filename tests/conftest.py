"""Shared fixtures: real databases (PostgreSQL and SQLite), a real control plane on port 0."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from agents.manifest import Risk
from airlock.v1 import admin_service_pb2 as adm
from server.app import ControlPlane
from server.domain.clock import Clock
from server.domain.policy import Policy, Rule
from server.settings import ServerSettings
from tests.helpers.client import Client
from tests.helpers.db import PgTemplates, SqliteTemplates, pg_available
from tests.helpers.requirements import require

REPO = Path(__file__).resolve().parent.parent
ROLE_PB = {"admin": adm.ROLE_ADMIN, "submitter": adm.ROLE_SUBMITTER, "approver": adm.ROLE_APPROVER,
           "viewer": adm.ROLE_VIEWER, "executor": adm.ROLE_EXECUTOR}


@pytest.fixture(scope="session")
def pg_templates() -> Iterator[PgTemplates]:
    require("PostgreSQL", pg_available())
    t = PgTemplates()
    yield t
    t.close()


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplates:
    return SqliteTemplates(tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database of each dialect."""
    if request.param == "postgresql":
        t: PgTemplates = request.getfixturevalue("pg_templates")
        url = t.fresh()
        yield url
        t.drop(url)
    else:
        yield request.getfixturevalue("sqlite_templates").fresh()


@pytest.fixture
def pg_url(pg_templates: PgTemplates) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (for PostgreSQL-only behaviour)."""
    url = pg_templates.fresh()
    yield url
    pg_templates.drop(url)


def test_policy(ttl: float = 3600) -> Policy:
    return Policy({
        Risk.LOW: Rule(0, timedelta(seconds=ttl)),
        Risk.MEDIUM: Rule(0, timedelta(seconds=ttl)),
        Risk.HIGH: Rule(1, timedelta(seconds=ttl)),
        Risk.CRITICAL: Rule(2, timedelta(seconds=ttl)),
    })


test_policy.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test


@dataclass
class Plane:
    """A running control plane and a way to make clients for it."""

    cp: ControlPlane
    url: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cp.grpc_address

    def client(self, token: str | None, owner: str = "") -> Client:
        ch = grpc.aio.insecure_channel(self.address)
        self.channels.append(ch)
        return Client(ch, token, owner)

    @property
    def admin(self) -> Client:
        assert self.cp.admin_token
        return self.client(self.cp.admin_token, "admin")

    async def key(self, owner: str, role: str) -> Client:
        resp = await self.admin.admin.CreateApiKey(
            adm.CreateApiKeyRequest(owner=owner, role=ROLE_PB[role]), metadata=self.admin.md)
        return self.client(resp.token, owner)

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()
        await self.cp.stop(grace=0.5)


async def start_plane(url: str, *, policy: Policy | None = None, clock: Clock | None = None,
                      **settings: object) -> Plane:
    values: dict[str, object] = {"expiry_sweep_seconds": 0.2, "watch_poll_seconds": 0.5, "db_pool_size": 10,
                                 "http_listen": "127.0.0.1:0", **settings}
    s = ServerSettings(database_url=url, grpc_listen="127.0.0.1:0", migrate_on_start=False,
                       **values)  # type: ignore[arg-type]
    cp = ControlPlane(s, policy=policy or test_policy(), **({"clock": clock} if clock else {}))
    await cp.start()
    return Plane(cp, url)


@pytest.fixture
async def plane(db_url: str) -> AsyncIterator[Plane]:
    p = await start_plane(db_url)
    yield p
    await p.close()


@pytest.fixture
async def pg_plane(pg_url: str) -> AsyncIterator[Plane]:
    p = await start_plane(pg_url)
    yield p
    await p.close()


def manifest_text(name: str = "echo", version: str = "1.0.0", *, risk: str = "low",
                  network: bool = False, secrets: tuple[str, ...] = (),
                  image: str = "localhost/airlock/echo:1") -> str:
    secret_list = ", ".join(secrets)
    return f"""
name: {name}
version: {version}
description: test agent
image: {image}
risk: {risk}
permissions: {{network: {str(network).lower()}, secrets: [{secret_list}]}}
limits:
  default: {{memory_mib: 128, timeout_seconds: 10}}
  max: {{memory_mib: 512, timeout_seconds: 60}}
capabilities:
  - name: echo
    input_schema:
      type: object
      properties: {{text: {{type: string, maxLength: 10000}}}}
      required: [text]
    output_schema: {{type: object}}
"""


os.environ.setdefault("AIRLOCK_DAGGER_SCHEMA",
                      str(REPO.parent / "shared/dagger/schema-v0.21.8.graphqls"))
