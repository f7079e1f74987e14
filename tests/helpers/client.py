"""A typed bundle of stubs for one API key over one real channel."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from airlock.v1 import admin_service_pb2_grpc as admg
from airlock.v1 import approval_service_pb2_grpc as apsg
from airlock.v1 import audit_service_pb2_grpc as audg
from airlock.v1 import registry_service_pb2_grpc as regg
from airlock.v1 import run_service_pb2_grpc as rsg
from airlock.v1 import usage_service_pb2_grpc as usg
from airlock.v1 import workflow_service_pb2_grpc as wfsg


@dataclass
class Client:
    channel: grpc.aio.Channel
    token: str | None
    owner: str = ""

    def __post_init__(self) -> None:
        self.registry = regg.RegistryServiceStub(self.channel)
        self.runs = rsg.RunServiceStub(self.channel)
        self.approvals = apsg.ApprovalServiceStub(self.channel)
        self.admin = admg.AdminServiceStub(self.channel)
        self.workflows = wfsg.WorkflowServiceStub(self.channel)
        self.usage = usg.UsageServiceStub(self.channel)
        self.audit = audg.AuditServiceStub(self.channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()
