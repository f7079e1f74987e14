"""Engine factories. Async everywhere; Alembic gets the matching sync URL."""

from __future__ import annotations

import select
import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite+aiosqlite"}
_SYNC_DRIVERS = {"postgresql": "postgresql+psycopg", "sqlite": "sqlite"}


def _with_driver(url: str, table: dict[str, str]) -> str:
    u = make_url(url)
    backend = u.get_backend_name()
    if backend not in table:
        raise ValueError(f"unsupported database {backend!r}; use postgresql or sqlite")
    return u.set(drivername=table[backend]).render_as_string(hide_password=False)


def async_url(url: str) -> str:
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> str:
    return _with_driver(url, _SYNC_DRIVERS)


CONNECT_TIMEOUT_SECONDS = 5  # libpq's connect_timeout: whole seconds


def make_engine(*, url: str, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Create the async engine for ``url`` (``postgresql://…`` or ``sqlite:///path``).

    PostgreSQL gets at most ``pool_size`` connections, all kept once opened (no overflow:
    overflow connections are closed whenever they return to a full pool, so bursts made
    requests open, and PostgreSQL fork, new connections). Opening a connection gives up after
    ``CONNECT_TIMEOUT_SECONDS`` (unless the URL sets ``connect_timeout``), so calls fail fast
    with UNAVAILABLE instead of hanging while the database host does not answer.
    """
    url = async_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("postgresql"):
        kwargs.update(pool_size=pool_size, max_overflow=0)
        if "connect_timeout" not in make_url(url).query:
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "postgresql":
        _ping_when_suspect(engine)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            # WAL lets readers run beside the writer; busy_timeout covers other processes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_suspect(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling without a round trip on every checkout.

    ``pool_pre_ping`` pinged each checkout: a round trip costing more CPU than a primary-key
    read. Instead ping only a connection that sat idle for a while, or whose socket is
    readable while idle (the server closed it: a restart or ``pg_terminate_backend`` sends
    FATAL then EOF). A failed ping discards the connection and the pool hands out another.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _checkin(dbapi_conn: Any, rec: Any) -> None:
        rec.info["airlock_idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, rec: Any, proxy: Any) -> None:
        since = rec.info.pop("airlock_idle_since", None)
        if since is None:
            return  # a brand-new connection
        if time.monotonic() - since < PING_AFTER_IDLE_SECONDS and not _readable(rec):
            return
        try:
            sync_engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            # As pool_pre_ping does: the server went away, so drop every older connection.
            raise exc.InvalidatePoolError(f"stale connection: {e}") from e


def _readable(rec: Any) -> bool:
    """True if an idle connection's socket has something to read or hung up (or unknown)."""
    try:
        poller = select.poll()
        poller.register(rec.driver_connection.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except Exception:
        return True
