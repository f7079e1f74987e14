"""The events relay: ``run_events`` rows (the outbox) to a NATS JetStream stream.

Guarantees, each kept in one place:

- at least once: a row is marked published only after JetStream acknowledged it; a crash
  between the ack and the mark re-publishes it, and JetStream drops the repeat when it comes
  within the stream's duplicate window (``Nats-Msg-Id`` = the event id). A consumer may still
  see a repeat after a longer outage; it carries the same event id.
- workflow events (``workflow_events``, the workflows' outbox) go the same way, in the same
  batch and stream, per workflow in order (``server.wire.workflow_event_codec``).
- per-run order: rows are read in id order, and a run's id order is its commit order (every
  transition locks the run row). Within a batch the runs are published concurrently, but each
  run's events one after the other, the next only after the previous one's ack; after a
  failure, none of that run's later events is sent (nor marked) until the failed one is.
- one relay at a time: on PostgreSQL each batch holds an advisory lock for its transaction,
  so several relay processes (for availability) never interleave. On SQLite one relay process.
- outages: NATS down means publish attempts fail and are retried with capped backoff; rows
  stay unpublished meanwhile, nothing is lost. The stream is re-checked after failures (a
  server that lost its store gets it back). A database blip is retried the same way.
- promptness: the relay wakes on the ``airlock_run_events`` notification (LISTEN/NOTIFY on
  PostgreSQL) and polls only as a fallback; when behind, it publishes full batches back to back.

``airlock relay`` runs it alone (:func:`run_relay`); ``AIRLOCK_RELAY_EVENTS`` runs it inside an
executor process. Its settings are ``executor.settings.RelaySettings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agents.errors import ConfigError
from executor.process import open_store
from executor.settings import RelaySettings
from server.domain.chain import AUDIT_CHAIN, heads_digest
from server.domain.clock import Clock, utcnow
from server.domain.models import RunEvent
from server.domain.workflow_models import WorkflowEvent
from server.store import Store
from server.store.notify import RUN_EVENTS
from server.wire import event_codec, workflow_event_codec

log = logging.getLogger(__name__)

__all__ = ["BatchResult", "Relay", "run_relay"]


@dataclass
class BatchResult:
    """What one batch did."""

    read: int = 0
    published: int = 0  # acknowledged and marked
    duplicates: int = 0  # of those, JetStream had already stored (a repeat after a crash)
    errors: list[BaseException] = field(default_factory=list)
    locked_out: bool = False  # another relay holds the outbox lock
    acked: list[int] = field(default_factory=list)  # row ids, to mark
    workflow_acked: list[int] = field(default_factory=list)  # workflow_events row ids


class _Backoff:
    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.next = first, cap, first

    def reset(self) -> None:
        self.next = self.first

    def take(self) -> float:
        delay, self.next = self.next, min(self.next * 2, self.cap)
        return delay


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a concurrent cancellation.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


class Relay:
    """Publishes the outbox to JetStream. ``await relay.run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: RelaySettings, store: Store, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.nc: Any = None
        self.js: Any = None
        self.published = 0  # events acknowledged and marked by this process
        self.duplicates = 0
        self.failed_attempts = 0
        self.disconnects = 0
        self._connected = asyncio.Event()
        self._closing = False
        self._backoff = _Backoff(0.05, settings.relay_backoff_max_seconds)
        self._head_at = -float("inf")  # monotonic time the audit head was last published

    # -- NATS --------------------------------------------------------------------------------

    async def connect(self, stop: asyncio.Event) -> bool:
        """Connect (retrying with backoff until ``stop``); True when connected."""
        import nats

        backoff = _Backoff(0.1, self.settings.relay_backoff_max_seconds)
        while not stop.is_set():
            try:
                self.nc = await nats.connect(
                    servers=self.settings.servers, name="airlock-relay", connect_timeout=2,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                    ping_interval=10, max_outstanding_pings=3,
                    disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error, closed_cb=self._on_closed)
                self.js = self.nc.jetstream(timeout=self.settings.relay_ack_timeout_seconds)
                self._connected.set()
                log.info("relay connected to NATS %s", self.nc.connected_url.netloc
                         if self.nc.connected_url else "")
                return True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                delay = backoff.take()
                log.warning("NATS unreachable (%s: %s); retrying in %.1fs",
                            type(e).__name__, e, delay)
                await _sleep_unless(stop, delay)
        return False

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        if not self._closing:
            self.disconnects += 1
            log.warning("relay disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self._connected.set()
        log.info("relay reconnected to NATS")

    async def _on_error(self, e: Exception) -> None:
        log.debug("NATS client error: %s: %s", type(e).__name__, e)

    async def _on_closed(self) -> None:
        self._connected.clear()

    async def ensure_stream(self) -> None:
        """Create the stream, or check that the existing one takes our subjects (and bring
        its max age, size and duplicate window to the configured values)."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        s = self.settings
        wanted = f"{s.nats_subject_prefix}.>"
        try:
            info = await self.js.stream_info(s.nats_stream)
        except NotFoundError:
            cfg = api.StreamConfig(
                name=s.nats_stream, description="Airlock run events (airlock.v1.RunEventPayload)",
                subjects=[wanted], retention=api.RetentionPolicy(s.nats_stream_retention),
                storage=api.StorageType(s.nats_stream_storage), num_replicas=s.nats_stream_replicas,
                max_age=s.nats_stream_max_age_seconds, max_bytes=s.nats_stream_max_bytes,
                duplicate_window=s.nats_duplicate_window_seconds)
            await self.js.add_stream(cfg)
            log.info("created JetStream stream %s for %s", s.nats_stream, wanted)
            return
        cfg = info.config
        if wanted not in (cfg.subjects or []):
            raise ConfigError(
                f"AIRLOCK_NATS_STREAM: stream {s.nats_stream!r} exists with subjects "
                f"{cfg.subjects}, not {wanted!r}; choose another stream or subject prefix")
        changes: dict[str, Any] = {}
        if abs((cfg.max_age or 0) - s.nats_stream_max_age_seconds) > 1e-3:
            changes["max_age"] = s.nats_stream_max_age_seconds
        if abs((cfg.duplicate_window or 0) - s.nats_duplicate_window_seconds) > 1e-3:
            changes["duplicate_window"] = s.nats_duplicate_window_seconds
        if (cfg.max_bytes or -1) != s.nats_stream_max_bytes:
            changes["max_bytes"] = s.nats_stream_max_bytes
        if changes:
            await self.js.update_stream(replace(cfg, **changes))
            log.info("updated stream %s: %s", s.nats_stream, changes)

    async def close(self) -> None:
        self._closing = True
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 5)
            with contextlib.suppress(Exception):
                await self.nc.close()
        self._connected.clear()

    # -- publishing --------------------------------------------------------------------------

    async def publish_batch(self) -> BatchResult:
        """Publish the oldest unpublished events (one batch); mark those JetStream acked."""
        limit = self.settings.relay_batch_size
        if self.store.dialect == "postgresql":
            async with self.store.transaction() as tx:
                if not await tx.events.try_lock_outbox():
                    return BatchResult(locked_out=True)
                events = await tx.events.unpublished(limit)
                wevents = await tx.workflows.unpublished(limit)
                result = await self._publish(events, wevents)
                if result.acked:
                    await tx.events.mark_published(result.acked, self.clock())
                if result.workflow_acked:
                    await tx.workflows.mark_published(result.workflow_acked, self.clock())
        else:
            # SQLite: no transaction held while publishing (it would block every writer).
            async with self.store.read() as tx:
                events = await tx.events.unpublished(limit)
                wevents = await tx.workflows.unpublished(limit)
            result = await self._publish(events, wevents)
            if result.acked or result.workflow_acked:
                async with self.store.transaction() as tx:
                    await tx.events.mark_published(result.acked, self.clock())
                    await tx.workflows.mark_published(result.workflow_acked, self.clock())
        self.published += result.published
        self.duplicates += result.duplicates
        if result.published:
            from server.telemetry import metrics_api

            metrics_api().events_published.add(result.published)
        return result

    async def _publish(self, events: Sequence[RunEvent],
                       workflow_events: Sequence[WorkflowEvent] = ()) -> BatchResult:
        result = BatchResult(read=len(events) + len(workflow_events))
        if not result.read:
            return result
        chains: dict[str, list[RunEvent]] = {}
        for e in events:  # id order; each run's events stay in order
            chains.setdefault(e.run_id, []).append(e)
        wchains: dict[str, list[WorkflowEvent]] = {}
        for w in workflow_events:  # likewise per workflow
            wchains.setdefault(w.workflow_id, []).append(w)

        async def wchain(evs: list[WorkflowEvent]) -> None:
            for w in evs:
                try:
                    ack = await self.js.publish(
                        workflow_event_codec.subject(self.settings.nats_subject_prefix, w.name,
                                                     w.state.value),
                        workflow_event_codec.encode(w), stream=self.settings.nats_stream,
                        timeout=self.settings.relay_ack_timeout_seconds,
                        headers=workflow_event_codec.headers(w))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    result.errors.append(exc)
                    return  # later events of this workflow wait for this one
                result.workflow_acked.append(w.id)
                if getattr(ack, "duplicate", False):
                    result.duplicates += 1

        async def chain(evs: list[RunEvent]) -> None:
            for e in evs:
                try:
                    ack = await self._publish_one(e)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    result.errors.append(exc)
                    return  # later events of this run wait for this one
                result.acked.append(e.id)
                if getattr(ack, "duplicate", False):
                    result.duplicates += 1

        await asyncio.gather(*(chain(c) for c in chains.values()),
                             *(wchain(c) for c in wchains.values()))
        result.published = len(result.acked) + len(result.workflow_acked)
        return result

    async def _publish_one(self, e: RunEvent) -> Any:
        from opentelemetry.trace import SpanKind

        from server import telemetry

        subj = event_codec.subject(self.settings.nats_subject_prefix, e.agent, e.state.value)
        data = event_codec.encode(e)
        timeout = self.settings.relay_ack_timeout_seconds
        if not (e.traceparent and telemetry.tracing_enabled()):
            return await self.js.publish(subj, data, timeout=timeout,
                                         stream=self.settings.nats_stream,
                                         headers=event_codec.headers(e, e.traceparent))
        # A producer span in the run's trace, named and attributed by OpenTelemetry's messaging
        # conventions ("publish" is NATS's operation; its type is "send", which replaced the
        # deprecated "publish" type); its context travels in the headers.
        with telemetry.span(f"publish {subj}", parent=e.traceparent, kind=SpanKind.PRODUCER,
                            attributes={"messaging.system": "nats",
                                        "messaging.destination.name": subj,
                                        "messaging.operation.type": "send",
                                        "messaging.operation.name": "publish",
                                        "messaging.message.id": e.event_id,
                                        "messaging.message.body.size": len(data),
                                        "airlock.stream": self.settings.nats_stream,
                                        "airlock.run_id": e.run_id,
                                        "airlock.state": e.state.value}) as s:
            url = getattr(self.nc, "connected_url", None)
            if url is not None and url.hostname:
                s.set_attribute("server.address", url.hostname)
                s.set_attribute("server.port", url.port or 4222)
            headers = event_codec.headers(e, telemetry.traceparent_of(s) or e.traceparent)
            return await self.js.publish(subj, data, timeout=timeout,
                                         stream=self.settings.nats_stream, headers=headers)

    # -- the audit trail's head --------------------------------------------------------------

    async def audit_head(self) -> dict[str, Any]:
        """The audit trail's head as published: every chain's head digested (the value
        ``VerifyAuditTrail`` answers as chain_digest), with the ``audit`` chain's own head."""
        async with self.store.snapshot() as tx:
            runs: list[tuple[str, int, str]] = await tx.runs.chain_heads()
            others = await tx.audit.other_chains()
        audit = next(((seq, h) for name, seq, h in others if name == AUDIT_CHAIN), (0, ""))
        return {"time": self.clock().isoformat().replace("+00:00", "Z"), "runs": len(runs),
                "chains": len(runs) + len(others),
                "chain_digest": heads_digest([*runs, *others]), "audit_chain_sequence": audit[0],
                "audit_chain_head": audit[1]}

    async def publish_audit_head(self) -> dict[str, Any]:
        """Publish the head on core NATS (a subscriber or a stream the operator adds keeps a
        copy outside the database)."""
        head = await self.audit_head()
        await self.nc.publish(self.settings.audit_head_subject,
                              json.dumps(head, separators=(",", ":")).encode(),
                              headers={"Content-Type": "application/json"})
        self._head_at = time.monotonic()
        return head

    async def _maybe_publish_head(self) -> None:
        every = self.settings.audit_head_seconds
        if every and time.monotonic() - self._head_at >= every:
            try:
                await self.publish_audit_head()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never stops the events; retried next period
                self._head_at = time.monotonic()
                log.warning("relay: audit head not published (%s: %s)", type(e).__name__, e)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, make sure of the stream, then publish until ``stop`` is set."""
        try:
            while not stop.is_set():
                if self.nc is None or self.nc.is_closed:
                    if not await self.connect(stop):
                        return
                if not self._connected.is_set():
                    await self._wait_any(stop, self._connected, seconds=1.0)
                    continue
                try:
                    await self.ensure_stream()
                except asyncio.CancelledError:
                    raise
                except ConfigError:
                    raise  # retrying will not fix it
                except Exception as e:
                    await self._failed(stop, f"stream check failed ({type(e).__name__}: {e})")
                    continue
                await self._pump(stop)
        finally:
            await self.close()

    async def _pump(self, stop: asyncio.Event) -> None:
        """Publish batches until stop, or until a failure calls for a stream re-check."""
        notifier = self.store.notifier
        poll = self.settings.relay_poll_seconds
        while not stop.is_set():
            if not self._connected.is_set():  # reconnecting: do not fill the client's buffer
                if self.nc is None or self.nc.is_closed:
                    return
                await self._wait_any(stop, self._connected, seconds=poll)
                continue
            token = notifier.token(RUN_EVENTS)
            await self._maybe_publish_head()
            try:
                result = await self.publish_batch()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database went away: retry
                await self._failed(stop, f"outbox read or mark failed ({type(e).__name__}: {e})")
                continue
            if result.errors:
                first = result.errors[0]
                await self._failed(stop, f"{len(result.errors)} publish(es) not acknowledged "
                                   f"({type(first).__name__}: {first}); {result.published} of "
                                   f"{result.read} acknowledged")
                return  # re-check the stream, then go on
            self._backoff.reset()
            if result.locked_out:
                await self._wait_any(stop, token, seconds=min(poll, 1.0))
            elif result.read < self.settings.relay_batch_size:
                await self._wait_any(stop, token, seconds=poll)
            # else: behind; the next batch at once

    async def _failed(self, stop: asyncio.Event, what: str) -> None:
        self.failed_attempts += 1
        delay = self._backoff.take()
        log.warning("relay: %s; retrying in %.2fs", what, delay)
        await _sleep_unless(stop, delay)

    @staticmethod
    async def _wait_any(stop: asyncio.Event, other: asyncio.Event, *, seconds: float) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


async def run_relay(settings: RelaySettings, stop: asyncio.Event) -> None:
    """Run one relay against the configured database until ``stop`` is set.

    ``ConfigError`` when the stream exists with other subjects."""
    from server.telemetry import setup_telemetry

    handles = setup_telemetry("airlock-relay", settings.otlp_endpoint)
    store, listener = await open_store(settings.database_url.get_secret_value())
    relay = Relay(settings, store)
    started = time.monotonic()
    try:
        await relay.run(stop)
    finally:
        if listener is not None:
            await listener.stop()
        await store.dispose()
        for h in handles:
            h.shutdown()
        log.info("relay stopped after %.0fs: %d events published", time.monotonic() - started,
                 relay.published)
