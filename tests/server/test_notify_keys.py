"""Keyed wake-ups: a run's event wakes that run's watchers and the channel's, never the
watchers of other runs (each would re-query the database for nothing), in-process and
across processes (the NOTIFY payload carries the key)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from executor.process import open_store
from server.store.notify import RUN_EVENTS, Notifier
from tests.helpers.wait import wait_for_condition


def test_a_keyed_publish_wakes_its_key_and_the_channel_only() -> None:
    n = Notifier()
    mine, other, channel = n.token(RUN_EVENTS, "run_a"), n.token(RUN_EVENTS, "run_b"), n.token(RUN_EVENTS)
    assert n.token(RUN_EVENTS, "run_a") is mine  # one token per key while it is held
    n.publish(RUN_EVENTS, "run_a")
    assert (mine.is_set(), other.is_set(), channel.is_set()) == (True, False, True)


def test_a_publish_without_a_key_wakes_every_key_of_the_channel() -> None:
    n = Notifier()
    a, b, elsewhere = n.token(RUN_EVENTS, "run_a"), n.token(RUN_EVENTS, "run_b"), n.token("other", "run_a")
    n.publish(RUN_EVENTS)
    assert (a.is_set(), b.is_set(), elsewhere.is_set()) == (True, True, False)


def test_a_keyed_token_nobody_holds_is_forgotten() -> None:
    # A watch stream that ends (or never got an event) leaves no entry behind.
    n = Notifier()
    n.token(RUN_EVENTS, "run_gone")
    gc.collect()
    held = n.token(RUN_EVENTS, "run_held")
    assert [k for _, k in n._keyed.keys()] == ["run_held"], held


async def test_waiting_counts_keyed_waiters_under_their_channel() -> None:
    n = Notifier()
    token = n.token(RUN_EVENTS, "run_a")
    waiter = asyncio.create_task(n.wait(token, 5))
    await wait_for_condition(lambda: n.waiting(RUN_EVENTS) == 1, what="keyed waiter counted")
    n.publish(RUN_EVENTS, "run_a")
    assert await waiter is True
    assert n.waiting(RUN_EVENTS) == 0


@pytest.mark.postgres
async def test_a_commits_keys_reach_other_processes_through_the_notify_payload(pg_url: str) -> None:
    writer, writer_listener = await open_store(pg_url)
    reader, reader_listener = await open_store(pg_url)  # another process's view
    assert writer_listener is not None and reader_listener is not None
    try:
        await asyncio.wait_for(reader_listener.ready.wait(), 10)
        mine, other = reader.notifier.token(RUN_EVENTS, "run_a"), reader.notifier.token(RUN_EVENTS, "run_b")
        channel = reader.notifier.token(RUN_EVENTS)
        local = writer.notifier.token(RUN_EVENTS, "run_a")
        async with writer.transaction() as tx:
            tx.notify_keys.add((RUN_EVENTS, "run_a"))
        assert local.is_set()  # in-process, at the commit
        assert await reader.notifier.wait(mine, 10) is True
        assert channel.is_set() and not other.is_set()
    finally:
        for listener in (writer_listener, reader_listener):
            await listener.stop()
        await writer.dispose()
        await reader.dispose()
