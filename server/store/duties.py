"""Which serving process does the once-only duties: a PostgreSQL advisory lock.

Several control-plane processes (``airlock serve --processes N``, or several hosts) share one
database. Work that must happen once, not once per process (the approval expiry sweep, the
executor retention sweep, the queue-depth gauge), is done by the process holding a
session-level advisory lock on a connection of its own. The lock lives as long as that
connection: when the holder dies (even by SIGKILL) or loses the database, PostgreSQL releases
it, and the next process to try takes the duties over. On SQLite (one process) the only
process always holds them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

# The bytes "airlock" + 0x02 as a signed 64-bit int (0x01 is the events relay's lock).
DUTIES_LOCK_KEY = int.from_bytes(b"airlock\x02", "big", signed=True)


class DutyLock:
    """The duties' advisory lock, held on a dedicated autocommit connection.

    ``try_take()`` returns whether this process holds it now; ``still_held()`` checks the
    connection (a lost connection means PostgreSQL released the lock); ``release()`` closes it.
    """

    def __init__(self, dsn: str, *, connect_timeout: int = 5) -> None:
        # psycopg wants a libpq URL, without SQLAlchemy's "+psycopg" driver suffix.
        self._dsn = dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self.held = False

    async def try_take(self) -> bool:
        """Take the lock if nobody holds it; False if another process does or the database
        cannot be reached. The connection stays open between tries (no new backend per try)."""
        import psycopg

        if self.held:
            return await self.still_held()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=self._connect_timeout,
                    application_name="airlock duties")
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (DUTIES_LOCK_KEY,))
            row = await cur.fetchone()
            self.held = bool(row and row[0])
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as e:
            log.debug("duty lock: database unreachable: %s", e)
            await self.release()
        return self.held

    async def still_held(self) -> bool:
        """True while the lock's connection answers (so PostgreSQL still holds the lock)."""
        import psycopg

        if not self.held or self._conn is None:
            return False
        try:
            await self._conn.execute("SELECT 1")
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError):
            self.held = False
            await self.release()
            return False
        return True

    async def release(self) -> None:
        """Close the lock's connection (releasing the lock if held)."""
        conn, self._conn, self.held = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
