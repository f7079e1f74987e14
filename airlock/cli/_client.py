"""A small gRPC client for the CLI: one channel, bearer metadata, the four service stubs.

Where to connect and as whom comes from the command line or the environment::

    AIRLOCK_ADDRESS   host:port of the control plane (default 127.0.0.1:50051)
    AIRLOCK_TOKEN     an API key (``airlock keys create`` or the first admin token)
    AIRLOCK_TLS_CA    PEM file of the CA that signed the server's certificate (enables TLS)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from airlock.cli._framework import CliError
from airlock.v1 import admin_service_pb2_grpc as admin_grpc
from airlock.v1 import approval_service_pb2_grpc as approval_grpc
from airlock.v1 import audit_service_pb2_grpc as audit_grpc
from airlock.v1 import registry_service_pb2_grpc as registry_grpc
from airlock.v1 import run_service_pb2_grpc as run_grpc
from airlock.v1 import usage_service_pb2_grpc as usage_grpc
from airlock.v1 import workflow_service_pb2_grpc as workflow_grpc

__all__ = [
    "DEFAULT_ADDRESS", "ENV_ADDRESS", "ENV_TLS_CA", "ENV_TOKEN", "ApiClient", "ClientConfigError",
    "Connection", "call", "connect",
]

DEFAULT_ADDRESS = "127.0.0.1:50051"
ENV_ADDRESS = "AIRLOCK_ADDRESS"
ENV_TOKEN = "AIRLOCK_TOKEN"
ENV_TLS_CA = "AIRLOCK_TLS_CA"
# Unary calls get a deadline so that a hung server never hangs the CLI; streams get none.
DEFAULT_TIMEOUT_SECONDS = 30.0

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


class ClientConfigError(CliError):
    """Raised when the connection settings are missing or unusable (no token, bad CA file)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the control plane is and which key to present (the token never appears in repr)."""

    address: str
    token: str
    tls_ca: Path | None = None

    def __repr__(self) -> str:
        return f"Connection(address={self.address!r}, token=***, tls_ca={self.tls_ca!r})"

    @classmethod
    def resolve(
        cls,
        *,
        address: str | None = None,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Connection:
        """Explicit values win over ``AIRLOCK_ADDRESS`` / ``AIRLOCK_TOKEN`` / ``AIRLOCK_TLS_CA``."""
        env = os.environ if env is None else env
        token = token or env.get(ENV_TOKEN, "")
        if not token.strip():
            raise ClientConfigError(
                f"no API token: set {ENV_TOKEN} (or pass --token); the first admin token is "
                "printed by `airlock serve` on first start"
            )
        ca = tls_ca or env.get(ENV_TLS_CA) or None
        return cls(
            address=address or env.get(ENV_ADDRESS) or DEFAULT_ADDRESS,
            token=token.strip(),
            tls_ca=Path(ca) if ca else None,
        )

    @property
    def metadata(self) -> Metadata:
        return (("authorization", f"Bearer {self.token}"),)

    def channel(self) -> grpc.aio.Channel:
        if self.tls_ca is None:
            return grpc.aio.insecure_channel(self.address)
        try:
            pem = self.tls_ca.read_bytes()
        except OSError as e:
            raise ClientConfigError(f"cannot read the TLS CA file {self.tls_ca}: {e}") from e
        return grpc.aio.secure_channel(self.address, grpc.ssl_channel_credentials(pem))


class ApiClient:
    """The services over one channel. Use as ``async with ApiClient(conn) as api:``."""

    def __init__(self, conn: Connection, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.conn = conn
        self.timeout = timeout
        self.metadata = conn.metadata
        self.channel = conn.channel()
        self.registry = registry_grpc.RegistryServiceStub(self.channel)
        self.runs = run_grpc.RunServiceStub(self.channel)
        self.approvals = approval_grpc.ApprovalServiceStub(self.channel)
        self.admin = admin_grpc.AdminServiceStub(self.channel)
        self.usage = usage_grpc.UsageServiceStub(self.channel)
        self.workflows = workflow_grpc.WorkflowServiceStub(self.channel)
        self.audit = audit_grpc.AuditServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def connect(ns: argparse.Namespace) -> ApiClient:
    """A client for the control plane from the command line and the environment."""
    conn = Connection.resolve(address=ns.address, token=ns.token, tls_ca=ns.tls_ca)
    return ApiClient(conn)


async def call(api: ApiClient, method: Callable[..., Awaitable[T]], request: Message) -> T:
    """One unary RPC with the key's metadata and the client's deadline."""
    return await method(request, metadata=api.metadata, timeout=api.timeout)
