"""The control-plane process: store, services, gRPC server, background sweeps, ordered shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from agents.manifest import Risk
from server.domain.clock import Clock, utcnow
from server.domain.policy import Policy
from server.domain.states import RunState
from server.services import page_tokens
from server.services.admin import AdminService
from server.services.approvals import ApprovalService
from server.services.audit import AuditService
from server.services.registry import RegistryService
from server.services.runs import RunService
from server.services.usage import UsageService
from server.services.workflows import WorkflowService
from server.settings import ServerSettings
from server.store import Store, make_engine
from server.store.duties import DutyLock
from server.store.migrate import upgrade
from server.store.notify import Notifier, PgListener
from server.telemetry import (
    TelemetryHandle,
    metrics_api,
    metrics_enabled,
    setup_telemetry,
)
from server.transport.grpc_server import build_server, set_serving
from server.transport.grpcweb import WebServer, build_web_app
from server.transport.handlers import Services
from server.transport.nats_submit import NatsSubmitResponder
from server.transport.tracing import server_interceptors, set_server_address

log = logging.getLogger(__name__)

# The database health check: a SELECT 1 this often while the database answers, and at once
# when a call found it unreachable (so health turns NOT_SERVING within about a probe's time
# of the first failed call); while it is unreachable, this often until it answers again.
DB_CHECK_SECONDS = 5.0
DB_CHECK_DOWN_SECONDS = 1.0


def build_services(store: Store, settings: ServerSettings, policy: Policy, *,
                   clock: Clock = utcnow) -> Services:
    return Services(
        registry=RegistryService(store, clock=clock),
        runs=RunService(store, policy, clock=clock, max_input_bytes=settings.max_input_bytes,
                        max_attempts=settings.max_attempts,
                        watch_poll_seconds=settings.watch_poll_seconds),
        approvals=ApprovalService(store, clock=clock, watch_poll_seconds=settings.watch_poll_seconds),
        usage=UsageService(store, policy, clock=clock),
        admin=AdminService(store, clock=clock, auth_cache_seconds=settings.auth_cache_seconds,
                           lease_seconds=settings.lease_seconds,
                           executor_retention_seconds=settings.executor_retention_seconds),
        workflows=WorkflowService(store, policy, clock=clock,
                                  max_input_bytes=settings.max_input_bytes,
                                  max_attempts=settings.max_attempts,
                                  watch_poll_seconds=settings.watch_poll_seconds),
        audit=AuditService(store, clock=clock),
    )


def describe_policy(policy: Policy) -> str:
    """The effective rule per risk, one phrase each: what `airlock serve` logs at start-up."""
    parts = []
    for risk in sorted(Risk):
        rule = policy.rule_for(risk)
        need = "auto-approve" if rule.approvals == 0 else f"{rule.approvals} approval(s)"
        parts.append(f"{risk.label}: {need}, expires after {rule.expires_after.total_seconds():g}s")
    return "; ".join(parts)


def ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


async def prepare_database(settings: ServerSettings) -> str | None:
    """What must happen once before several serving processes start (``server.supervisor``):
    the migrations (when ``migrate_on_start``) and the first admin key, whose token is
    returned (and written to ``admin_token_file`` when set); None if an admin exists."""
    url = settings.database_url.get_secret_value()
    ensure_sqlite_dir(url)
    if settings.migrate_on_start:
        await asyncio.to_thread(upgrade, url)
    store = Store(make_engine(url=url, pool_size=1))
    try:
        token = await AdminService(store).ensure_first_admin()
    finally:
        await store.dispose()
    if token and settings.admin_token_file:
        ControlPlane._write_token(settings.admin_token_file, token)
    return token


class ControlPlane:
    """Start with ``await cp.start()``, stop with ``await cp.stop()`` (idempotent).

    ``reuse_port``: bind the gRPC and HTTP ports with ``SO_REUSEPORT``, so that several
    serving processes share them (``server.supervisor``); the kernel spreads connections.
    The once-only duties (approval expiry and executor retention sweeps, the queue-depth
    gauge) run in one process at a time: the holder of ``server.store.duties.DutyLock``.
    """

    def __init__(self, settings: ServerSettings, *, policy: Policy | None = None,
                 clock: Clock = utcnow, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        self.policy = policy or (Policy.load(settings.policy_file) if settings.policy_file else Policy())
        if policy is not None:
            self.policy_source = "given by the caller"
        elif settings.policy_file:
            self.policy_source = f"file {settings.policy_file}"
        else:
            self.policy_source = "built-in (AIRLOCK_POLICY_FILE unset)"
        self.clock = clock
        self.url = settings.database_url.get_secret_value()
        self.admin_token: str | None = None
        self.grpc_port: int = 0
        self.http: WebServer | None = None
        self.database_ok = True  # what the database health check last found
        self._tasks: list[asyncio.Task[None]] = []
        self._db_check: asyncio.Task[None] | None = None
        self._duty_lock: DutyLock | None = None
        self.duty_holder = False  # this process does the once-only duties right now
        self._stopped = False
        self.nats_submit: NatsSubmitResponder | None = None  # SubmitRun over NATS, when configured
        self._telemetry: list[TelemetryHandle] = []

    async def start(self) -> None:
        ensure_sqlite_dir(self.url)
        log.info("risk policy: %s: %s", self.policy_source, describe_policy(self.policy))
        if self.settings.migrate_on_start:
            await asyncio.to_thread(upgrade, self.url)
        if self.settings.page_token_key is not None:  # else the process's random key
            page_tokens.set_key(self.settings.page_token_key.get_secret_value())
        notifier = Notifier()
        self.store = Store(make_engine(url=self.url, pool_size=self.settings.db_pool_size), notifier)
        self.services = build_services(self.store, self.settings, self.policy, clock=self.clock)
        self._listener: PgListener | None = None
        if self.store.dialect == "postgresql":
            from server.store.engine import sync_url

            self._listener = PgListener(sync_url(self.url), notifier)
            self._listener.start()
            # Registry reads from memory only while LISTEN runs: it carries the invalidations.
            self.store.registry_cache.enable(self._listener.ready.is_set)
        else:
            self.store.registry_cache.enable(lambda: True)  # one process; commits invalidate
        self.admin_token = await self.services.admin.ensure_first_admin()
        if self.admin_token and self.settings.admin_token_file:
            self._write_token(self.settings.admin_token_file, self.admin_token)
        # Telemetry: OTLP when configured; one span per RPC when tracing is on.
        self._telemetry = setup_telemetry("airlock-server", self.settings.otlp_endpoint)
        self.server, self.health = build_server(self.services,
                                                max_message_bytes=self.settings.max_message_bytes,
                                                extra_interceptors=server_interceptors(),
                                                reuse_port=self.reuse_port)
        self.grpc_port = self._bind()
        set_server_address(self.settings.grpc_listen.rpartition(":")[0], self.grpc_port)
        await self.server.start()
        await set_serving(self.health, True)
        if self.settings.http_enabled:
            web = build_web_app(self.services, self.settings)
            self.http = WebServer(web, self.settings.http_listen, reuse_port=self.reuse_port)
            try:
                await self.http.start()
            except BaseException:  # e.g. the port is taken: release what already started
                self.http = None
                await self.stop(0)
                raise
            log.info("gRPC-Web and UI on http://%s", self.http_address)
        # The once-only duties: whoever holds the lock expires overdue approvals (of runs and
        # workflows) now (correct after a restart), then keeps sweeping; the others keep
        # trying to take it over.
        if self.store.dialect == "postgresql":
            from server.store.engine import sync_url

            self._duty_lock = DutyLock(sync_url(self.url))
        if await self._take_duties():
            expired = await self.services.approvals.expire_due()
            log.info("start-up sweep: %d overdue approval(s) expired", expired)
            await self.services.workflows.sweep()
        self._tasks.append(asyncio.create_task(self._duties(), name="once-only-duties"))
        self._db_check = asyncio.create_task(self._check_database(), name="database-health")
        # Optional parts: SubmitRun over NATS, and the queue-depth metric when metrics are on.
        if self.settings.nats_url is not None:
            servers = [u.strip() for u in self.settings.nats_url.get_secret_value().split(",")]
            self.nats_submit = NatsSubmitResponder(self.services, servers,
                                                   subject=self.settings.nats_submit_subject)
            self.nats_submit.start()
        log.info("gRPC listening on %s", self.grpc_address)

    @property
    def grpc_address(self) -> str:
        host = self.settings.grpc_listen.rpartition(":")[0]
        return f"{host}:{self.grpc_port}"

    @property
    def http_address(self) -> str | None:
        """host:port of gRPC-Web and the UI (the bound port when configured with 0)."""
        return self.http.address if self.http is not None else None

    def _bind(self) -> int:
        addr = self.settings.grpc_listen
        s = self.settings
        if s.tls_cert_file and s.tls_key_file:
            import grpc

            creds = grpc.ssl_server_credentials([(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())])
            return self.server.add_secure_port(addr, creds)
        return self.server.add_insecure_port(addr)

    @staticmethod
    def _write_token(path: Path, token: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")

    async def _take_duties(self) -> bool:
        """Whether this process holds the once-only duties now (taking them if free)."""
        was = self.duty_holder
        if self._duty_lock is None:  # SQLite: one process, always the holder
            self.duty_holder = True
        elif was:
            self.duty_holder = await self._duty_lock.still_held()
        else:
            self.duty_holder = await self._duty_lock.try_take()
        if self.duty_holder and not was:
            log.info("serving process %d holds the once-only duties (approval and workflow expiry and "
                     "executor retention sweeps, queue-depth gauge)", os.getpid())
        elif was and not self.duty_holder:
            log.warning("serving process %d lost the duty lock (its database connection "
                        "ended); another process takes the duties over", os.getpid())
        return self.duty_holder

    async def _duties(self) -> None:
        """Every ``expiry_sweep_seconds``: check (or try to take) the duty lock, and while
        holding it expire overdue approvals, drop old executors (once a minute) and sample the
        queue depth (every 5 s, when metrics are on)."""
        next_fleet_sweep = next_queue_sample = 0.0
        while True:
            await asyncio.sleep(self.settings.expiry_sweep_seconds)
            try:
                if not await self._take_duties():
                    next_fleet_sweep = 0.0
                    continue
                n = await self.services.approvals.expire_due()
                if n:
                    log.info("expired %d approval(s)", n)
                n = await self.services.workflows.sweep()
                if n:
                    log.info("closed %d workflow approval(s) or deadline(s)", n)
                if time.monotonic() >= next_fleet_sweep:  # once a minute is plenty
                    next_fleet_sweep = time.monotonic() + 60
                    dropped = await self.services.admin.drop_old_executors()
                    if dropped:
                        log.info("dropped %d stopped or lost executor(s) past their retention "
                                 "(AIRLOCK_EXECUTOR_RETENTION_SECONDS)", dropped)
                if metrics_enabled() and time.monotonic() >= next_queue_sample:
                    next_queue_sample = time.monotonic() + 5.0
                    await self._sample_queue()
            except Exception:  # a database blip must not end the sweeper
                log.exception("background sweep failed")

    async def _check_database(self) -> None:
        """gRPC health NOT_SERVING and /healthz 503 while the database does not answer, back to
        SERVING and 200 when it does (the pool drops its stale connections on checkout)."""
        while True:
            if self.database_ok:  # woken early by a call that found the database unreachable
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DB_CHECK_SECONDS):
                        await self.store.unavailable_seen.wait()
            else:
                await asyncio.sleep(DB_CHECK_DOWN_SECONDS)
            self.store.unavailable_seen.clear()
            try:
                ok = await self.store.ping()
            except Exception:  # not a connection failure: report it, keep checking
                log.exception("database health check failed")
                continue
            if ok != self.database_ok and not self._stopped:
                await self._set_database_health(ok)

    async def _set_database_health(self, ok: bool) -> None:
        self.database_ok = ok
        if ok:
            log.warning("database reachable again: health SERVING")
        else:
            log.error("database unreachable: health NOT_SERVING, calls answer UNAVAILABLE")
        await set_serving(self.health, ok)
        if self.http is not None:
            self.http.app.database_ok = ok

    async def _sample_queue(self) -> None:
        """Sample the queue depth for the metrics gauge (the gauge callback cannot query)."""
        try:
            async with self.store.read() as tx:
                for state in (RunState.QUEUED, RunState.PENDING_APPROVAL):
                    metrics_api().set_queue_depth(state.value, await tx.runs.count(state))
        except Exception:
            log.debug("queue depth sample failed", exc_info=True)

    async def stop(self, grace: float = 5.0) -> None:
        """Health NOT_SERVING -> stop HTTP, then gRPC, with grace -> cancel tasks -> close the DB."""
        if self._stopped:
            return
        self._stopped = True
        if self._db_check is not None:  # first, so it cannot report SERVING again
            self._db_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._db_check
        await set_serving(self.health, False)
        if self.http is not None:
            await self.http.stop(grace)
        await self.server.stop(grace)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.nats_submit is not None:
            await self.nats_submit.stop(grace)
        if self._listener is not None:
            await self._listener.stop()
        if self._duty_lock is not None:  # another process may take the duties over now
            await self._duty_lock.release()
        await self.store.dispose()
        for h in self._telemetry:
            h.shutdown()

    async def wait(self) -> None:
        await self.server.wait_for_termination()
