"""Alembic environment. The URL comes from ``config.attributes["url"]`` (tests, the CLI) or the
``sqlalchemy.url`` option; SQLite gets batch mode so ALTERs work there too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from server.store.engine import sync_url
from server.store.tables import metadata

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise SystemExit("no database URL: pass config.attributes['url'] or set sqlalchemy.url")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",  # type: ignore[attr-defined]
        transaction_per_migration=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=sync_url(url), target_metadata=metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
