"""The approvers' UI in a real browser (Debian chromium through Playwright) on a real control plane.

Needs /usr/bin/chromium (``apt-get install chromium``), the ``playwright`` Python package (its
own browser download is not used) and a built UI (``ui/build.sh``). Screenshots of every screen
go to tests/ui/screenshots/, with the bundle size and first-load timings in metrics.json.
"""

from __future__ import annotations

import gzip
import json
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import registry_service_pb2 as reg
from airlock.v1 import run_service_pb2 as rs
from airlock.v1.run_pb2 import RunState
from executor.runtime.podman import PodmanRuntime
from server.domain.models import ExecutorInfo
from server.transport.grpcweb import WEBUI_DIR
from tests.conftest import Plane, manifest_text
from tests.e2e.conftest import SAMPLES, running_executor
from tests.e2e.conftest import register as register_sample
from tests.helpers.client import Client
from tests.helpers.requirements import require

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent / "screenshots"
INJECTION = "<img src=x onerror=alert(1)><script>alert(2)</script>"

# What an approved run becomes. QUEUED while no executor runs in these tests; once one does,
# pass "SUCCEEDED" (the helper waits for any state and the run page shows it live).

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

require("Chromium", None if CHROMIUM.exists() else
        f"no {CHROMIUM} (Debian package chromium; scripts/setup.sh --test installs it)", module=True)
try:
    import playwright.async_api as playwright_api
except ImportError as e:
    require("the playwright package", f"{e} (scripts/setup.sh --test installs it)", module=True)
