"""The overview screen in a real browser: an admin opens it with runs waiting, a real executor
(the jail) then runs them, and the charts change as they finish, without a reload. A submitter
gets no overview link. Screenshots: tests/ui/screenshots/20-overview-*.png."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from agents.build import build_image
from airlock.v1 import run_service_pb2 as rs
from executor.runtime.jail import JailRuntime
from server.domain.policy import Policy
from tests.conftest import REPO, Plane, start_plane, test_policy
from tests.e2e.conftest import register, running_executor
from tests.executor import jail_support
from tests.ui.test_browser import Tab, browser  # noqa: F401  (the browser fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.podman]
jail_runtime = jail_support.jail_runtime  # fixture

BURNER = REPO / "tests" / "agents" / "burner"
RUNS = 4
QUOTAS = {"default": {"runs_in_flight": 10, "runs_per_day": 20, "cpu_seconds_per_day": 60}}


@pytest.fixture
async def plane(pg_url: str) -> AsyncIterator[Plane]:
    quotas = Policy.from_mapping({"quotas": QUOTAS}).quotas
    p = await start_plane(pg_url, policy=replace(test_policy(), quotas=quotas))
    yield p
    await p.close()


async def chart(tab: Tab, name: str) -> dict[str, Any]:
    raw = await tab.page.locator(f'figure[data-chart-name="{name}"]').get_attribute("data-chart")
    return json.loads(raw or "{}")


async def pixels(tab: Tab, name: str) -> str:
    """What the chart's canvas shows (its PNG), to tell a redraw from a chart left as it was."""
    return str(await tab.page.locator(f'figure[data-chart-name="{name}"] canvas').evaluate(
        "c => c.toDataURL()"))


async def wait_chart(tab: Tab, name: str, expected: str) -> None:
    """Until the chart's data (JSON text) contains ``expected`` (the view refreshes every 3 s)."""
    await tab.page.wait_for_function(
        "([n, e]) => (document.querySelector(`figure[data-chart-name=\"${n}\"]`)?.dataset.chart ?? '')"
        ".includes(e)", arg=[name, expected], timeout=60_000)


async def test_admin_sees_the_charts_change_as_runs_finish(browser: Any, plane: Plane,  # noqa: F811
                                                           jail_runtime: JailRuntime,
                                                           base_image: str) -> None:
    await asyncio.to_thread(build_image, BURNER, base_image=base_image)
    await register(plane.admin, BURNER)
    alice = await plane.key("alice", "submitter")
    for i in range(RUNS):
        await alice.runs.SubmitRun(rs.SubmitRunRequest(
            agent="burner", capability="burn",
            input_json=json.dumps({"cpu_seconds": 0.1 * (i + 1), "mib": 8})), metadata=alice.md)

    context = await browser.new_context(viewport={"width": 1366, "height": 1000})
    try:
        tab = Tab(await context.new_page(), f"http://{plane.cp.http_address}")
        assert plane.cp.admin_token
        await tab.sign_in(plane.cp.admin_token)
        await tab.page.click('nav a[href="/overview"]')
        await wait_chart(tab, "timeline", f'"QUEUED":{RUNS}')
        assert await chart(tab, "timeline") == {"QUEUED": RUNS}
        assert (await chart(tab, "owners"))["alice"] == {"inFlight": RUNS, "today": RUNS}
        assert await chart(tab, "durations") == {"burner": None}  # nothing ran yet
        before = {n: await pixels(tab, n) for n in ("timeline", "durations", "owners")}
        await tab.shot("20-overview-queued")

        async with running_executor(plane.url, jail_runtime):
            await wait_chart(tab, "timeline", f'"SUCCEEDED":{RUNS}')
            await wait_chart(tab, "owners", '"inFlight":0')
        assert await chart(tab, "timeline") == {"SUCCEEDED": RUNS}
        assert (await chart(tab, "durations"))["burner"] > 0  # a measured p50 per agent
        assert await chart(tab, "busiest") == {"burner": RUNS}
        assert await tab.page.locator(".overview-totals [data-total]").inner_text() == str(RUNS)
        after = {n: await pixels(tab, n) for n in before}
        assert all(after[n] != before[n] for n in before), "a chart was not redrawn"
        table = await tab.page.locator('figure[data-chart-name="owners"] table').inner_text()
        assert "alice" in table and f"{RUNS} / 20" in table
        await tab.shot("21-overview-finished")
        tab.check_clean()

        # A submitter has no overview link (and the server would refuse the analytics).
        bob = await plane.key("bob", "submitter")
        other = await browser.new_context()
        try:
            t2 = Tab(await other.new_page(), tab.base)
            await t2.sign_in(str(bob.token))
            assert await t2.page.locator('nav a[href="/overview"]').count() == 0
            assert await t2.page.locator('nav a[href="/runs"]').count() == 1
            t2.check_clean()
        finally:
            await other.close()
    finally:
        await context.close()
