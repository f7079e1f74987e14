"""Protobuf-in, protobuf-out handlers shared by grpc.aio and gRPC-Web (connectrpc).

Method names are the snake_case RPC names; each takes ``(request, ctx)`` so the classes also
satisfy connectrpc's generated protocols. Authentication and error mapping happen around
them, in each transport's thin adapter; the caller is ``current_principal()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from airlock.v1 import admin_service_pb2 as adm
from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import audit_service_pb2 as aus
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from airlock.v1 import usage_service_pb2 as us
from airlock.v1 import workflow_service_pb2 as wfs
from server.services.admin import AdminService, CreateKeyRequest, RevokeKeyRequest
from server.services.approvals import ApprovalService, DecideRequest, ListApprovalsRequest
from server.services.audit import AuditService, ListAuditRequest
from server.services.registry import (
    DeprecateRequest,
    ListAgentsRequest,
    RegisterRequest,
    RegistryService,
)
from server.services.runs import CancelRequest, ListRunsRequest, RunService, SubmitRequest
from server.services.usage import AnalyticsRequest, UsageService
from server.services.workflows import DecideWorkflowRequest, ListWorkflowsRequest, WorkflowService
from server.telemetry import link_run
from server.transport import convert as c
from server.transport import convert_workflows as cw
from server.transport.context import current_principal


@dataclass
class Services:
    registry: RegistryService
    runs: RunService
    approvals: ApprovalService
    admin: AdminService
    workflows: WorkflowService
    usage: UsageService
    audit: AuditService


class RegistryHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def register_agent_version(self, req: reg.RegisterAgentVersionRequest, ctx: Any = None
                                     ) -> reg.RegisterAgentVersionResponse:
        v = await self.s.registry.register(current_principal(), RegisterRequest(
            manifest=req.manifest, image_digest=req.image_digest))
        return reg.RegisterAgentVersionResponse(version=c.version_pb(v))

    async def get_agent(self, req: reg.GetAgentRequest, ctx: Any = None) -> reg.GetAgentResponse:
        agent, versions = await self.s.registry.get_agent(req.name)
        return reg.GetAgentResponse(agent=c.agent_pb(agent), versions=[c.version_pb(v) for v in versions])

    async def get_agent_version(self, req: reg.GetAgentVersionRequest, ctx: Any = None
                                ) -> reg.GetAgentVersionResponse:
        v = await self.s.registry.get_version(req.name, req.version)
        return reg.GetAgentVersionResponse(version=c.version_pb(v))

    async def list_agents(self, req: reg.ListAgentsRequest, ctx: Any = None) -> reg.ListAgentsResponse:
        page = await self.s.registry.list_agents(ListAgentsRequest(
            page_size=req.page_size, page_token=req.page_token, name_prefix=req.name_prefix,
            capability=req.capability, search=req.search))
        return reg.ListAgentsResponse(agents=[c.agent_pb(a) for a in page.items],
                                      next_page_token=page.next_token)

    async def deprecate_agent_version(self, req: reg.DeprecateAgentVersionRequest, ctx: Any = None
                                      ) -> reg.DeprecateAgentVersionResponse:
        v = await self.s.registry.deprecate(current_principal(), DeprecateRequest(
            name=req.name, version=req.version, reason=req.reason))
        return reg.DeprecateAgentVersionResponse(version=c.version_pb(v))


class RunHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def submit_run(self, req: rs.SubmitRunRequest, ctx: Any = None) -> rs.SubmitRunResponse:
        from server.telemetry import current_traceparent

        run, dedup = await self.s.runs.submit(current_principal(), SubmitRequest(
            agent=req.agent, version=req.version, capability=req.capability,
            input_json=req.input_json, idempotency_key=req.idempotency_key, network=req.network,
            secrets=tuple(req.secrets), limits=c.limits_from_pb(req.limits),
            traceparent=current_traceparent()))
        return rs.SubmitRunResponse(run=c.run_pb(run), deduplicated=dedup)

    async def get_run(self, req: rs.GetRunRequest, ctx: Any = None) -> rs.GetRunResponse:
        return rs.GetRunResponse(run=c.run_pb(await self.s.runs.get(current_principal(), req.run_id)))

    async def list_runs(self, req: rs.ListRunsRequest, ctx: Any = None) -> rs.ListRunsResponse:
        states = [c.state_from_pb(f"states[{i}]", s) for i, s in enumerate(req.states)]
        page = await self.s.runs.list(current_principal(), ListRunsRequest(
            page_size=req.page_size, page_token=req.page_token, agent=req.agent,
            states=tuple(states), submitter=req.submitter))
        return rs.ListRunsResponse(runs=[c.run_pb(r) for r in page.items], next_page_token=page.next_token)

    async def cancel_run(self, req: rs.CancelRunRequest, ctx: Any = None) -> rs.CancelRunResponse:
        run = await self.s.runs.cancel(current_principal(), CancelRequest(run_id=req.run_id,
                                                                          reason=req.reason))
        link_run(run.traceparent, run.id)
        return rs.CancelRunResponse(run=c.run_pb(run))

    async def watch_run(self, req: rs.WatchRunRequest, ctx: Any = None) -> AsyncIterator[rs.WatchRunResponse]:
        linked = False
        async for e in self.s.runs.watch(current_principal(), req.run_id, req.from_sequence):
            if not linked:  # this RPC is a trace of its own, linked to the run's
                link_run(e.traceparent, e.run_id)
                linked = True
            yield rs.WatchRunResponse(event=c.event_pb(e))

    async def get_run_result(self, req: rs.GetRunResultRequest, ctx: Any = None) -> rs.GetRunResultResponse:
        res = await self.s.runs.result(current_principal(), req.run_id)
        link_run(res.run.traceparent, res.run.id)
        return rs.GetRunResultResponse(
            run=c.run_pb(res.run), output_json=res.output_json or "", error_code=res.error_code,
            error_message=res.error_message, logs=res.logs.decode("utf-8", "replace"),
            logs_truncated=res.logs_truncated)


class ApprovalHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def list_approvals(self, req: aps.ListApprovalsRequest, ctx: Any = None) -> aps.ListApprovalsResponse:
        statuses = [c.status_from_pb(f"statuses[{i}]", v) for i, v in enumerate(req.statuses)]
        page = await self.s.approvals.list(current_principal(), ListApprovalsRequest(
            statuses=tuple(statuses), actionable_only=req.actionable_only,
            page_size=req.page_size, page_token=req.page_token))
        return aps.ListApprovalsResponse(approvals=[c.approval_pb(v) for v in page.items],
                                         next_page_token=page.next_token)

    async def get_approval(self, req: aps.GetApprovalRequest, ctx: Any = None) -> aps.GetApprovalResponse:
        view = await self.s.approvals.get(current_principal(), req.run_id)
        return aps.GetApprovalResponse(approval=c.approval_pb(view))

    async def approve(self, req: aps.ApproveRequest, ctx: Any = None) -> aps.ApproveResponse:
        v = await self.s.approvals.approve(current_principal(), DecideRequest(
            req.run_id, req.reason, req.action_digest))
        link_run(v.run.traceparent, v.run.id)
        return aps.ApproveResponse(approval=c.approval_pb(v))

    async def reject(self, req: aps.RejectRequest, ctx: Any = None) -> aps.RejectResponse:
        v = await self.s.approvals.reject(current_principal(), DecideRequest(req.run_id, req.reason))
        link_run(v.run.traceparent, v.run.id)
        return aps.RejectResponse(approval=c.approval_pb(v))

    async def watch_approvals(self, req: aps.WatchApprovalsRequest, ctx: Any = None
                              ) -> AsyncIterator[aps.WatchApprovalsResponse]:
        async for v in self.s.approvals.watch(current_principal()):
            yield aps.WatchApprovalsResponse(approval=c.approval_pb(v))


class WorkflowHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def submit_workflow(self, req: wfs.SubmitWorkflowRequest, ctx: Any = None
                              ) -> wfs.SubmitWorkflowResponse:
        from server.telemetry import current_traceparent

        wf, dedup = await self.s.workflows.submit(current_principal(), cw.submit_from_pb(
            req, current_traceparent()))
        return wfs.SubmitWorkflowResponse(workflow=cw.workflow_pb(wf), deduplicated=dedup)

    async def get_workflow(self, req: wfs.GetWorkflowRequest, ctx: Any = None
                           ) -> wfs.GetWorkflowResponse:
        wf = await self.s.workflows.get(current_principal(), req.workflow_id)
        return wfs.GetWorkflowResponse(workflow=cw.workflow_pb(wf))

    async def list_workflows(self, req: wfs.ListWorkflowsRequest, ctx: Any = None
                             ) -> wfs.ListWorkflowsResponse:
        states = [cw.state_from_pb(f"states[{i}]", s) for i, s in enumerate(req.states)]
        page = await self.s.workflows.list(current_principal(), ListWorkflowsRequest(
            page_size=req.page_size, page_token=req.page_token, states=tuple(states)))
        return wfs.ListWorkflowsResponse(workflows=[cw.workflow_pb(w) for w in page.items],
                                         next_page_token=page.next_token)

    async def watch_workflow(self, req: wfs.WatchWorkflowRequest, ctx: Any = None
                             ) -> AsyncIterator[wfs.WatchWorkflowResponse]:
        async for wf in self.s.workflows.watch(current_principal(), req.workflow_id):
            yield wfs.WatchWorkflowResponse(workflow=cw.workflow_pb(wf))

    async def cancel_workflow(self, req: wfs.CancelWorkflowRequest, ctx: Any = None
                              ) -> wfs.CancelWorkflowResponse:
        wf = await self.s.workflows.cancel(current_principal(), req.workflow_id, req.reason)
        return wfs.CancelWorkflowResponse(workflow=cw.workflow_pb(wf))

    async def approve_workflow(self, req: wfs.ApproveWorkflowRequest, ctx: Any = None
                               ) -> wfs.ApproveWorkflowResponse:
        wf, a = await self.s.workflows.approve(current_principal(), DecideWorkflowRequest(
            workflow_id=req.workflow_id, step=req.step, reason=req.reason,
            plan_digest=req.plan_digest))
        return wfs.ApproveWorkflowResponse(workflow=cw.workflow_pb(wf), approval=cw.approval_pb(a))

    async def reject_workflow(self, req: wfs.RejectWorkflowRequest, ctx: Any = None
                              ) -> wfs.RejectWorkflowResponse:
        wf, a = await self.s.workflows.reject(current_principal(), DecideWorkflowRequest(
            workflow_id=req.workflow_id, step=req.step, reason=req.reason))
        return wfs.RejectWorkflowResponse(workflow=cw.workflow_pb(wf), approval=cw.approval_pb(a))


class AdminHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def create_api_key(self, req: adm.CreateApiKeyRequest, ctx: Any = None) -> adm.CreateApiKeyResponse:
        role = c.role_from_pb("role", req.role)
        key, token = await self.s.admin.create_key(current_principal().owner,
                                                   CreateKeyRequest(owner=req.owner, role=role))
        return adm.CreateApiKeyResponse(key=c.key_pb(key), token=token)

    async def list_api_keys(self, req: adm.ListApiKeysRequest, ctx: Any = None) -> adm.ListApiKeysResponse:
        return adm.ListApiKeysResponse(keys=[c.key_pb(k) for k in await self.s.admin.list_keys()])

    async def revoke_api_key(self, req: adm.RevokeApiKeyRequest, ctx: Any = None) -> adm.RevokeApiKeyResponse:
        key = await self.s.admin.revoke_key(current_principal().owner, RevokeKeyRequest(req.id))
        return adm.RevokeApiKeyResponse(key=c.key_pb(key))

    async def list_executors(self, req: adm.ListExecutorsRequest, ctx: Any = None) -> adm.ListExecutorsResponse:
        rows = await self.s.admin.list_executors()
        return adm.ListExecutorsResponse(executors=[c.executor_pb(e, state) for e, state in rows])

    async def who_am_i(self, req: adm.WhoAmIRequest, ctx: Any = None) -> adm.WhoAmIResponse:
        key = await self.s.admin.get_key(current_principal().key_id)
        return adm.WhoAmIResponse(key=c.key_pb(key))


class UsageHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def get_usage(self, req: us.GetUsageRequest, ctx: Any = None) -> us.GetUsageResponse:
        report = await self.s.usage.usage(current_principal(), req.owner)
        return us.GetUsageResponse(owners=[c.owner_usage_pb(o.usage, o.quota) for o in report.owners],
                                   day_start_time=c.ts(report.day_start),
                                   day_end_time=c.ts(report.day_end))

    async def get_analytics(self, req: us.GetAnalyticsRequest, ctx: Any = None
                            ) -> us.GetAnalyticsResponse:
        a = await self.s.usage.analytics(AnalyticsRequest(
            start=c.time_from_pb("start_time", req.start_time) if req.HasField("start_time") else None,
            end=c.time_from_pb("end_time", req.end_time) if req.HasField("end_time") else None,
            bucket_seconds=req.bucket_seconds))
        return c.analytics_pb(a)


class AuditHandlers:
    def __init__(self, s: Services) -> None:
        self.s = s

    async def list_audit_records(self, req: aus.ListAuditRecordsRequest, ctx: Any = None
                                 ) -> aus.ListAuditRecordsResponse:
        page = await self.s.audit.list(current_principal(), ListAuditRequest(
            page_size=req.page_size, page_token=req.page_token, target=req.target,
            actor=req.actor,
            since=c.time_from_pb("since", req.since) if req.HasField("since") else None,
            until=c.time_from_pb("until", req.until) if req.HasField("until") else None))
        return aus.ListAuditRecordsResponse(records=[c.audit_pb(e) for e in page.items],
                                            next_page_token=page.next_token)

    async def verify_audit_trail(self, req: aus.VerifyAuditTrailRequest, ctx: Any = None
                                 ) -> aus.VerifyAuditTrailResponse:
        v = await self.s.audit.verify(current_principal(), req.run_id)
        return c.verification_pb(v)


# The proto files whose services the control plane serves, over grpc.aio (and reflection and
# health) and gRPC-Web alike: the one list.
PROTO_FILES = (reg, rs, aps, adm, wfs, us, aus)
SERVICES: tuple[ServiceDescriptor, ...] = tuple(
    svc for f in PROTO_FILES for svc in f.DESCRIPTOR.services_by_name.values())

# service full name -> handler class
HANDLERS: dict[str, type] = {
    "airlock.v1.RegistryService": RegistryHandlers,
    "airlock.v1.RunService": RunHandlers,
    "airlock.v1.ApprovalService": ApprovalHandlers,
    "airlock.v1.AdminService": AdminHandlers,
    "airlock.v1.WorkflowService": WorkflowHandlers,
    "airlock.v1.UsageService": UsageHandlers,
    "airlock.v1.AuditService": AuditHandlers,
}
