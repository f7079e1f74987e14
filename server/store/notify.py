"""Wake-ups after commits: in-process always, and across processes through PostgreSQL NOTIFY.

Watchers take a token *before* they query, then wait on it; a commit between the query and
the wait still wakes them (no lost wake-up).

A token is for a whole channel, or for one key of it (``token(RUN_EVENTS, run_id)``): a commit
that names its keys (the NOTIFY payload) wakes the channel's waiters and those of its keys
only, so a thousand watch streams do not all re-query for each run's event. A publish without
a key (a commit that did not say, a LISTEN reconnect) wakes every waiter of the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable

log = logging.getLogger(__name__)

CHANNELS = ("airlock_run_events", "airlock_runs_queued", "airlock_approvals", "airlock_registry")
# REGISTRY's key is the agent whose versions changed (registered, deprecated): every process
# drops that agent from its registry read cache (``server.store.registry_cache``).
RUN_EVENTS, RUNS_QUEUED, APPROVALS, REGISTRY = CHANNELS


class Notifier:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # Keyed tokens live while a waiter holds one: a stream that ends leaves nothing behind.
        self._keyed: weakref.WeakValueDictionary[tuple[str, str], asyncio.Event] = (
            weakref.WeakValueDictionary())
        self._channel_of: weakref.WeakKeyDictionary[asyncio.Event, str] = weakref.WeakKeyDictionary()
        # Waiters per channel right now (keyed ones included): lets operators and tests see
        # that a watch stream is live (waiting for the next commit) rather than guess with a
        # sleep.
        self._waiting: Counter[str] = Counter()
        self._callbacks: dict[str, list[Callable[[str | None], None]]] = defaultdict(list)

    def subscribe(self, channel: str, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(key)`` on every publish of ``channel`` (key None: the whole channel),
        before its waiters wake; for caches that must forget what a commit changed."""
        self._callbacks[channel].append(callback)

    def token(self, channel: str, key: str | None = None) -> asyncio.Event:
        """What to wait on for the next publish of ``channel`` (of its ``key`` only, if given)."""
        if key is None:
            ev = self._events[channel]
        else:
            ev = self._keyed.get((channel, key)) or self._keyed.setdefault((channel, key), asyncio.Event())
        self._channel_of[ev] = channel
        return ev

    def publish(self, channel: str, key: str | None = None) -> None:
        """Wake the waiters of ``channel`` and of ``key`` (of all its keys when None)."""
        for callback in self._callbacks.get(channel, ()):
            callback(key)
        ev = self._events.pop(channel, None)
        if ev is not None:
            ev.set()
        if key is not None:
            keyed = self._keyed.pop((channel, key), None)
            if keyed is not None:
                keyed.set()
            return
        for k in [k for k in list(self._keyed.keys()) if k[0] == channel]:
            keyed = self._keyed.pop(k, None)
            if keyed is not None:
                keyed.set()

    def waiting(self, channel: str) -> int:
        """How many callers are waiting on ``channel`` at this moment."""
        return self._waiting[channel]

    async def wait(self, token: asyncio.Event, timeout: float) -> bool:
        """Wait for the token's channel to be published; False on timeout.

        ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` swallows a
        cancellation that arrives as the event fires, and a loop around it never stops.
        """
        channel = self._channel_of.get(token, "")
        self._waiting[channel] += 1
        try:
            async with asyncio.timeout(timeout):
                await token.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting[channel] -= 1


class PgListener:
    """LISTENs on every channel over one dedicated connection and relays to a Notifier."""

    def __init__(self, sync_url: str, notifier: Notifier) -> None:
        # psycopg wants a libpq URL, without SQLAlchemy's "+psycopg" driver suffix.
        self._dsn = sync_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._notifier = notifier
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def _run(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                    for ch in CHANNELS:
                        await conn.execute(f"LISTEN {ch}")
                    self.ready.set()
                    # Anything committed while we were disconnected: wake everyone once.
                    for ch in CHANNELS:
                        self._notifier.publish(ch)
                    async for n in conn.notifies():
                        self._notifier.publish(n.channel, n.payload or None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database restarted or the network blinked: retry
                self.ready.clear()
                log.warning("LISTEN connection lost (%s); reconnecting", e)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
