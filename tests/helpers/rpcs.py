"""Every RPC of every airlock.v1 service, found from the generated descriptors.

A new RPC (or a new service file) is picked up without touching the tests that use this.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

import airlock.v1


def services() -> list[ServiceDescriptor]:
    found: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(airlock.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"airlock.v1.{info.name}")
            found.update({s.full_name: s for s in module.DESCRIPTOR.services_by_name.values()})
    return [found[k] for k in sorted(found)]


@dataclass(frozen=True)
class Rpc:
    service: ServiceDescriptor
    method: MethodDescriptor

    @property
    def operation(self) -> str:
        """The key of ``server.domain.principal.PERMISSIONS`` ("RunService.GetRun")."""
        return f"{self.service.name}.{self.method.name}"

    @property
    def path(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.method.output_type)

    def callable(self, channel: grpc.aio.Channel, *, raw: bool = False) -> Callable[..., Any]:
        """A multi-callable; ``raw=True`` sends the request bytes exactly as given."""
        ser: Callable[[Any], bytes] = (lambda b: b) if raw else self.request_class.SerializeToString
        factory = channel.unary_stream if self.streaming else channel.unary_unary
        return factory(
            self.path, request_serializer=ser, response_deserializer=self.response_class.FromString
        )


def all_rpcs() -> list[Rpc]:
    out = [Rpc(s, m) for s in services() for m in s.methods]
    assert out, "no airlock.v1 services found"
    return out


async def call(
    rpc: Rpc,
    channel: grpc.aio.Channel,
    request: Any,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    deadline: float = 2.0,
    raw: bool = False,
) -> tuple[grpc.StatusCode, str]:
    """Status and details of one call. Streams: the first message (or end, or error) decides.

    ``deadline`` is the gRPC deadline in seconds. A stream still open and quiet when it
    passes counts as OK: the server accepted the call and is waiting for something to send.
    """
    fn = rpc.callable(channel, raw=raw)
    try:
        if not rpc.streaming:
            await fn(request, metadata=metadata, timeout=deadline)
            return grpc.StatusCode.OK, ""
        stream = fn(request, metadata=metadata, timeout=deadline)
        try:
            await stream.read()
            return grpc.StatusCode.OK, ""
        finally:
            stream.cancel()
    except grpc.aio.AioRpcError as e:
        if rpc.streaming and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, ""
        return e.code(), e.details() or ""
