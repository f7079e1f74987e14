"""OpenTelemetry for every Airlock process: traces, metrics, and W3C trace context helpers.

Off by default: until :func:`setup_tracing` / :func:`setup_metrics` install an SDK provider,
the API's no-op (proxy) tracer and meter make every call here cheap, and the trace context
of a run still travels (a no-op span carries its remote parent's ``traceparent``).

One trace per run: the submitting RPC's span context is stored on the run (``traceparent``);
approval wait, lease, sandbox and completion spans, and the NATS publish spans, all use it as
their remote parent, whichever process creates them. The container gets the sandbox span's
context as ``TRACEPARENT``. RPCs about an existing run (Approve, WatchRun, GetRunResult, ...)
are traces of their own, with a span link to the run's trace.

Names and attributes follow OpenTelemetry's semantic conventions: RPC server spans are
``<package.Service>/<Method>`` with ``rpc.*`` and ``server.*``/``client.*`` attributes (not the
deprecated ``net.*``); publish spans are ``publish <subject>`` with ``messaging.*``; every
resource has ``service.name`` and ``service.version``. A run that ends FAILED, TIMED_OUT or
OOM_KILLED marks its spans ERROR with the state and reason as the description.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "airlock"

__all__ = [
    "ERROR_OUTCOMES",
    "Metrics",
    "RunUsage",
    "TelemetryHandle",
    "approval_closed",
    "context_from_headers",
    "context_from_traceparent",
    "current_traceparent",
    "link_run",
    "mark_outcome",
    "metrics_api",
    "metrics_enabled",
    "record_span",
    "resource_attributes",
    "run_ended",
    "setup_metrics",
    "setup_telemetry",
    "setup_tracing",
    "span",
    "traceparent_of",
    "tracer",
    "tracing_enabled",
]


# --- trace context -----------------------------------------------------------------------------


def current_traceparent() -> str:
    """The active span's ``traceparent`` header value, or "" when there is none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def traceparent_of(s: Span) -> str:
    """``traceparent`` of a span (also of a non-recording one that only carries a context)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(s))
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str | None) -> otel_context.Context | None:
    """A context whose (remote) parent is ``traceparent``; None when it is empty or invalid."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The remote parent carried by message headers (``traceparent``), if any."""
    if not headers:
        return None
    value = headers.get("traceparent") or headers.get("Traceparent") or ""
    return context_from_traceparent(value)


# --- tracing -----------------------------------------------------------------------------------

_lock = threading.Lock()
_active_exporters = 0  # setup_tracing handles not shut down yet


def tracer() -> Tracer:
    """Airlock's tracer (the global provider's; a proxy until tracing is set up)."""
    return trace.get_tracer(INSTRUMENTATION)


def tracing_enabled() -> bool:
    """True while an exporter installed by :func:`setup_tracing` is live in this process."""
    return _active_exporters > 0


@contextlib.contextmanager
def span(name: str, *, parent: str | otel_context.Context | None = None,
         kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
         start_time: datetime | None = None) -> Iterator[Span]:
    """A span named ``name``: child of ``parent`` (a ``traceparent`` string or a context)
    when given, else of the current span. It is the current span inside the block."""
    ctx = context_from_traceparent(parent) if isinstance(parent, str) else parent
    start_ns = int(start_time.timestamp() * 1e9) if start_time is not None else None
    with tracer().start_as_current_span(
        name, context=ctx, kind=kind, attributes=dict(attributes or {}), start_time=start_ns,
        record_exception=True, set_status_on_exception=True,
    ) as s:
        yield s


def record_span(name: str, *, parent: str, start: datetime, end: datetime,
                attributes: Mapping[str, Any] | None = None) -> None:
    """A span that already happened (e.g. the wait for an approval, known when it closes)."""
    ctx = context_from_traceparent(parent)
    s = tracer().start_span(name, context=ctx, attributes=dict(attributes or {}),
                            start_time=int(start.timestamp() * 1e9))
    s.end(end_time=int(end.timestamp() * 1e9))


