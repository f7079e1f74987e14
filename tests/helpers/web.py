"""gRPC-Web clients (connectrpc's Python client, protocol GRPC_WEB) for one API key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectrpc.protocol import ProtocolType

from airlock.v1 import admin_service_connect as admc
from airlock.v1 import approval_service_connect as apsc
from airlock.v1 import registry_service_connect as regc
from airlock.v1 import run_service_connect as rsc
from airlock.v1 import usage_service_connect as usc


@dataclass
class WebClient:
    """Stubs for the four services over gRPC-Web, like a browser (no request compression)."""

    base_url: str
    token: str | None
    owner: str = ""
    _clients: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        opts: dict[str, Any] = {"protocol": ProtocolType.GRPC_WEB, "send_compression": None}
        self.registry = regc.RegistryServiceClient(self.base_url, **opts)
        self.runs = rsc.RunServiceClient(self.base_url, **opts)
        self.approvals = apsc.ApprovalServiceClient(self.base_url, **opts)
        self.admin = admc.AdminServiceClient(self.base_url, **opts)
        self.usage = usc.UsageServiceClient(self.base_url, **opts)
        self._clients = [self.registry, self.runs, self.approvals, self.admin, self.usage]

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    async def close(self) -> None:
        for c in self._clients:
            await c.close()
