"""ListAgents finds agents by what they can do: a capability name, and words in the names and
descriptions of agents and their capabilities; the filters page and bind their page tokens,
on both dialects, through real gRPC."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import grpc
from sqlalchemy import create_engine, insert, select

from airlock.v1 import registry_service_pb2 as reg
from server.store import tables as t
from server.store.engine import sync_url
from server.store.migrate import upgrade
from tests.conftest import Plane
from tests.helpers.api import expect_code, register
from tests.helpers.client import Client
from tests.server.test_migrations import empty_url  # noqa: F401  (the fixture, both dialects)

Code = grpc.StatusCode


def manifest(name: str, description: str, caps: dict[str, str], version: str = "1.0.0") -> str:
    """A manifest (JSON text) offering ``caps``: capability name -> description."""
    schema = {"type": "object"}
    return json.dumps({
        "name": name, "version": version, "description": description,
        "image": f"localhost/airlock/{name}:1",
        "capabilities": [{"name": c, "description": d, "input_schema": schema,
                          "output_schema": schema} for c, d in caps.items()],
    })


async def catalogue(plane: Plane) -> Client:
    admin = plane.admin
    await register(admin, manifest("mailer", "Sends mail for the billing team",
                                   {"send_email": "Send one e-mail to a customer",
                                    "bounce-report": "Summarise bounced mail"}))
    await register(admin, manifest("invoicer", "Makes invoices (PDF)",
                                   {"render_pdf": "Render an invoice as PDF",
                                    "send_email": "E-mail the invoice"}))
    await register(admin, manifest("summarise", "Text summaries 100%_literal",
                                   {"summarise": "Summarise a document"}))
    # Version 1 offered translate; version 2 does not; version 1 then deprecated: the agent
    # no longer offers translate, and its text is searched from live versions only.
    await register(admin, manifest("polyglot", "Language tools",
                                   {"translate": "Translate text to French", "detect": "x"}))
    await register(admin, manifest("polyglot", "Language tools",
                                   {"detect": "Detect the language"}, version="2.0.0"))
    await admin.registry.DeprecateAgentVersion(reg.DeprecateAgentVersionRequest(
        name="polyglot", version="1.0.0", reason="old"), metadata=admin.md)
    return admin


async def names(client: Client, **fields: object) -> list[str]:
    resp = await client.registry.ListAgents(reg.ListAgentsRequest(**fields), metadata=client.md)
    return [a.name for a in resp.agents]


async def test_filter_by_capability_and_search_text(plane: Plane) -> None:
    admin = await catalogue(plane)
    assert await names(admin) == ["invoicer", "mailer", "polyglot", "summarise"]

    assert await names(admin, capability="send_email") == ["invoicer", "mailer"]
    assert await names(admin, capability="render_pdf") == ["invoicer"]
    assert await names(admin, capability="detect") == ["polyglot"]
    assert await names(admin, capability="translate") == []  # only a deprecated version had it
    assert await names(admin, capability="send") == []  # an exact name, not a prefix
    assert await names(admin, capability="send_email", name_prefix="m") == ["mailer"]

    # Agent name, agent description, capability name, capability description; ASCII case.
    assert await names(admin, search="MAIL") == ["invoicer", "mailer"]  # names, descriptions
    assert await names(admin, search="billing") == ["mailer"]  # the agent's description
    assert await names(admin, search="render_pdf") == ["invoicer"]  # a capability name
    assert await names(admin, search="bounced") == ["mailer"]  # a capability's description
    assert await names(admin, search="summarise") == ["mailer", "summarise"]
    assert await names(admin, search="french") == []  # only in the deprecated version
    assert await names(admin, search="language") == ["polyglot"]
    # Every word must occur (anywhere in the agent's text), in any order.
    assert await names(admin, search="  invoice   e-mail ") == ["invoicer"]
    assert await names(admin, search="invoice billing") == []
    # LIKE's wildcards match literally.
    assert await names(admin, search="100%_lit") == ["summarise"]
    assert await names(admin, search="%") == ["summarise"]
    assert await names(admin, search="_") == ["invoicer", "mailer", "summarise"]
    # Both filters at once.
    assert await names(admin, capability="send_email", search="customer") == ["mailer"]
    assert await names(admin, search="") == await names(admin)

    # Any role may list agents; filters change nothing about that.
    viewer = await plane.key("vera", "viewer")
    assert await names(viewer, capability="send_email") == ["invoicer", "mailer"]


async def test_filtered_pages_and_their_tokens(plane: Plane) -> None:
    admin = plane.admin
    for i in range(5):
        await register(admin, manifest(f"tool-{i}", "a tool", {"fetch" if i % 2 else "store": "d"}))
    pages: list[list[str]] = []
    token = ""
    while True:
        resp = await admin.registry.ListAgents(reg.ListAgentsRequest(
            page_size=1, page_token=token, capability="fetch", search="tool"), metadata=admin.md)
        pages.append([a.name for a in resp.agents])
        token = resp.next_page_token
        if not token:
            break
    assert pages == [["tool-1"], ["tool-3"]]

    first = await admin.registry.ListAgents(reg.ListAgentsRequest(
        page_size=1, capability="fetch", search="tool"), metadata=admin.md)
    token = first.next_page_token
    for other in ({"capability": "store", "search": "tool"}, {"capability": "fetch"},
                  {"capability": "fetch", "search": "a tool"}):
        err = await expect_code(admin.registry.ListAgents(reg.ListAgentsRequest(
            page_size=1, page_token=token, **other), metadata=admin.md), Code.INVALID_ARGUMENT)
        assert err.details().startswith("page_token:"), err.details()
    # The same words, spaced differently, are the same query.
    again = await admin.registry.ListAgents(reg.ListAgentsRequest(
        page_size=1, page_token=token, capability="fetch", search=" tool "), metadata=admin.md)
    assert [a.name for a in again.agents] == ["tool-3"]


async def test_bad_filters_name_the_field(plane: Plane) -> None:
    admin = plane.admin
    bad = [
        ({"capability": "Send Email"}, "capability:"),
        ({"capability": "x" * 64}, "capability:"),
        ({"search": "x" * 201}, "search:"),
        ({"search": " ".join("w" * 9)}, "search:"),
        ({"search": "a\x00b"}, "search:"),
    ]
    for fields, prefix in bad:
        err = await expect_code(admin.registry.ListAgents(
            reg.ListAgentsRequest(**fields), metadata=admin.md), Code.INVALID_ARGUMENT)  # type: ignore[arg-type]
        assert err.details().startswith(prefix), (fields, err.details())


async def test_migration_fills_capabilities_of_versions_registered_before_it(
        empty_url: str) -> None:  # noqa: F811
    """Versions stored before the capability table existed are found after the upgrade."""
    await asyncio.to_thread(upgrade, empty_url, "0001")
    doc = json.loads(manifest("old", "registered before", {"a": "first", "b": "second"}))
    now = datetime.now(UTC)
    engine = create_engine(sync_url(empty_url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(t.agents).values(name="old", description="", created_at=now,
                                                 created_by="admin"))
            conn.execute(insert(t.agent_versions).values(
                agent_name="old", version="1.0.0", image="i", image_digest="", risk=1,
                manifest=doc, deprecated=False, deprecation_reason="", created_at=now,
                created_by="admin"))
        await asyncio.to_thread(upgrade, empty_url)
        with engine.connect() as conn:
            rows = conn.execute(select(t.agent_capabilities.c.name,
                                       t.agent_capabilities.c.description)
                                .order_by(t.agent_capabilities.c.name)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("a", "first"), ("b", "second")]