@dataclass
class TelemetryHandle:
    """What a ``setup_*`` call installed; ``shutdown()`` flushes and stops it (idempotent)."""

    processor: Any = None  # tracing: the span processor added to the provider
    meter_provider: Any = None  # metrics: the provider behind metrics_api()

    def force_flush(self) -> None:
        if self.processor is not None:
            self.processor.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()

    def shutdown(self) -> None:
        global _active_exporters, _metrics, _metrics_on
        if self.processor is not None:
            self.processor.shutdown()
            self.processor = None
            with _lock:
                _active_exporters -= 1
        if self.meter_provider is not None:
            with _lock:
                if _metrics.provider is self.meter_provider:
                    _metrics, _metrics_on = Metrics(metrics.NoOpMeterProvider()), False
            self.meter_provider.shutdown()
            self.meter_provider = None


def service_version() -> str:
    """The installed ``airlock`` distribution's version ("0+unknown" when run from a bare tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airlock")
    except PackageNotFoundError:
        return "0+unknown"


def resource_attributes(service_name: str) -> dict[str, str]:
    """The resource of every Airlock process's telemetry."""
    return {"service.name": service_name, "service.namespace": "airlock",
            "service.version": service_version()}


def _otlp_url(endpoint: str, signal: str) -> str:
    """``http://collector:4318`` -> ``http://collector:4318/v1/<signal>`` (full URLs kept)."""
    e = endpoint.rstrip("/")
    return e if e.endswith(f"/v1/{signal}") else f"{e}/v1/{signal}"


def setup_tracing(service_name: str, otlp_endpoint: str | None = None, exporter: Any = None,
                  ) -> TelemetryHandle | None:
    """Export spans: to ``exporter`` (tests: an ``InMemorySpanExporter``, synchronously) or
    to OTLP/HTTP at ``otlp_endpoint`` (batched). Neither given: tracing stays off (None).

    The first call installs the process's SDK ``TracerProvider`` (``service.name`` =
    ``service_name``); later calls add their exporter to it (OpenTelemetry allows one global
    provider per process).
    """
    global _active_exporters
    if exporter is None and not otlp_endpoint:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is not None:
        processor: Any = SimpleSpanProcessor(exporter)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert otlp_endpoint
        url = _otlp_url(otlp_endpoint, "traces")
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=url))
    with _lock:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=Resource.create(resource_attributes(service_name)))
            trace.set_tracer_provider(provider)
        provider.add_span_processor(processor)
        _active_exporters += 1
    log.info("tracing on: %s", f"OTLP/HTTP {otlp_endpoint}" if exporter is None else "exporter")
    return TelemetryHandle(processor=processor)


# --- run outcomes and links ----------------------------------------------------------------------

# Outcomes that are failures of the run: its spans get ERROR status. CANCELLED (someone asked),
# REJECTED (an approver decided) and EXPIRED (nobody decided in time) are decisions, not
# faults: their spans keep the default (UNSET) status and say the outcome in attributes.
ERROR_OUTCOMES = frozenset({"FAILED", "TIMED_OUT", "OOM_KILLED"})


def mark_outcome(s: Span | None, state: str, reason: str = "") -> None:
    """Record a run's outcome on span ``s`` (None: the current span): ``airlock.outcome``, and
    ERROR status with "<STATE>: <reason>" as its description when the outcome is a failure."""
    s = s if s is not None else trace.get_current_span()
    state = str(state)  # a plain str, also for a StrEnum member
    s.set_attribute("airlock.outcome", state)
    if state in ERROR_OUTCOMES:
        s.set_status(Status(StatusCode.ERROR, f"{state}: {reason}" if reason else state))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def run_ended(*, run_id: str, traceparent: str, agent: str, capability: str, attempt: int,
              created_at: datetime, state: str, reason: str) -> None:
    """A run reached a terminal state (called after the commit): the span "airlock.run", from
    submission to the end, in the run's trace and carrying its outcome (ERROR for failures).

    The trace's root, the submitting RPC's span, ended when the submission was answered (and
    a span cannot change once ended), so this span is where a trace shows the run's outcome.
    """
    if not (traceparent and tracing_enabled()):
        return
    ctx = context_from_traceparent(traceparent)
    if ctx is None:
        return
    end = datetime.now(UTC)
    start = min(_aware(created_at), end)
    s = tracer().start_span("airlock.run", context=ctx, start_time=int(start.timestamp() * 1e9),
                            attributes={"airlock.run_id": run_id, "airlock.agent": agent,
                                        "airlock.capability": capability,
                                        "airlock.attempt": attempt, "airlock.reason": reason})
    mark_outcome(s, state, reason)
    s.end(end_time=int(end.timestamp() * 1e9))


