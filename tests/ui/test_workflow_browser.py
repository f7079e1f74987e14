"""Workflows in a real browser: an approver sees a new plan appear live as a graph (each step
with its risk and limits), approves it, and watches its steps turn green as real sandboxes run
them."""

from __future__ import annotations

import pytest

from executor.runtime.podman import PodmanRuntime
from tests.conftest import Plane
from tests.e2e.conftest import SAMPLES, running_executor
from tests.e2e.conftest import register as register_sample
from tests.e2e.test_workflows_execute import diamond
from tests.executor.conftest import sample_images  # noqa: F401  (fixture)
from tests.helpers.workflows import submit_workflow
from tests.ui.test_browser import Tab, browser, tab  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.podman]


async def test_approver_sees_plan_live_as_a_graph_approves_and_steps_turn_green(
        tab: Tab, pg_plane: Plane, podman_runtime: PodmanRuntime,  # noqa: F811
        sample_images: dict[str, str]) -> None:  # noqa: F811
    await register_sample(pg_plane.admin, SAMPLES / "text-transform", **{"risk: low": "risk: high"})
    await register_sample(pg_plane.admin, SAMPLES / "text-stats")
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    await tab.sign_in(bob.token or "")
    await tab.page.click('nav a[href="/workflows"]')
    await tab.page.wait_for_selector("text=No workflows yet.")
    await tab.page.evaluate("window.__sameDocument = true")

    w = (await submit_workflow(alice, diamond())).workflow  # after the page is open
    link = tab.page.locator(f'a[href="/workflows/{w.id}"]')
    await link.wait_for()  # appeared by itself
    assert "PENDING_APPROVAL" in await link.locator("xpath=ancestor::tr").inner_text()
    await link.click()
    nodes = tab.page.locator("svg.wf-graph .wf-node")
    await tab.page.wait_for_selector('.page.workflow[data-stream="live"]')
    assert await nodes.count() == 4
    assert await tab.page.locator("svg.wf-graph .wf-edge").count() == 4  # a→b, a→c, b→d, c→d
    b = tab.page.locator('.wf-node[data-step="b"]')
    text = await b.text_content() or ""
    assert "text-transform 1.0.0" in text and "High" in text and "64 MiB" in text, text
    assert await b.get_attribute("data-state") == "WAITING"
    # The layout is a DAG drawn left to right: a before b and c, which come before d.
    xs = {s: (await tab.page.locator(f'.wf-node[data-step="{s}"]').bounding_box())["x"]
          for s in "abcd"}
    assert xs["a"] < xs["b"] == xs["c"] < xs["d"], xs
    await tab.shot("wf-01-plan")

    await tab.page.fill("#reason-plan", "reviewed the plan")
    await tab.page.click('[data-decide="approve-plan"]')
    await tab.page.wait_for_selector("text=The plan approved.")
    async with running_executor(pg_plane.url, podman_runtime, slots=2):
        await tab.page.wait_for_function(
            "() => [...document.querySelectorAll('.wf-node')]"
            ".every(n => n.getAttribute('data-state') === 'SUCCEEDED')", timeout=120_000)
    assert await tab.page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    fill = await tab.page.eval_on_selector('.wf-node[data-step="d"] rect',
                                           "r => getComputedStyle(r).fill")
    assert fill == "rgb(218, 251, 225)", fill  # green
    await tab.page.wait_for_selector("text=Ended: SUCCEEDED")
    assert "DLROW GIB OLLEH" in await tab.page.locator("#wf-outputs").inner_text()
    await tab.shot("wf-02-done")
    tab.check_clean()
