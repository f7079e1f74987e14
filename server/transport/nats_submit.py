"""SubmitRun and SubmitWorkflow over NATS request/reply: a third transport of the control plane.

Request: the ``airlock.v1.SubmitRunRequest`` fields as JSON (protobuf JSON mapping; proto or
lowerCamel field names), published with a reply subject to ``airlock.submit`` (configurable).
Headers: ``Authorization: Bearer <api key>`` (required) and optionally ``traceparent``.

Reply (JSON, ``Content-Type: application/json``, header ``Airlock-Status`` = the code):
``{"run": {...}, "deduplicated": false}`` (a ``SubmitRunResponse``), or
``{"error": {"code": "INVALID_ARGUMENT", "message": "input_json: ..."}}`` with the same codes
and messages as gRPC (``server.transport.errors``). The same role table, validation, policy and
idempotency apply, through the same handler, so a rejected request creates nothing.

Workflows: an ``airlock.v1.SubmitWorkflowRequest`` as JSON to ``<subject>.workflow``
(``airlock.submit.workflow``); the reply is a ``SubmitWorkflowResponse`` or an error, as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from opentelemetry.trace import SpanKind

from airlock.v1 import run_service_pb2 as rs
from airlock.v1 import workflow_service_pb2 as wfs
from server.domain.errors import AirlockError, InvalidArgument
from server.telemetry import context_from_headers, span
from server.transport.auth import authorize
from server.transport.context import reset_principal, set_principal
from server.transport.errors import to_status
from server.transport.handlers import RunHandlers, Services, WorkflowHandlers
from server.wire.event_codec import CONTENT_TYPE, to_json_bytes

log = logging.getLogger(__name__)

OPERATION = "RunService.SubmitRun"
WORKFLOW_SUFFIX = ".workflow"  # <subject>.workflow takes SubmitWorkflowRequests
DEFAULT_SUBJECT = "airlock.submit"
DEFAULT_QUEUE = "airlock-submit"  # control-plane replicas share the requests
STATUS_HEADER = "Airlock-Status"
MAX_CONCURRENT = 64

__all__ = ["DEFAULT_SUBJECT", "NatsSubmitResponder", "handle_submit"]


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def _parse(data: bytes, into: Any = None) -> Any:
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidArgument("request", "is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise InvalidArgument("request", f"not JSON ({str(e)[:200]})") from None
    msg = into if into is not None else rs.SubmitRunRequest()
    kind = type(msg).__name__
    if not isinstance(doc, dict):
        raise InvalidArgument("request", f"must be a JSON object (a {kind})")
    try:
        return json_format.ParseDict(doc, msg)
    except (json_format.ParseError, ValueError, RecursionError) as e:
        problem = f"not a {kind}: {str(e)[:300]}"
        raise InvalidArgument("request", problem) from None


def error_reply(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}},
                      ensure_ascii=False).encode()


async def handle_submit(services: Services, data: bytes,
                        headers: Mapping[str, str] | None, *, workflow: bool = False
                        ) -> tuple[str, bytes]:
    """One request (a run's, or with ``workflow`` a workflow's) -> (status code name, reply
    body). Never raises."""
    parent = context_from_headers(headers)
    service, method = (("WorkflowService", "SubmitWorkflow") if workflow
                       else ("RunService", "SubmitRun"))
    with span(f"airlock.v1.{service}/{method}", parent=parent, kind=SpanKind.SERVER,
              attributes={"rpc.system": "nats", "rpc.service": f"airlock.v1.{service}",
                          "rpc.method": method}) as s:
        try:
            req = _parse(data, wfs.SubmitWorkflowRequest() if workflow else None)
            auth = _header(headers, "authorization")
            principal = await authorize(services.admin, f"{service}.{method}", auth)
            token = set_principal(principal)
            try:
                resp: Any = await (WorkflowHandlers(services).submit_workflow(req) if workflow
                                   else RunHandlers(services).submit_run(req))
            finally:
                reset_principal(token)
        except Exception as e:  # every error becomes a reply, as on gRPC
            code, message = to_status(e)
            s.set_attribute("rpc.grpc.status_code", code.value[0])
            if not isinstance(e, AirlockError):
                log.warning("NATS submit failed: %s", code.name)
            return code.name, error_reply(code.name, message)
        if workflow:
            s.set_attribute("airlock.workflow_id", resp.workflow.id)
        else:
            s.set_attribute("airlock.run_id", resp.run.id)
        return "OK", to_json_bytes(resp)


class NatsSubmitResponder:
    """Answers submit requests on ``subject`` (queue group ``queue``).

    ``start()`` returns at once: the connection is made (and re-made) in the background, so
    the control plane starts and serves gRPC while NATS is down. ``stop()`` drains.
    """

    def __init__(self, services: Services, servers: list[str], *, subject: str = DEFAULT_SUBJECT,
                 queue: str = DEFAULT_QUEUE) -> None:
        self.services = services
        self.servers = servers
        self.subject = subject
        self.queue = queue
        self.nc: Any = None
        self._sub: Any = None
        self._wf_sub: Any = None
        self.ready = asyncio.Event()  # subscribed
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(MAX_CONCURRENT)

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="nats-submit")

    async def _connect(self) -> None:
        import nats

        delay = 0.1
        while True:
            try:
                self.nc = await nats.connect(servers=self.servers, name="airlock-submit",
                                             connect_timeout=2, allow_reconnect=True,
                                             max_reconnect_attempts=-1, reconnect_time_wait=0.5)
                self._sub = await self.nc.subscribe(self.subject, queue=self.queue,
                                                    cb=self._on_msg)
                self._wf_sub = await self.nc.subscribe(self.subject + WORKFLOW_SUFFIX,
                                                       queue=self.queue, cb=self._on_msg)
                await self.nc.flush()
                self.ready.set()
                log.info("NATS submit: answering on %s", self.subject)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("NATS submit: cannot connect (%s: %s); retrying in %.1fs",
                            type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_msg(self, msg: Any) -> None:
        # The client runs callbacks one at a time; serve each request in its own task.
        await self._limit.acquire()
        task = asyncio.create_task(self._serve(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve(self, msg: Any) -> None:
        try:
            code, body = await handle_submit(self.services, msg.data, msg.headers,
                                             workflow=msg.subject != self.subject)
            if msg.reply:
                await self.nc.publish(msg.reply, body, headers={
                    "Content-Type": CONTENT_TYPE, STATUS_HEADER: code})
        except Exception:
            log.exception("NATS submit: could not reply")
        finally:
            self._limit.release()

    async def stop(self, grace: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.nc is not None and not self.nc.is_closed:
            for sub in (self._sub, self._wf_sub):  # no new requests; taken ones get replies
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sub.drain(), grace)
            if self._inflight:
                await asyncio.wait(set(self._inflight), timeout=grace)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), grace)
            with contextlib.suppress(Exception):
                await self.nc.close()
