"""Alembic migrations: one head, reversible with data in the tables, and the migrated schema
is exactly ``server/store/tables.py`` (autogenerate finds nothing to do), on both dialects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select

from server.domain.models import ExecutorInfo
from server.domain.policy import Policy
from server.store import tables
from server.store.engine import sync_url
from server.store.migrate import alembic_config, downgrade, upgrade
from tests.conftest import manifest_text, start_plane, test_policy
from tests.helpers.api import approve, register, reject, submit
from tests.helpers.db import PG_ADMIN_URL, pg_available
from tests.helpers.requirements import require
from tests.helpers.workflows import approve_workflow, spec, step, submit_workflow

APP_TABLES = set(tables.metadata.tables)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it (not even the migrations)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require("PostgreSQL", pg_available())
    name = f"airlock_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def counts(url: str) -> dict[str, int]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            return {
                name: conn.execute(select(func.count()).select_from(tbl)).scalar_one()
                for name, tbl in tables.metadata.tables.items()
                if name in present
            }
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


async def fill(url: str) -> None:
    """Put rows in every table through the real services (and the executor registry)."""
    # A quota makes submits take the owner's lock row (quota_owners).
    quotas = Policy.from_mapping({"quotas": {"default": {"runs_in_flight": 100}}}).quotas
    plane = await start_plane(url, policy=replace(test_policy(), quotas=quotas))
    try:
        admin = plane.admin
        await register(admin, manifest_text("echo"))
        await register(admin, manifest_text("crit", risk="critical"))
        alice = await plane.key("alice", "submitter")
        bob = await plane.key("bob", "approver")
        carol = await plane.key("carol", "approver")
        await submit(alice)
        run = (await submit(alice, "crit")).run
        await approve(bob, run.id)
        await approve(carol, run.id)
        await reject(bob, (await submit(alice, "crit")).run.id, "no")
        # A workflow whose plan needs two approvers: every workflow table gets rows, and
        # its first step's run links to it.
        w = (await submit_workflow(alice, spec(step("a", "crit", "echo", {"text": "x"})))).workflow
        await approve_workflow(bob, w.id)
        await approve_workflow(carol, w.id)
        now = datetime.now(UTC)
        async with plane.cp.store.transaction() as tx:
            await tx.fleet.register(
                ExecutorInfo(
                    id="ex-1",
                    host="h",
                    runtime="podman",
                    slots=2,
                    slots_in_use=0,
                    started_at=now,
                    heartbeat_at=now,
                    stopped_at=None,
                )
            )
    finally:
        await plane.close()


def test_single_head() -> None:
    s = script()
    assert len(s.get_heads()) == 1, s.get_heads()
    assert len(s.get_bases()) == 1, s.get_bases()
    revisions = list(s.walk_revisions())  # head first; raises on a broken chain
    assert revisions[-1].down_revision is None
    for rev in revisions:
        assert callable(rev.module.downgrade), f"{rev.revision} has no downgrade"


async def test_upgrade_downgrade_upgrade_with_data(empty_url: str) -> None:
    s = script()
    head = s.get_current_head()
    await asyncio.to_thread(upgrade, empty_url)
    assert current_revision(empty_url) == head
    await fill(empty_url)
    filled = counts(empty_url)
    assert set(filled) == APP_TABLES
    assert all(filled.values()), {k: v for k, v in filled.items() if not v}

    # Step down one revision at a time with the data in place, then all the way back up.
    for rev in s.walk_revisions():
        await asyncio.to_thread(downgrade, empty_url, rev.down_revision or "base")
        assert current_revision(empty_url) == rev.down_revision
    assert not (table_names(empty_url) & APP_TABLES)

    await asyncio.to_thread(upgrade, empty_url)
    assert current_revision(empty_url) == head
    assert set(counts(empty_url)) == APP_TABLES
    await fill(empty_url)  # the re-created schema works
    again = counts(empty_url)
    assert all(again.values())

    # Each revision is reversible on its own, with data present: down one, up one.
    for rev in s.walk_revisions():
        await asyncio.to_thread(downgrade, empty_url, rev.down_revision or "base")
        await asyncio.to_thread(upgrade, empty_url, rev.revision)
        assert current_revision(empty_url) == rev.revision
    # Head first, so the loop ends at the oldest revision: the rest applies on top of it.
    await asyncio.to_thread(upgrade, empty_url)
    assert current_revision(empty_url) == head


def test_migrated_schema_matches_metadata(empty_url: str) -> None:
    upgrade(empty_url)
    engine = create_engine(sync_url(empty_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diff = compare_metadata(ctx, tables.metadata)
    finally:
        engine.dispose()
    assert diff == [], diff
