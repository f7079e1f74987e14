"""Fresh databases per test, cheaply: migrate a template once, then copy it.

PostgreSQL: ``CREATE DATABASE … TEMPLATE`` (tens of ms). SQLite: copy the migrated file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg

from server.store.migrate import upgrade

PG_ADMIN_URL = os.environ.get("AIRLOCK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_available() -> str | None:
    """None if reachable, else the reason."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as e:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {e}"


def _pg_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


class PgTemplates:
    def __init__(self) -> None:
        self.prefix = f"airlock_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_tmpl"
        self.created: list[str] = []
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.template}"')
        upgrade(_pg_url(self.template))

    def fresh(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return _pg_url(name)

    def drop(self, url: str) -> None:
        name = url.rpartition("/")[2]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
            for name in [*self.created, self.template]:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class SqliteTemplates:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        upgrade(f"sqlite:///{self.template}")
        self.n = 0

    def fresh(self) -> str:
        self.n += 1
        path = self.root / f"db{self.n}.db"
        shutil.copy(self.template, path)
        return f"sqlite:///{path}"
