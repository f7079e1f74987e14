"""Outages: NATS stops while 500 runs change state; the relay process is killed mid-batch.

Each test runs its own ``nats-server`` (free port, temporary store dir) so it can stop it.
Afterwards every event is in the stream; a repeat, if any, carries the same id and payload.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
import pytest

from server.store import Store
from tests.conftest import Plane
from tests.events.conftest import (
    Names,
    NatsServer,
    Received,
    echo_world,
    fetch_all,
    relay_settings,
    running_relay,
    total_events,
    unpublished,
)
from tests.helpers.api import cancel, submit
from tests.helpers.client import Client
from tests.helpers.processes import airlock_process
from tests.helpers.wait import assert_eventually, wait_for_condition

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.slow]


async def churn(alice: Client, n: int, tag: str) -> None:
    """Submit ``n`` low-risk runs and cancel each (two events per run), a few at a time."""
    async def one(i: int) -> None:
        run = (await submit(alice, text=f"{tag}{i}")).run
        await cancel(alice, run.id, tag)

    for start in range(0, n, 8):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 8))))


async def event_ids(store: Store) -> set[str]:
    async with store.read() as tx:
        runs = await tx.runs.find(limit=100_000)
        return {f"{r.id}.{s}" for r in runs for s in range(1, r.last_seq + 1)}


def check_complete(got: list[Received], expected: set[str]) -> int:
    """Every id present; repeats identical; per-run order of first deliveries. -> repeats."""
    first: dict[str, bytes] = {}
    repeats = 0
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in got:
        eid = m.payload.event_id
        assert m.headers["Nats-Msg-Id"] == eid
        if eid in first:
            repeats += 1
            assert first[eid] == m.data, f"repeat of {eid} differs"
            continue
        first[eid] = m.data
        seqs[m.payload.run_id].append(m.payload.sequence)
    assert set(first) == expected, (len(first), len(expected))
    for run_id, s in seqs.items():
        assert s == sorted(s), (run_id, s)
    return repeats


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "js")
    server.store_dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_nats_outage_loses_nothing(pg_plane: Plane, own_nats: NatsServer) -> None:
    names = Names()
    _, alice = await echo_world(pg_plane)
    store = pg_plane.cp.store
    settings = relay_settings(pg_plane.url, own_nats.url, names, relay_ack_timeout_seconds=1.0)
    async with running_relay(settings) as rr:
        await churn(alice, 20, "before")
        await assert_eventually(lambda: unpublished(store), lambda n: n == 0, timeout=20)

        own_nats.stop()
        t0 = time.monotonic()
        await churn(alice, 500, "during")  # 1,000 state changes with NATS down
        churn_s = time.monotonic() - t0
        assert await unpublished(store) == 1000  # nothing marked without an ack
        own_nats.start()
        t1 = time.monotonic()
        # A second outage in the middle of the drain: publishes fail mid-batch.
        await assert_eventually(lambda: unpublished(store), lambda n: n < 900, timeout=30,
                                interval=0.005)
        failed_before = rr.relay.failed_attempts
        own_nats.stop()
        # Down mid-drain: wait until a publish has really failed against the stopped server.
        await wait_for_condition(lambda: rr.relay.failed_attempts > failed_before, timeout=30,
                                 what="a publish failing during the second outage")
        left = await unpublished(store)
        own_nats.start()
        await assert_eventually(lambda: unpublished(store), lambda n: n == 0, timeout=60,
                                interval=0.1, what="backlog drained after the outage")
        drain_s = time.monotonic() - t1
        assert rr.relay.disconnects >= 2
        assert 0 < left < 1000
    expected = await event_ids(store)
    assert len(expected) == await total_events(store) == 1040
    got = await fetch_all(own_nats.url, names, len(expected), timeout=60)
    repeats = check_complete(got, expected)
    print(f"\noutage: 1000 events during {churn_s:.1f}s down; {left} left at the second stop; "
          f"drained in {drain_s:.2f}s (incl. the second outage); {len(got)} delivered, "
          f"{repeats} repeats; "
          f"{rr.relay.failed_attempts} failed attempts")


@contextmanager
def relay_process(settings_env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out, airlock_process("relay", settings_env, stdout=out,
                                                stderr=subprocess.STDOUT, stop_timeout=15) as proc:
        yield proc


async def stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def test_relay_killed_mid_batch_loses_nothing(pg_plane: Plane, own_nats: NatsServer,
                                                    tmp_path: Path) -> None:
    names = Names()
    _, alice = await echo_world(pg_plane)
    store = pg_plane.cp.store
    await churn(alice, 500, "backlog")  # 1,000 events waiting before any relay runs
    total = await total_events(store)
    env = {"AIRLOCK_DATABASE_URL": pg_plane.url, "AIRLOCK_NATS_URL": own_nats.url,
           "AIRLOCK_NATS_STREAM": names.stream, "AIRLOCK_NATS_SUBJECT_PREFIX": names.prefix,
           "AIRLOCK_RELAY_BATCH_SIZE": "50", "AIRLOCK_RELAY_POLL_SECONDS": "0.5",
           "AIRLOCK_LOG_LEVEL": "WARNING"}
    log = tmp_path / "relay.log"

    async def marked() -> int:
        return total - await unpublished(store)

    mid_batch_kills = 0
    stored_unmarked = 0  # after the last kill: in JetStream, not marked in the database
    for _attempt in range(8):
        with relay_process(env, log) as proc:
            # Kill -9 the moment JetStream holds events the database has not marked yet.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                done = await marked()
                if done >= total:
                    break
                try:
                    in_stream = await stream_messages(own_nats.url, names.stream)
                except Exception:
                    in_stream = 0  # the stream is not created yet
                if in_stream > done > 0 or in_stream > done + 10:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
            assert proc.poll() is not None or await marked() >= total, \
                f"relay did not get mid-batch in time; log: {log.read_text()[-2000:]}"
        after_kill_marked = await marked()
        if after_kill_marked >= total:
            break
        # Every marked event is in the stream (marked only after its ack), and JetStream
        # stores each id once: the difference is exactly the acked-but-unmarked events.
        stored_unmarked = await stream_messages(own_nats.url, names.stream) - after_kill_marked
        if stored_unmarked > 0:
            mid_batch_kills += 1  # acked by JetStream, never marked: will be re-published
            if mid_batch_kills >= 2:
                break
    assert mid_batch_kills >= 1 and stored_unmarked > 0, \
        "never caught the relay between ack and mark (last attempt included)"

    # A fresh relay (in-process, to read its counters) finishes the job. It re-publishes the
    # stored-but-unmarked events; JetStream must recognise exactly those as duplicates.
    marked_before = await marked()
    settings = relay_settings(pg_plane.url, own_nats.url, names, relay_batch_size=50)
    async with running_relay(settings) as rr:
        await assert_eventually(marked, lambda n: n == total, timeout=60, interval=0.1,
                                what="all events marked after restart")
        assert rr.relay.published == total - marked_before  # acked (stored or duplicate)
        assert rr.relay.duplicates == stored_unmarked
    expected = await event_ids(store)
    assert len(expected) == total
    # The stream holds each event once: the re-publishes were dropped by msg id, so a
    # consumer reading from the start sees no repeat at all.
    assert await stream_messages(own_nats.url, names.stream) == total
    got = await fetch_all(own_nats.url, names, len(expected), timeout=60)
    assert check_complete(got, expected) == 0
    assert len(got) == total
    print(f"\nkill -9: {mid_batch_kills} kill(s) between ack and mark; {stored_unmarked} "
          f"re-published after the last one, all dropped by JetStream as duplicates")


def _failed_connects(caplog: pytest.LogCaptureFixture) -> int:
    """Connection attempts the relay saw fail (the NATS client reports each to the relay)."""
    return sum(1 for r in caplog.records
               if r.getMessage().startswith(("NATS unreachable", "NATS client error")))


async def test_relay_started_before_nats(pg_plane: Plane, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="executor.relay")
    names = Names()
    _, alice = await echo_world(pg_plane)
    store = pg_plane.cp.store
    server = NatsServer(tmp_path / "late")
    server.store_dir.mkdir()
    async with running_relay(relay_settings(pg_plane.url, server.url, names)):
        await churn(alice, 10, "early")
        # The relay keeps trying to connect meanwhile: wait for two failed attempts.
        await wait_for_condition(lambda: _failed_connects(caplog) >= 2, timeout=30,
                                 what="the relay retrying a connection to the absent NATS")
        assert await unpublished(store) == 20
        server.start()
        try:
            await assert_eventually(lambda: unpublished(store), lambda n: n == 0, timeout=30)
            got = await fetch_all(server.url, names, 20)
        finally:
            server.stop()
    assert check_complete(got, await event_ids(store)) == 0