def link_run(traceparent: str, run_id: str = "") -> None:
    """Link the current span (e.g. an Approve or GetRunResult RPC, a trace of its own) to the
    trace of the run it is about; nothing when the run is untraced or no span records."""
    ctx = context_from_traceparent(traceparent)
    current = trace.get_current_span()
    if ctx is None or not current.is_recording():
        return
    current.add_link(trace.get_current_span(ctx).get_span_context(),
                     {"airlock.run_id": run_id} if run_id else None)


# --- metrics -----------------------------------------------------------------------------------

# Buckets in seconds: approvals take minutes to hours; sandboxes start in tens of ms to seconds.
_APPROVAL_BUCKETS = (1, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A run's wall and CPU time: milliseconds (a probe) to the longest timeout a manifest may ask.
_RUN_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_MEMORY_BUCKETS = tuple(float(m << 20) for m in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))


@dataclass(frozen=True, slots=True)
class RunUsage:
    """What one finished run used, as the sandbox measured it, and whose run it was."""

    agent: str
    capability: str
    owner: str
    outcome: str
    wall_seconds: float | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    output_bytes: int | None
    log_bytes: int | None


class Metrics:
    """Airlock's instruments, created from one meter provider."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        self.provider = provider
        meter = provider.get_meter(INSTRUMENTATION)
        self._gauges: dict[str, int] = {}
        self.runs_finished = meter.create_counter(
            "airlock.runs.finished", unit="{run}",
            description="Runs that reached a terminal state, by outcome (the state)")
        self.approval_wait = meter.create_histogram(
            "airlock.approval.wait", unit="s",
            description="Time from submission to the approval's closing, by result",
            explicit_bucket_boundaries_advisory=list(_APPROVAL_BUCKETS))
        self.sandbox_start = meter.create_histogram(
            "airlock.sandbox.start_latency", unit="s",
            description="Time from a run's lease to its sandbox being launched by the runtime",
            explicit_bucket_boundaries_advisory=list(_LATENCY_BUCKETS))
        self.sandbox_duration = meter.create_histogram(
            "airlock.sandbox.duration", unit="s",
            description="Wall time of a sandbox, from launch to its result, by outcome",
            explicit_bucket_boundaries_advisory=list(_LATENCY_BUCKETS))
        # Usage per run (agent, capability, owner, outcome): totals as counters, the spread
        # per run as histograms. Only runs a sandbox measured are counted.
        self.usage_cpu = meter.create_counter(
            "airlock.usage.cpu_time", unit="s",
            description="CPU time used by runs' sandboxes (from each run's cgroup)")
        self.usage_wall = meter.create_counter(
            "airlock.usage.wall_time", unit="s", description="Wall time of runs' sandboxes")
        self.usage_output = meter.create_counter(
            "airlock.usage.output_size", unit="By", description="Bytes of output runs wrote")
        self.usage_logs = meter.create_counter(
            "airlock.usage.log_size", unit="By",
            description="Bytes runs wrote to stdout and stderr (kept or dropped)")
        self.run_cpu = meter.create_histogram(
            "airlock.run.cpu_time", unit="s", description="CPU time of one run's sandbox",
            explicit_bucket_boundaries_advisory=list(_RUN_SECONDS_BUCKETS))
        self.run_wall = meter.create_histogram(
            "airlock.run.wall_time", unit="s", description="Wall time of one run's sandbox",
            explicit_bucket_boundaries_advisory=list(_RUN_SECONDS_BUCKETS))
        self.run_memory = meter.create_histogram(
            "airlock.run.peak_memory", unit="By", description="Peak memory of one run's sandbox",
            explicit_bucket_boundaries_advisory=list(_MEMORY_BUCKETS))
        self.events_published = meter.create_counter(
            "airlock.events.published", unit="{event}",
            description="Run events acknowledged by JetStream")
        meter.create_observable_gauge(
            "airlock.runs.queue_depth", callbacks=[self._observe_gauges], unit="{run}",
            description="Runs waiting, by state (QUEUED, PENDING_APPROVAL); sampled")

    def set_queue_depth(self, state: str, n: int) -> None:
        """The sampled number of runs in ``state`` (observed at the next collection)."""
        self._gauges[state] = n

    def _observe_gauges(self, options: metrics.CallbackOptions) -> list[metrics.Observation]:
        return [metrics.Observation(n, {"state": s}) for s, n in self._gauges.items()]

    # Convenience recorders (attribute names in one place).

    def run_finished(self, state: str) -> None:
        self.runs_finished.add(1, {"outcome": state})

    def approval_closed(self, seconds: float, result: str) -> None:
        self.approval_wait.record(max(seconds, 0.0), {"result": result})

    def run_usage(self, u: RunUsage) -> None:
        """A measured run's usage; figures the sandbox did not measure are left out."""
        attrs = {"agent": u.agent, "capability": u.capability, "owner": u.owner,
                 "outcome": u.outcome}
        if u.cpu_seconds is not None:
            self.usage_cpu.add(u.cpu_seconds, attrs)
            self.run_cpu.record(u.cpu_seconds, attrs)
        if u.wall_seconds is not None:
            self.usage_wall.add(u.wall_seconds, attrs)
            self.run_wall.record(u.wall_seconds, attrs)
        if u.peak_memory_bytes is not None:
            self.run_memory.record(u.peak_memory_bytes, attrs)
        if u.output_bytes is not None:
            self.usage_output.add(u.output_bytes, attrs)
        if u.log_bytes is not None:
            self.usage_logs.add(u.log_bytes, attrs)