require("the built web UI", None if (WEBUI_DIR / "index.html").exists() else
        f"no {WEBUI_DIR / 'index.html'}: run ui/build.sh", module=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        await b.close()


class Tab:
    """One browser tab on the UI, recording dialogs and page errors (none may happen)."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(15_000)

    async def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    async def sign_in(self, token: str) -> None:
        await self.page.goto(self.base + "/")
        await self.page.fill("#api-key", token)
        await self.page.click("form.signin button[type=submit]")
        await self.page.wait_for_selector("#whoami")

    async def live_approvals(self) -> None:
        await self.page.wait_for_selector(".approvals[data-stream=live]")

    def card(self, run_id: str) -> Any:
        return self.page.locator(f'article.card[data-run="{run_id}"]')

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def check_clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.errors == [], f"page errors: {self.errors}"


@pytest.fixture
async def tab(browser: Any, pg_plane: Plane) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport={"width": 1366, "height": 860})
    page = await context.new_page()
    yield Tab(page, f"http://{pg_plane.cp.http_address}")
    await context.close()


async def register_risky(plane: Plane) -> None:
    admin = plane.admin
    await admin.registry.RegisterAgentVersion(
        reg.RegisterAgentVersionRequest(manifest=manifest_text("risky", risk="high")),
        metadata=admin.md)


async def submit(client: Client, text: str = "please") -> rs.Run:
    resp = await client.runs.SubmitRun(rs.SubmitRunRequest(
        agent="risky", capability="echo", input_json=json.dumps({"text": text})),
        metadata=client.md)
    assert resp.run.state == RunState.RUN_STATE_PENDING_APPROVAL
    return resp.run


async def run_state(plane: Plane, run_id: str) -> str:
    admin = plane.admin
    run = (await admin.runs.GetRun(rs.GetRunRequest(run_id=run_id), metadata=admin.md)).run
    return RunState.Name(run.state).removeprefix("RUN_STATE_")


async def expect_run_page_state(tab: Tab, run_id: str, state: str,
                                timeout_ms: int = 60_000) -> None:
    """Opens the run page and waits until the live timeline shows ``state``."""
    await tab.page.goto(f"{tab.base}/runs/{run_id}")
    await tab.page.wait_for_selector(f'.page.run[data-state="{state}"]', timeout=timeout_ms)
    await tab.page.wait_for_selector(f'#timeline li[data-state="{state}"]', timeout=timeout_ms)


@pytest.mark.podman
async def test_approver_sees_new_run_live_approves_and_it_succeeds(
        tab: Tab, pg_plane: Plane, podman_runtime: PodmanRuntime, sample_images: dict[str, str]) -> None:
    """A real agent (text-transform, declared high risk here) runs in podman after approval."""
    await register_sample(pg_plane.admin, SAMPLES / "text-transform", **{"risk: low": "risk: high"})
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")

    async def submit(client: Client, text: str) -> rs.Run:
        resp = await client.runs.SubmitRun(rs.SubmitRunRequest(
            agent="text-transform", capability="uppercase", input_json=json.dumps({"text": text})),
            metadata=client.md)
        assert resp.run.state == RunState.RUN_STATE_PENDING_APPROVAL
        return resp.run

    await tab.page.goto(tab.base + "/")
    await tab.page.wait_for_selector("#api-key")
    await tab.shot("01-sign-in")
    await tab.sign_in(bob.token or "")
    await tab.live_approvals()
    await tab.page.evaluate("window.__sameDocument = true")
    await tab.shot("02-approvals-empty")

    first = await submit(alice, "first")  # after the page is open
    await tab.card(first.id).wait_for()
    y_before = (await tab.card(first.id).bounding_box())["y"]
    second = await submit(alice, "second")
    await tab.card(second.id).wait_for()
    assert await tab.page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert (await tab.card(first.id).bounding_box())["y"] == y_before, "a new card moved the list"
    card = tab.card(first.id)
    assert "High risk" in await card.inner_text()
    assert "0 of 1" in await card.locator(".count").inner_text()
    assert "alice" in await card.inner_text()
    left1 = await card.locator(".countdown").inner_text()
    # The countdown ticks every second: it must show another value within a few ticks.
    countdown = await card.locator(".countdown").element_handle()
    await tab.page.wait_for_function("([el, before]) => el.textContent !== before",
                                     arg=[countdown, left1], timeout=5000)
    await tab.shot("03-approvals-live")

    await card.locator("textarea").fill("looks fine")
    await card.get_by_role("button", name="Approve").click()
    await tab.page.wait_for_selector(f"text=You approved {first.id}")
    await card.wait_for(state="detached")
    closed = tab.page.locator(f'#closed-list li[data-run="{first.id}"]')
    await closed.wait_for()
    assert "APPROVED" in await closed.inner_text()
    await tab.shot("04-approved")
    assert await run_state(pg_plane, first.id) in {"QUEUED", "RUNNING", "SUCCEEDED"}

    async with running_executor(pg_plane.url, podman_runtime):
        await expect_run_page_state(tab, first.id, "SUCCEEDED")
        await tab.page.wait_for_selector("text=FIRST", timeout=30_000)  # the agent's output
    assert "looks fine" in await tab.page.locator("#s-approval").locator("..").inner_text()
    await tab.shot("05-run")
    tab.check_clean()


async def test_self_approval_is_refused_with_the_server_message(tab: Tab, pg_plane: Plane) -> None:
    await register_risky(pg_plane)
    alice_submits = await pg_plane.key("alice", "submitter")
    alice_approves = await pg_plane.key("alice", "approver")
    run = await submit(alice_submits)
    await tab.sign_in(alice_approves.token or "")
    card = tab.card(run.id)
    await card.wait_for()
    assert "You submitted this run" in await card.inner_text()
    await card.get_by_role("button", name="Approve").click()
    error = card.locator(".card-error")
    await error.filter(has_text="cannot decide").wait_for()
    text = await error.inner_text()
    assert text.startswith("Refused:") and f"alice submitted run {run.id}" in text
    await tab.shot("06-self-approval-refused")
    assert await run_state(pg_plane, run.id) == "PENDING_APPROVAL"
    tab.check_clean()


async def test_rejection_needs_a_reason(tab: Tab, pg_plane: Plane) -> None:
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    run = await submit(alice)
    sent: list[str] = []
    tab.page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/Reject") else None)
    await tab.sign_in(bob.token or "")
    card = tab.card(run.id)
    await card.wait_for()
    await card.get_by_role("button", name="Reject").click()
    await card.locator(".card-error").filter(has_text="A reason is required").wait_for()
    assert await card.locator("textarea").get_attribute("aria-invalid") == "true"
    assert await tab.page.evaluate("document.activeElement.tagName") == "TEXTAREA"
    await tab.shot("07-reject-needs-reason")
    assert sent == [], "the UI sent a rejection without a reason"
    assert await run_state(pg_plane, run.id) == "PENDING_APPROVAL"

    await card.locator("textarea").fill("not today")
    await card.get_by_role("button", name="Reject").click()
    await card.wait_for(state="detached")
    assert await run_state(pg_plane, run.id) == "REJECTED"
    tab.check_clean()


async def test_viewer_cannot_decide(tab: Tab, pg_plane: Plane) -> None:
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    vera = await pg_plane.key("vera", "viewer")
    await tab.sign_in(vera.token or "")
    await tab.live_approvals()
    run = await submit(alice)
    card = tab.card(run.id)
    await card.wait_for()
    assert await card.get_by_role("button", name="Approve").is_disabled()
    assert await card.get_by_role("button", name="Reject").is_disabled()
    note = await tab.page.locator("#role-note").inner_text()
    assert "only approvers can approve or reject" in note
    await tab.shot("08-viewer")
    tab.check_clean()


async def test_markup_in_data_renders_as_text(tab: Tab, pg_plane: Plane) -> None:
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    run = await submit(alice, INJECTION)
    await tab.sign_in(bob.token or "")
    card = tab.card(run.id)
    await card.wait_for()
    assert INJECTION in await card.locator("pre").inner_text()
    assert await tab.page.locator("article.card img, article.card script").count() == 0
    await tab.shot("09-injection-as-text")

    reason = "<b>no</b><img src=y onerror=alert(3)>"
    await card.locator("textarea").fill(reason)
    await card.get_by_role("button", name="Reject").click()
    await card.wait_for(state="detached")
    await expect_run_page_state(tab, run.id, "REJECTED")
    timeline = await tab.page.locator("#timeline").inner_text()
    assert reason in timeline
    assert await tab.page.locator("#timeline img, #timeline b").count() == 0
    # Nothing injected exists anywhere in the page, so no handler of it can ever fire.
    injected = "img, script:not([src]), [onerror], [onload], [onclick]"
    assert await tab.page.locator(injected).count() == 0
    tab.check_clean()


async def test_screens_bundle_size_and_first_load(tab: Tab, pg_plane: Plane) -> None:
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    for i in range(3):
        await submit(alice, f"request {i}")
    now = datetime.now(UTC)
    async with pg_plane.cp.store.transaction() as tx:
        await tx.fleet.register(ExecutorInfo(
            id="exec-1", host="worker-1", runtime="podman", slots=4, slots_in_use=1,
            started_at=now, heartbeat_at=now, stopped_at=None))

    # Cold first load (empty cache): sign-in form, then key -> live approvals screen.
    t0 = time.perf_counter()
    await tab.page.goto(tab.base + "/")
    await tab.page.wait_for_selector("#api-key")
    cold_form_ms = (time.perf_counter() - t0) * 1000
    await tab.page.fill("#api-key", bob.token or "")
    t0 = time.perf_counter()
    await tab.page.click("form.signin button[type=submit]")
    await tab.live_approvals()
    sign_in_to_live_ms = (time.perf_counter() - t0) * 1000
    # Later loads with a session (assets cached): reload and wait until it is live.
    wall, marks = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        await tab.page.reload()
        await tab.live_approvals()
        wall.append((time.perf_counter() - t0) * 1000)
        marks.append(await tab.page.evaluate(
            "performance.getEntriesByName('airlock:approvals-ready')[0].startTime"))

    await tab.page.goto(f"{tab.base}/runs")
    await tab.page.fill("#f-agent", "risky")
    await tab.page.select_option("#f-state", "PENDING_APPROVAL")
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_url("**/runs?agent=risky&state=PENDING_APPROVAL")
    await tab.page.wait_for_selector("table.grid")
    assert await tab.page.locator("table.grid tbody tr").count() == 3
    await tab.shot("10-runs")
    await tab.page.select_option("#f-state", "SUCCEEDED")
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_selector("text=No runs match.")
    await tab.page.goto(f"{tab.base}/agents")
    await tab.page.wait_for_selector("table.grid .risk")
    await tab.shot("11-agents")
    await tab.page.click("table.grid a")
    await tab.page.wait_for_selector(".version")
    await tab.shot("12-agent")
    await tab.page.goto(f"{tab.base}/fleet")
    await tab.page.wait_for_selector("text=worker-1")
    assert "active" in await tab.page.locator("table.grid").inner_text()
    await tab.shot("13-fleet")
    tab.check_clean()

    files = [p for p in (WEBUI_DIR / "assets").iterdir() if p.suffix in (".js", ".css")]
    files.append(WEBUI_DIR / "index.html")
    gz = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    raw = sum(p.stat().st_size for p in files)
    metrics = {"bundle_bytes": raw, "bundle_gzip_bytes": gz,
               "approvals_ready_ms_median": round(statistics.median(marks), 1),
               "reload_to_live_ms_median": round(statistics.median(wall), 1),
               "cold_load_to_sign_in_form_ms": round(cold_form_ms, 1),
               "sign_in_to_live_ms": round(sign_in_to_live_ms, 1)}
    print(f"\nUI bundle: {raw / 1024:.1f} KiB, {gz / 1024:.1f} KiB gzipped; approvals screen "
          f"usable {metrics['approvals_ready_ms_median']} ms after navigation start (median of 5;"
          f" reload to live {metrics['reload_to_live_ms_median']} ms); cold load to sign-in form "
          f"{metrics['cold_load_to_sign_in_form_ms']} ms, sign-in to live approvals "
          f"{metrics['sign_in_to_live_ms']} ms")
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    assert gz <= 150 * 1024


async def test_key_stays_out_of_urls_and_storage_but_session(tab: Tab, pg_plane: Plane) -> None:
    bob = await pg_plane.key("bob", "approver")
    urls: list[str] = []
    tab.page.on("request", lambda r: urls.append(r.url))
    await tab.sign_in(bob.token or "")
    await tab.live_approvals()
    secret = (bob.token or "").split(".", 1)[1]
    assert not [u for u in urls if secret in u]
    assert secret not in tab.page.url
    assert await tab.page.evaluate("localStorage.length") == 0
    assert await tab.page.evaluate("document.cookie") == ""
    stored = await tab.page.evaluate("sessionStorage.getItem('airlock.apiKey')")
    assert stored == bob.token
    await tab.page.get_by_role("button", name="Sign out").click()
    await tab.page.wait_for_selector("#api-key")
    assert await tab.page.evaluate("sessionStorage.length") == 0

    bad = "key_000000000000.wrong"
    await tab.page.fill("#api-key", bad)
    await tab.page.click("form.signin button[type=submit]")
    await tab.page.locator("#signin-error").filter(has_text="not accepted").wait_for()
    tab.check_clean()


async def test_decision_by_another_approver_updates_the_screen(tab: Tab, pg_plane: Plane) -> None:
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    carol = await pg_plane.key("carol", "approver")
    run = await submit(alice)
    await tab.sign_in(bob.token or "")
    card = tab.card(run.id)
    await card.wait_for()
    await carol.approvals.Approve(aps.ApproveRequest(run_id=run.id, reason="ok"), metadata=carol.md)
    await card.wait_for(state="detached")
    closed = tab.page.locator(f'#closed-list li[data-run="{run.id}"]')
    await closed.wait_for()
    assert "carol" in await closed.inner_text()
    tab.check_clean()
