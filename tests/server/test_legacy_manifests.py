"""Manifests stored before today's schema rules still load; submit refuses what it cannot run.

Registration refuses remote references and patterns RE2 cannot run (tests in
test_schema_hardening.py). A version registered earlier may hold either: reading it must never
become INTERNAL, and a submit must neither fetch anything nor run a backtracking pattern.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import grpc
import pytest
import yaml

from agents.manifest import ManifestError, parse_manifest
from airlock.v1 import registry_service_pb2 as reg
from server.domain.models import AgentVersion
from tests.conftest import Plane, manifest_text
from tests.helpers.api import expect_code, submit_request


def _legacy_doc(port: int) -> dict[str, object]:
    doc = yaml.safe_load(manifest_text("legacy"))
    cap = doc["capabilities"][0]
    cap["input_schema"]["properties"]["text"]["pattern"] = "^(?=a)a+$"  # a look-ahead: not RE2
    doc["capabilities"].append({
        "name": "fetchy", "output_schema": {"type": "object"},
        "input_schema": {"$ref": f"http://127.0.0.1:{port}/schema.json"}})
    return doc


async def _store_directly(plane: Plane, doc: dict[str, object]) -> None:
    manifest = parse_manifest(doc, stored=True)
    now = datetime.now(UTC)
    async with plane.cp.store.transaction() as tx:
        await tx.registry.add_agent(name=manifest.name, description="", by="legacy", now=now)
        await tx.registry.add_version(AgentVersion(
            agent=manifest.name, version=manifest.version, image=manifest.image, image_digest="",
            risk=manifest.risk, manifest=manifest, deprecated=False, deprecation_reason="",
            created_at=now, created_by="legacy"))


async def test_a_legacy_manifest_loads_and_submit_refuses_cleanly(plane: Plane) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        doc = _legacy_doc(listener.getsockname()[1])
        with pytest.raises(ManifestError):  # today's registration refuses it
            parse_manifest(json.loads(json.dumps(doc)))
        await _store_directly(plane, doc)
        admin = plane.admin
        got = await admin.registry.GetAgentVersion(
            reg.GetAgentVersionRequest(name="legacy", version="1.0.0"), metadata=admin.md)
        assert [c.name for c in got.version.capabilities] == ["echo", "fetchy"]

        err = await expect_code(admin.runs.SubmitRun(
            submit_request("legacy", text="aaa"), metadata=admin.md), grpc.StatusCode.FAILED_PRECONDITION)
        assert "cannot be applied safely" in (err.details() or "")
        assert "not supported by RE2" in (err.details() or "")

        err = await expect_code(admin.runs.SubmitRun(
            submit_request("legacy", capability="fetchy", text="x"), metadata=admin.md),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert "cannot be resolved" in (err.details() or "")
        with pytest.raises(BlockingIOError):  # nobody ever dialled the listener
            listener.accept()
    finally:
        listener.close()