# No-op until set up. Airlock's instruments live on their own provider, not the global one:
# instruments made early on the global proxy would be registered twice once it is set.
_metrics = Metrics(metrics.NoOpMeterProvider())
_metrics_on = False


def metrics_api() -> Metrics:
    """The current instruments (no-op until :func:`setup_metrics`)."""
    return _metrics


def metrics_enabled() -> bool:
    return _metrics_on


def setup_metrics(service_name: str, otlp_endpoint: str | None = None, reader: Any = None,
                  *, export_interval_seconds: float = 15.0) -> TelemetryHandle | None:
    """Collect metrics with ``reader`` (tests: ``InMemoryMetricReader``) or export them to
    OTLP/HTTP at ``otlp_endpoint`` every ``export_interval_seconds``. Neither: off (None).

    The instruments returned by :func:`metrics_api` are re-created on the new provider on
    every call (a later call replaces the earlier reader).
    """
    global _metrics, _metrics_on
    if reader is None and not otlp_endpoint:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    if reader is None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        assert otlp_endpoint
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=_otlp_url(otlp_endpoint, "metrics")),
            export_interval_millis=export_interval_seconds * 1000)
    provider = MeterProvider(resource=Resource.create(resource_attributes(service_name)),
                             metric_readers=[reader])
    with _lock:
        _metrics = Metrics(provider)
        _metrics_on = True
    return TelemetryHandle(meter_provider=provider)


def approval_closed(*, run_id: str, traceparent: str, opened: datetime, closed: datetime,
                    result: str) -> None:
    """An approval request closed (approved, rejected, expired): the wait-time histogram, and
    a span from submission to the decision in the run's trace."""
    metrics_api().approval_closed((closed - opened).total_seconds(), result)
    if traceparent and tracing_enabled():
        record_span("airlock.approval.wait", parent=traceparent, start=opened, end=closed,
                    attributes={"airlock.run_id": run_id, "airlock.approval.result": result})


def setup_telemetry(service_name: str, otlp_endpoint: str | None) -> list[TelemetryHandle]:
    """Traces and metrics to OTLP/HTTP when ``otlp_endpoint`` is set; else nothing."""
    handles = [setup_tracing(service_name, otlp_endpoint),
               setup_metrics(service_name, otlp_endpoint)]
    return [h for h in handles if h is not None]
