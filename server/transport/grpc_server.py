"""grpc.aio adapter: registers the shared handlers, and one interceptor for auth and errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from server.logs import REQUEST_ID_HEADER, request_context, request_id_for
from server.services.admin import AdminService
from server.transport.auth import PACKAGE, authorize, operation_of
from server.transport.context import reset_principal, set_principal
from server.transport.errors import bad_protobuf, log_failure, to_status
from server.transport.handlers import HANDLERS, SERVICES, Services
from server.transport.streams import recheck_period, rechecked

log = logging.getLogger(__name__)


class BadRequest:
    """Stands in for a request whose bytes could not be parsed (answered INVALID_ARGUMENT)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _deserializer(cls: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, RecursionError):
            return BadRequest(bad_protobuf(cls.DESCRIPTOR, data))

    return parse


def metadata_value(metadata: Any, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name:
            return str(value)
    return None


def generic_handlers(services: Services) -> list[grpc.GenericRpcHandler]:
    """One generic handler per service, built from the descriptors; methods call handlers."""
    out = []
    for svc in SERVICES:
        impl = HANDLERS[svc.full_name](services)
        methods = {}
        for m in svc.methods:
            fn = getattr(impl, _snake(m.name))
            req_cls = _message_class(m.input_type)
            resp_cls = _message_class(m.output_type)
            factory = (grpc.unary_stream_rpc_method_handler if m.server_streaming
                       else grpc.unary_unary_rpc_method_handler)
            methods[m.name] = factory(fn, request_deserializer=_deserializer(req_cls),
                                      response_serializer=resp_cls.SerializeToString)
        out.append(grpc.method_handlers_generic_handler(svc.full_name, methods))
    return out


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


def _message_class(desc: Any) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates the bearer key, checks the role table, maps domain errors to codes."""

    def __init__(self, admin: AdminService) -> None:
        self.admin = admin

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/" + PACKAGE):
            return handler  # health and reflection are public
        op = operation_of(details.method)
        header = metadata_value(details.invocation_metadata, "authorization")
        request_id = request_id_for(metadata_value(details.invocation_metadata, REQUEST_ID_HEADER))
        request_id_md = ((REQUEST_ID_HEADER, request_id),)

        async def fail(context: grpc.aio.ServicerContext, code: grpc.StatusCode, msg: str) -> None:
            log_failure(details.method, code.name, msg)
            await context.abort(code, msg, trailing_metadata=request_id_md)

        async def check(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # The request id as a header and a trailer, whatever the outcome.
            await context.send_initial_metadata(request_id_md)
            context.set_trailing_metadata(request_id_md)
            # The caller first, then its request: bad bytes without a key are UNAUTHENTICATED.
            try:
                principal = await authorize(self.admin, op, header)
            except Exception as e:  # also a database failure: never let grpc send its text
                await fail(context, *to_status(e))
            if isinstance(request, BadRequest):
                await fail(context, grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return set_principal(principal)

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with request_context(request_id):
                    tok = await check(request, context)
                    try:
                        return await inner_uu(request, context)
                    except grpc.aio.AbortError:
                        raise
                    except Exception as e:
                        await fail(context, *to_status(e))
                    finally:
                        reset_principal(tok)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

        inner_us = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with request_context(request_id):
                tok = await check(request, context)
                try:
                    # aclosing: when gRPC closes this stream, the inner ones (and the task
                    # reading the handler) are closed now, not whenever they are collected.
                    async with contextlib.aclosing(rechecked(
                            inner_us(request, context), lambda: authorize(self.admin, op, header),
                            recheck_period(self.admin))) as items:
                        async for item in items:
                            yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as e:
                    await fail(context, *to_status(e))
                finally:
                    reset_principal(tok)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def build_server(services: Services, *, max_message_bytes: int,
                 extra_interceptors: list[grpc.aio.ServerInterceptor] | None = None,
                 reuse_port: bool = False,
                 ) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """``reuse_port``: several serving processes bind the same port (off by default, so a
    second server on a taken port fails instead of silently sharing it)."""
    server = grpc.aio.server(
        interceptors=[*(extra_interceptors or []), AuthInterceptor(services.admin)],
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes),
                 ("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    server.add_generic_rpc_handlers(generic_handlers(services))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [svc.full_name for svc in SERVICES]
    enable_reflection([*names, health.SERVICE_NAME], server)
    return server, health_servicer


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _reflection_v1_descriptor() -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` to the default pool (grpcio-reflection ships
    only v1alpha; v1 is the same file under another package, message for message)."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2 as alpha

    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
        return
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto()
    alpha.DESCRIPTOR.CopyToProto(fdp)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    fdp.name, fdp.package = name, "grpc.reflection.v1"
    fdp.ClearField("options")
    for msg in fdp.message_type:
        for f in msg.field:
            if f.HasField("type_name"):
                f.type_name = f.type_name.replace(old, new)
    for svc in fdp.service:
        svc.ClearField("options")
        for m in svc.method:
            m.input_type = m.input_type.replace(old, new)
            m.output_type = m.output_type.replace(old, new)
    pool.AddSerializedFile(fdp.SerializeToString())


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Server reflection as ``grpc.reflection.v1`` and ``v1alpha`` (older clients).

    One servicer answers both: the two protocols' messages are identical on the wire.
    """
    from grpc_reflection.v1alpha import reflection_pb2 as alpha

    _reflection_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer(
        (*service_names, REFLECTION_V1, reflection.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=alpha.ServerReflectionRequest.FromString,
            response_serializer=alpha.ServerReflectionResponse.SerializeToString),
    })])


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set("", status)
    for svc in SERVICES:
        await health_servicer.set(svc.full_name, status)
