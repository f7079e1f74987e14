"""``airlock executor`` beside a fresh database: it waits for the schema, says so, and either
starts once the schema appears or exits 3 naming what is missing (never a bare traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from server.store.migrate import upgrade
from tests.conftest import REPO
from tests.helpers.db import PG_ADMIN_URL, _pg_url, pg_available

pytestmark = [pytest.mark.postgres, pytest.mark.podman]


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A fresh PostgreSQL database with no tables at all (not migrated)."""
    reason = pg_available()
    if reason:
        pytest.skip(reason)
    name = f"airlock_empty_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def executor(url: str, executor_id: str, **env: str) -> subprocess.Popen[str]:
    """The real ``airlock executor`` command, as an operator starts it."""
    full = {**os.environ, "AIRLOCK_DATABASE_URL": url, "AIRLOCK_EXECUTOR_ID": executor_id,
            "AIRLOCK_RUNTIME": "podman", "AIRLOCK_LOG_FORMAT": "text", **env}
    return subprocess.Popen([sys.executable, "-m", "airlock.cli", "executor"], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def registered(url: str, executor_id: str) -> bool:
    with psycopg.connect(url) as c:
        try:
            row = c.execute("SELECT stopped_at FROM executors WHERE id = %s", (executor_id,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return False
    return row is not None and row[0] is None


def test_executor_gives_up_on_a_missing_schema_with_exit_3_and_the_cause(empty_pg: str) -> None:
    proc = executor(empty_pg, "schema-missing", AIRLOCK_SCHEMA_WAIT_SECONDS="2")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "Set of Tasks" not in err, err
    assert "waiting for the database schema" in err, err  # said while it waited
    assert 'relation "executors" does not exist' in err, err  # the database's own words
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the database has no usable Airlock schema after waiting 2s"), last
    assert "airlock migrate" in last


def test_executor_waits_for_the_schema_then_starts(empty_pg: str) -> None:
    proc = executor(empty_pg, "schema-later", AIRLOCK_SCHEMA_WAIT_SECONDS="300")
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # blocks per line; the process is bounded by the wait setting
            seen.append(line)
            if "waiting for the database schema" in line:
                break
        else:
            pytest.fail("no 'waiting' message before exit: " + "".join(seen))
        assert proc.poll() is None, "".join(seen)
        upgrade(empty_pg)  # what `airlock serve` does at its start
        deadline = time.monotonic() + 120
        while not registered(empty_pg, "schema-later"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "executor did not register after the migration"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "database schema found" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
