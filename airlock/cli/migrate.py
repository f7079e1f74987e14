"""``airlock migrate``: apply the database migrations."""

from __future__ import annotations

import argparse

from airlock.cli._framework import EXIT_OK, CliError, Commands
from airlock.cli._output import clip
from airlock.cli._settings import load_settings


def cmd_migrate(ns: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from server.app import ensure_sqlite_dir
    from server.settings import ServerSettings
    from server.store.migrate import upgrade

    settings = load_settings(ServerSettings)
    url = settings.database_url.get_secret_value()
    shown = make_url(url).render_as_string(hide_password=True)
    ensure_sqlite_dir(url)
    try:
        upgrade(url, ns.revision)
    except Exception as e:  # connection refused, bad credentials, a failing migration
        raise CliError(f"migration of {shown} failed: {clip(str(e), 500)}") from None
    print(f"migrated {shown} to {ns.revision}")
    return EXIT_OK


def register(cli: Commands) -> None:
    p = cli.add("migrate", cmd_migrate, help="apply database migrations to AIRLOCK_DATABASE_URL",
                description="Apply the Alembic migrations to AIRLOCK_DATABASE_URL (PostgreSQL or "
                            "SQLite).\n`airlock serve` also does this at start-up unless "
                            "AIRLOCK_MIGRATE_ON_START=false.")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
