"""Registry reads come from a per-process cache, and a registration or deprecation committed by
one control plane reaches every other one through PostgreSQL LISTEN/NOTIFY (no TTL: without
the notification a cached agent would stay stale for ever)."""

from __future__ import annotations

import pytest

from airlock.v1 import registry_service_pb2 as reg
from tests.conftest import manifest_text, start_plane
from tests.helpers.api import register, submit
from tests.helpers.client import Client
from tests.helpers.wait import assert_eventually

pytestmark = [pytest.mark.postgres]


async def versions(c: Client, name: str = "echo") -> list[tuple[str, bool]]:
    resp = await c.registry.GetAgent(reg.GetAgentRequest(name=name), metadata=c.md)
    return [(v.version, v.deprecated) for v in resp.versions]


async def test_a_registry_change_reaches_the_other_process_cache(pg_url: str) -> None:
    a = await start_plane(pg_url)
    b = await start_plane(pg_url)  # a second control plane on the same database
    try:
        await a.cp._listener.ready.wait()  # type: ignore[union-attr]
        await b.cp._listener.ready.wait()  # type: ignore[union-attr]
        admin_a = a.admin
        admin_b = b.client(a.cp.admin_token, "admin")
        await register(admin_a, manifest_text("echo", "1.0.0"))
        cache = b.cp.store.registry_cache
        assert await versions(admin_b) == [("1.0.0", False)]
        hits = cache.hits
        assert await versions(admin_b) == [("1.0.0", False)]
        assert cache.hits == hits + 1  # the second read came from memory

        # A new version registered through A: B drops its cached agent when NOTIFY arrives.
        await register(admin_a, manifest_text("echo", "1.1.0"))
        await assert_eventually(lambda: versions(admin_b),
                                lambda v: v == [("1.0.0", False), ("1.1.0", False)],
                                what="the new version seen through B")
        assert (await submit(admin_b)).run.version == "1.1.0"  # submit reads the same cache

        # Deprecated through A: B's next submit without a version takes 1.0.0 again.
        await admin_a.registry.DeprecateAgentVersion(
            reg.DeprecateAgentVersionRequest(name="echo", version="1.1.0", reason="bad"),
            metadata=admin_a.md)
        await assert_eventually(lambda: versions(admin_b),
                                lambda v: v == [("1.0.0", False), ("1.1.0", True)],
                                what="the deprecation seen through B")
        assert (await submit(admin_b)).run.version == "1.0.0"
        assert cache.hits > hits + 1
    finally:
        await b.close()
        await a.close()
