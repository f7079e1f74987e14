"""Server streams re-check their caller: a revoked key's open streams end within the lag.

A stream authenticates once when it opens; without more, a key revoked afterwards would go on
receiving (WatchApprovals sends each new approval with its input). ``rechecked`` runs the
handler's stream in a task of its own and calls ``recheck`` (the transport's authorize: the
key's cached principal, looked up again at most once per ``AIRLOCK_AUTH_CACHE_SECONDS``)
before every message it forwards and at least once per ``period`` while idle. When it raises
(``Unauthenticated``), the stream ends with that error and the handler is closed, so its
database connection, if it holds one, is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

_END = object()


async def rechecked(stream: AsyncIterator[T], recheck: Callable[[], Awaitable[Any]],
                    period: float) -> AsyncGenerator[T, None]:
    """The items of ``stream``; ``recheck()`` before each one and every ``period`` seconds."""
    queue: asyncio.Queue[tuple[object, Any]] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for item in stream:
                await queue.put((item, None))
            await queue.put((_END, None))
        except Exception as e:
            await queue.put((_END, e))
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    producer = asyncio.create_task(produce(), name="rechecked-stream")
    try:
        while True:
            try:
                async with asyncio.timeout(period):
                    item, error = await queue.get()
            except TimeoutError:
                await recheck()  # idle: the key may have been revoked meanwhile
                continue
            if item is _END:
                if error is not None:
                    raise error
                return
            await recheck()
            yield cast(T, item)
    finally:
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer


def recheck_period(admin: Any) -> float:
    """How often an idle stream re-checks its key: the auth cache time (1 s when caching is
    off, so a stream does not query the database continuously)."""
    seconds = float(admin.auth_cache_seconds)
    return seconds if seconds > 0 else 1.0
