"""gRPC server spans: one SERVER span per RPC, named and attributed by OpenTelemetry's RPC
conventions. Transport code (it imports grpc); the process-wide tracer lives in
``server.telemetry``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from server.telemetry import context_from_headers, tracer, tracing_enabled

_server_address: tuple[str, int] | None = None

# gRPC codes that are a server-side error (OpenTelemetry's gRPC conventions); others, such
# as INVALID_ARGUMENT or NOT_FOUND, are the caller's: the server span stays UNSET.
_SERVER_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS"})


def set_server_address(host: str, port: int) -> None:
    """The address RPC server spans report as ``server.address``/``server.port`` (the listen
    address; a wildcard host is replaced by this host's name)."""
    global _server_address
    wildcard = host in ("", "0.0.0.0", "::", "[::]")
    _server_address = (socket.gethostname() if wildcard else host.strip("[]"), port)


def _peer(peer: str) -> tuple[str, int] | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> (address, port)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def rpc_attributes(full_method: str, system: str = "grpc") -> tuple[str, dict[str, Any]]:
    """``/pkg.Service/Method`` -> (span name ``pkg.Service/Method``, the ``rpc.*`` and
    ``server.*`` attributes)."""
    name = full_method.lstrip("/")
    service, _, method = name.rpartition("/")
    attrs: dict[str, Any] = {"rpc.system": system, "rpc.service": service, "rpc.method": method}
    if _server_address is not None:
        attrs["server.address"], attrs["server.port"] = _server_address
    return name, attrs


def _finish_rpc(s: Span, context: Any, error: BaseException | None) -> None:
    import grpc

    code = context.code() if hasattr(context, "code") else None
    if code is None:
        code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    s.set_attribute("rpc.grpc.status_code", code.value[0])
    if code.name in _SERVER_ERROR_CODES:
        details = context.details() if hasattr(context, "details") else None
        s.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}" if details else code.name))
        if error is not None and not _is_abort(error):
            s.record_exception(error)


def _is_abort(e: BaseException) -> bool:
    import grpc

    return isinstance(e, grpc.aio.AbortError)


def _rpc_span(details: Any, context: Any) -> Span:
    name, attrs = rpc_attributes(details.method)
    peer = _peer(context.peer() or "") if hasattr(context, "peer") else None
    if peer is not None:
        attrs["client.address"], attrs["client.port"] = peer
        attrs["network.peer.address"], attrs["network.peer.port"] = peer
    parent = context_from_headers({k: v for k, v in details.invocation_metadata or ()
                                   if isinstance(v, str)})
    return tracer().start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attrs)


def _tracing_interceptor() -> Any:
    import grpc

    class RpcTracingInterceptor(grpc.aio.ServerInterceptor):
        """One SERVER span per RPC, named and attributed by the OpenTelemetry RPC conventions,
        continuing the caller's ``traceparent`` metadata; current while the handler runs."""

        async def intercept_service(
            self, continuation: Callable[[Any], Awaitable[Any]], details: Any,
        ) -> Any:
            handler = await continuation(details)
            if handler is None:
                return handler
            if handler.unary_unary is not None:
                inner_uu = handler.unary_unary

                async def unary(request: Any, context: Any) -> Any:
                    s = _rpc_span(details, context)
                    error: BaseException | None = None
                    try:
                        with trace.use_span(s, end_on_exit=False, record_exception=False,
                                            set_status_on_exception=False):
                            return await inner_uu(request, context)
                    except BaseException as e:
                        error = e
                        raise
                    finally:
                        _finish_rpc(s, context, error)
                        s.end()

                return grpc.unary_unary_rpc_method_handler(
                    unary, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
            if handler.unary_stream is not None:
                inner_us = handler.unary_stream

                async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    s = _rpc_span(details, context)
                    error: BaseException | None = None
                    try:
                        items = inner_us(request, context).__aiter__()
                        while True:
                            # Current only while the handler runs, never across a yield:
                            # a context attached in one step must be detached in it.
                            with trace.use_span(s, end_on_exit=False, record_exception=False,
                                                set_status_on_exception=False):
                                try:
                                    item = await items.__anext__()
                                except StopAsyncIteration:
                                    break
                            yield item
                    except BaseException as e:
                        error = e
                        raise
                    finally:
                        _finish_rpc(s, context, error)
                        s.end()

                return grpc.unary_stream_rpc_method_handler(
                    stream, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
            return handler  # client or bidirectional streaming: none in Airlock's API

    return RpcTracingInterceptor()


def server_interceptors() -> list[Any]:
    """gRPC aio server interceptors for tracing (one span per RPC), or [] when tracing is off."""
    if not tracing_enabled():
        return []
    return [_tracing_interceptor()]


