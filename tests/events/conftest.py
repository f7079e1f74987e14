"""Fixtures for the NATS tests: the shared server on 127.0.0.1:4222, private servers on free
ports (for outages), unique streams and subjects per test, and an in-process relay.

Every test uses its own stream name and subject prefix (a uuid), and deletes its stream, so
nothing depends on what other runs left on the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from executor.process import open_store
from executor.relay import Relay
from executor.settings import RelaySettings
from server.store import Store
from server.wire import event_codec
from tests.conftest import Plane, manifest_text
from tests.helpers.api import register
from tests.helpers.requirements import require

SHARED_NATS = os.environ.get("AIRLOCK_TEST_NATS", "nats://127.0.0.1:4222")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _reachable(url: str) -> str | None:
    host, _, port = url.removeprefix("nats://").partition(":")
    try:
        with socket.create_connection((host, int(port or 4222)), timeout=2):
            return None
    except OSError as e:
        return f"NATS not reachable at {url}: {e}"


@pytest.fixture(scope="session")
def nats_url() -> str:
    require("NATS", _reachable(SHARED_NATS))
    return SHARED_NATS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A private ``nats-server -js`` on a free port with its own store dir; stop and start it
    again on the same port and store to simulate an outage."""

    def __init__(self, store_dir: Path) -> None:
        if not Path(NATS_SERVER).exists():
            require("nats-server", f"no nats-server on PATH or at {NATS_SERVER} "
                    "(Debian package nats-server)")
        self.port = free_port()
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             str(self.store_dir), "-l", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _reachable(self.url):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"nats-server did not start: see {self.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats-store")
    server.store_dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Names:
    """A stream and subject prefix of this test only."""

    stream: str = field(default_factory=lambda: f"T_{uuid.uuid4().hex[:12]}")
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}.runs")


@pytest.fixture
async def names(nats_url: str) -> AsyncIterator[Names]:
    n = Names()
    yield n
    await delete_stream(nats_url, n.stream)


async def delete_stream(url: str, stream: str) -> None:
    with contextlib.suppress(Exception):
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


def relay_settings(db_url: str, nats_url: str, names: Names, **overrides: Any) -> RelaySettings:
    values: dict[str, Any] = dict(
        database_url=db_url, nats_url=nats_url, nats_stream=names.stream,
        nats_subject_prefix=names.prefix, relay_poll_seconds=0.5, relay_backoff_max_seconds=0.5,
        relay_ack_timeout_seconds=2.0, nats_stream_storage="file")
    values.update(overrides)
    return RelaySettings(**values)


@dataclass
class RunningRelay:
    relay: Relay
    store: Store
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_relay(settings: RelaySettings) -> AsyncIterator[RunningRelay]:
    """An in-process relay with its own store and LISTEN connection, as in production."""
    store, listener = await open_store(settings.database_url.get_secret_value())
    relay = Relay(settings, store)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield RunningRelay(relay, store, stop, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            if listener is not None:
                await listener.stop()
            await store.dispose()


async def unpublished(store: Store) -> int:
    async with store.read() as tx:
        return await tx.events.count(unpublished_only=True)


async def total_events(store: Store) -> int:
    async with store.read() as tx:
        return await tx.events.count()


@dataclass
class Received:
    subject: str
    headers: dict[str, str]
    payload: Any  # RunEventPayload
    data: bytes


async def fetch_all(url: str, names: Names, expected: int, *, durable: str | None = None,
                    timeout: float = 30.0, batch: int = 256) -> list[Received]:
    """Pull every message of the test's stream (from the start) until ``expected`` arrived
    and the stream has no more for a moment; each message is acked."""
    nc = await nats.connect(url)
    out: list[Received] = []
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"{names.prefix}.>", durable=durable or f"all_{uuid.uuid4().hex[:8]}",
            stream=names.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT))
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(batch, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                if len(out) >= expected:
                    quiet += 1
                    if quiet >= 2:
                        break
                continue
            for m in msgs:
                out.append(Received(m.subject, dict(m.headers or {}), event_codec.decode(m.data),
                                    m.data))
                await m.ack()
        return out
    finally:
        await nc.close()


async def echo_world(plane: Plane) -> tuple[Any, Any]:
    """Admin registers ``echo`` (low risk: auto-approved) and ``crit`` (two approvals)."""
    admin = plane.admin
    await register(admin, manifest_text("echo"))
    await register(admin, manifest_text("crit", risk="critical"))
    alice = await plane.key("alice", "submitter")
    return admin, alice
