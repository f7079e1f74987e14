"""The relay against real NATS JetStream: every state change arrives once, in per-run order;
a durable consumer resumes without gaps; several relays on PostgreSQL do not interleave."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from datetime import timedelta

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy import text

from agents.errors import ConfigError
from airlock.v1 import audit_service_pb2 as aus
from airlock.v1 import run_pb2 as rp
from executor.relay import Relay
from server.domain.models import RunEvent
from server.domain.states import RunState
from server.store import Store
from tests.conftest import Plane, start_plane
from tests.events.conftest import (
    Names,
    Received,
    echo_world,
    fetch_all,
    relay_settings,
    running_relay,
    total_events,
    unpublished,
)
from tests.helpers.api import approve, cancel, reject, submit
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.nats]


async def all_rows(store: Store) -> list[RunEvent]:
    async with store.read() as tx:
        run_ids = [r.id for r in await tx.runs.find(limit=10_000)]
        rows = []
        for rid in run_ids:
            rows += await tx.events.since(rid, 1, limit=10_000)
    return rows


async def drive(plane: Plane, store: Store, n_extra: int = 10) -> None:
    """Every kind of transition: approval, rejection, cancel, run to success and failure."""
    _, alice = await echo_world(plane)
    bob = await plane.key("bob", "approver")
    carol = await plane.key("carol", "approver")
    approved = (await submit(alice, "crit")).run.id
    await approve(bob, approved)
    await approve(carol, approved)
    await reject(bob, (await submit(alice, "crit")).run.id, "no")
    failing = (await submit(alice)).run.id
    for rid, outcome in ((approved, RunState.SUCCEEDED), (failing, RunState.FAILED)):
        now = plane.cp.clock()
        async with store.transaction() as tx:
            r = await tx.runs.get(rid, lock=True)
            assert r is not None
            r = await tx.runs.lease(r, executor_id="ex-1", until=now + timedelta(seconds=30),
                                    now=now)
            await tx.runs.transition(r, outcome, reason="done", actor="ex-1", now=now)
    for i in range(n_extra):
        run = (await submit(alice, text=f"n{i}")).run
        await cancel(alice, run.id, "enough")


def check_delivery(got: list[Received], rows: list[RunEvent], names: Names) -> None:
    """Once per event id, per-run order, and the payload and headers match the row."""
    ids = Counter(r.payload.event_id for r in got)
    assert {i: c for i, c in ids.items() if c > 1} == {}
    assert set(ids) == {e.event_id for e in rows}
    by_id = {e.event_id: e for e in rows}
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in got:
        p = m.payload
        e = by_id[p.event_id]
        seqs[p.run_id].append(p.sequence)
        assert m.subject == f"{names.prefix}.{e.agent}.{e.state.value.lower()}"
        assert m.headers["Nats-Msg-Id"] == e.event_id
        assert m.headers["Content-Type"] == "application/json"
        assert m.headers["Airlock-Schema"] == "airlock.v1.RunEventPayload/1"
        assert p.schema_version == 1
        assert (p.run_id, p.sequence, p.agent, p.version, p.capability, p.attempt, p.reason,
                p.actor) == (e.run_id, e.seq, e.agent, e.version, e.capability, e.attempt,
                             e.reason, e.actor)
        assert rp.RunState.Name(p.state) == f"RUN_STATE_{e.state.value}"
        prev = e.previous_state.value if e.previous_state else "UNSPECIFIED"
        assert rp.RunState.Name(p.previous_state) == f"RUN_STATE_{prev}"
        assert p.create_time.ToDatetime().replace(microsecond=0) == \
            e.created_at.replace(tzinfo=None, microsecond=0)
        # The run's hash chain travels with the event: a copy outside the database.
        assert (p.chain_sequence, p.prev_hash, p.hash) == (e.chain_seq, e.prev_hash, e.hash)
        assert len(p.hash) == 64
    for run_id, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), (run_id, s)


async def test_every_state_change_once_in_order(db_url: str, nats_url: str, names: Names) -> None:
    plane = await start_plane(db_url)
    try:
        settings = relay_settings(db_url, nats_url, names, relay_poll_seconds=0.2)
        async with running_relay(settings) as rr:
            await drive(plane, plane.cp.store)
            await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0,
                                    timeout=20, what="every event published")
            assert rr.relay.failed_attempts == 0
        rows = await all_rows(plane.cp.store)
        assert len(rows) == await total_events(plane.cp.store) == 4 + 2 + 3 + 20
        states = {e.state for e in rows}
        assert states >= {RunState.PENDING_APPROVAL, RunState.QUEUED, RunState.RUNNING,
                          RunState.SUCCEEDED, RunState.FAILED, RunState.REJECTED,
                          RunState.CANCELLED}
        got = await fetch_all(nats_url, names, len(rows))
        check_delivery(got, rows, names)
    finally:
        await plane.close()


async def test_durable_consumer_resumes_without_gaps(pg_plane: Plane, nats_url: str,
                                                     names: Names) -> None:
    _, alice = await echo_world(pg_plane)
    store = pg_plane.cp.store
    settings = relay_settings(pg_plane.url, nats_url, names)
    async with running_relay(settings) as rr:
        for i in range(10):
            await cancel(alice, (await submit(alice, text=f"a{i}")).run.id)
        await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)

        # A durable consumer takes the first 20, acks them, and goes away.
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        cfg = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
        sub = await js.pull_subscribe(f"{names.prefix}.>", durable="backend", stream=names.stream,
                                      config=cfg)
        first = []
        while len(first) < 20:
            for m in await sub.fetch(20 - len(first), timeout=5):
                first.append(m)
                await m.ack()
        await nc.close()

        # While it is away, more runs change state.
        for i in range(10):
            await cancel(alice, (await submit(alice, text=f"b{i}")).run.id)
        await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)

    # It comes back under the same durable name and continues where it acked.
    rest = await fetch_all(nats_url, names, 20, durable="backend")
    seen = [m.headers["Nats-Msg-Id"] for m in first] + [m.payload.event_id for m in rest]
    rows = await all_rows(store)
    assert len(seen) == len(set(seen)) == len(rows) == 40
    assert set(seen) == {e.event_id for e in rows}


async def test_two_relays_on_postgres_do_not_interleave(pg_plane: Plane, nats_url: str,
                                                        names: Names) -> None:
    _, alice = await echo_world(pg_plane)
    settings = relay_settings(pg_plane.url, nats_url, names, relay_batch_size=7)
    async with running_relay(settings) as a, running_relay(settings) as b:
        runs = [(await submit(alice, text=f"r{i}")).run.id for i in range(40)]
        for i in range(0, 40, 5):  # concurrent writers, few connections (a shared server)
            await asyncio.gather(*(cancel(alice, r) for r in runs[i:i + 5]))
        await assert_eventually(lambda: unpublished(a.store), lambda n: n == 0, timeout=30)
        assert a.relay.published + b.relay.published == 80
    rows = await all_rows(pg_plane.cp.store)
    got = await fetch_all(nats_url, names, len(rows))
    check_delivery(got, rows, names)


async def test_existing_stream_with_other_subjects_is_refused(pg_url: str, nats_url: str,
                                                              names: Names) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(name=names.stream, subjects=[f"{names.prefix}x.>"])
    finally:
        await nc.close()
    store, _ = await _store(pg_url)
    try:
        relay = Relay(relay_settings(pg_url, nats_url, names), store)
        with pytest.raises(ConfigError, match=r"^AIRLOCK_NATS_STREAM: "):
            await asyncio.wait_for(relay.run(asyncio.Event()), 20)
    finally:
        await store.dispose()


async def _store(url: str) -> tuple[Store, None]:
    from server.store import make_engine

    return Store(make_engine(url=url, pool_size=2)), None


async def test_stream_deleted_under_the_relay_is_recreated(pg_plane: Plane, nats_url: str,
                                                           names: Names) -> None:
    _, alice = await echo_world(pg_plane)
    async with running_relay(relay_settings(pg_plane.url, nats_url, names)) as rr:
        await cancel(alice, (await submit(alice)).run.id)
        await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(names.stream)  # e.g. NATS lost its store
        finally:
            await nc.close()
        await cancel(alice, (await submit(alice)).run.id)
        await assert_eventually(lambda: unpublished(rr.store), lambda n: n == 0, timeout=20)
    got = await fetch_all(nats_url, names, 2)
    assert [m.payload.sequence for m in got] == [1, 2]  # the events after the loss


def test_bad_setting_stops_the_relay_naming_it() -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "AIRLOCK_NATS_URL": "http://nats:4222", "AIRLOCK_RELAY_BATCH_SIZE": "0"}
    proc = subprocess.run([sys.executable, "-m", "airlock.cli", "relay"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3  # the CLI's status for configuration errors, as every process
    assert "configuration error: AIRLOCK_NATS_URL: must be nats://host:port" in proc.stderr
    assert "configuration error: AIRLOCK_RELAY_BATCH_SIZE:" in proc.stderr


async def test_audit_head_is_published_and_matches_verification(
        db_url: str, nats_url: str, names: Names) -> None:
    """The relay publishes the audit trail's head on core NATS; a subscriber's copy equals
    what VerifyAuditTrail finds, and no longer does once the database is edited."""
    plane = await start_plane(db_url)
    subject = f"{names.prefix.removesuffix('.runs')}.audit.head"
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(subject)
        await drive(plane, plane.cp.store, n_extra=2)
        settings = relay_settings(db_url, nats_url, names, relay_poll_seconds=0.2,
                                  audit_head_seconds=0.2, audit_head_subject=subject)
        async with running_relay(settings):
            msg = await sub.next_msg(timeout=20)
        head = json.loads(msg.data)
        assert msg.headers and msg.headers["Content-Type"] == "application/json"
        v = await plane.admin.audit.VerifyAuditTrail(aus.VerifyAuditTrailRequest(),
                                                     metadata=plane.admin.md)
        assert v.ok and head["chain_digest"] == v.chain_digest
        assert head["runs"] == v.runs_checked and head["audit_chain_sequence"] >= 1
        async with plane.cp.store.transaction() as tx:  # a later edit behind the API
            await tx.conn.execute(text("UPDATE runs SET chain_head = 'x' WHERE id = "
                                       "(SELECT MIN(id) FROM runs)"))
        again = await plane.admin.audit.VerifyAuditTrail(aus.VerifyAuditTrailRequest(),
                                                         metadata=plane.admin.md)
        assert not again.ok and again.chain_digest != head["chain_digest"]
    finally:
        await nc.close()
        await plane.close()
