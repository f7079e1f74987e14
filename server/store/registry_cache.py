"""Registry reads from memory: each agent with its versions, as last read from the database.

A version never changes once registered except to become deprecated, and an agent's
description changes only when a version is registered; both happen in a transaction that
notifies ``REGISTRY`` with the agent's name (``RegistryRepository``). Every control-plane
process drops that agent on the notification: at once in the process that committed, and
through PostgreSQL LISTEN/NOTIFY (``PgListener``) in the others, typically within
milliseconds. While the LISTEN connection is down the cache is bypassed (a notification could
be missed), and on reconnect the listener publishes the channel without a key, which clears it.

A read that raced an invalidation is not stored: ``generation`` is taken before the database
read and the entry is kept only if no invalidation happened in between.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from server.domain.models import Agent, AgentVersion
from server.store.notify import REGISTRY, Notifier

Entry = tuple[Agent, tuple[AgentVersion, ...]]


class RegistryCache:
    """Agents by name (least recently used dropped beyond ``max_agents``); off until
    ``enable`` says when it may be trusted."""

    def __init__(self, notifier: Notifier, *, max_agents: int = 1024) -> None:
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._max = max_agents
        self._usable: Callable[[], bool] = lambda: False
        self.generation = 0  # bumped by every invalidation
        self.hits = self.misses = 0
        notifier.subscribe(REGISTRY, self._invalidate)

    def enable(self, usable: Callable[[], bool]) -> None:
        """Serve from memory whenever ``usable()`` (e.g. the LISTEN connection is up)."""
        self._usable = usable

    def get(self, name: str) -> Entry | None:
        if not self._usable():
            return None
        found = self._entries.get(name)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(name)
        self.hits += 1
        return found

    def put(self, name: str, entry: Entry, generation: int) -> None:
        """Keep ``entry``, read after ``generation`` was taken, unless an invalidation came
        in between (it may be older than what was just committed)."""
        if generation != self.generation or not self._usable():
            return
        self._entries[name] = entry
        self._entries.move_to_end(name)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def _invalidate(self, name: str | None) -> None:
        self.generation += 1
        if name is None:
            self._entries.clear()
        else:
            self._entries.pop(name, None)
