"""What every repository shares: the transaction's connection and what it owes after commit.

A ``Unit`` is one open connection (a transaction, or an autocommit read) plus the
wake-ups (NOTIFY channels) and finished runs it collects; the ``Store`` acts on those after
the commit. Repositories hold the unit they were opened from and nothing else.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.models import Run


class Duplicate(Exception):
    """A unique constraint refused the row (the caller decides what that means)."""


class Unit:
    """One connection's unit of work: its dialect, and what to do once it commits."""

    __slots__ = ("chain_heads", "conn", "dialect", "dirty_heads", "finished", "notify",
                 "notify_keys", "pg")

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.pg = dialect == "postgresql"  # FOR UPDATE, advisory locks, NOTIFY
        self.notify: set[str] = set()  # channels whose every waiter wakes
        self.notify_keys: set[tuple[str, str]] = set()  # (channel, key): only that key's waiters
        # Runs that entered a terminal state (as they are now, with their usage), with that
        # state and reason (metrics and the run span, after the commit).
        self.finished: list[tuple[Run, str, str]] = []
        # Hash chains this unit appended to: chain -> (position, hash) of its newest record;
        # ``dirty_heads``: chains whose stored head (run row or chain_heads) is behind it and
        # is written just before the commit (``Tx.flush_chains``).
        self.chain_heads: dict[str, tuple[int, str]] = {}
        self.dirty_heads: set[str] = set()

    def next_link(self, chain: str, stored: tuple[int, str]) -> tuple[int, str]:
        """(position, prev_hash) of the next record on ``chain``; ``stored`` is the head read
        from the database (under the chain's lock), used unless this unit moved it since."""
        seq, prev = self.chain_heads.get(chain, stored)
        return seq + 1, prev

    def advance(self, chain: str, seq: int, hash_: str, *, stored: bool = False) -> None:
        """``chain``'s head is now (seq, hash); ``stored``: the caller also wrote it."""
        self.chain_heads[chain] = (seq, hash_)
        if stored:
            self.dirty_heads.discard(chain)
        else:
            self.dirty_heads.add(chain)


class Repository:
    """Base of the repositories: typed methods over one kind of record, in one unit."""

    __slots__ = ("_conn", "_unit")

    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        self._conn = unit.conn
