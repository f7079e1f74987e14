"""The audit screen and the digests in a real browser (Debian chromium through Playwright) on a
real control plane and PostgreSQL: approvers see and approve the action digest; auditors see
who did what to which run, filter it, and see verification fail after a database edit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from airlock.v1 import approval_service_pb2 as aps
from airlock.v1 import run_service_pb2 as rs
from tests.conftest import Plane
from tests.ui.test_browser import Tab, browser, register_risky, submit, tab  # noqa: F401

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def test_approver_sees_the_action_digest_and_approves_it(
        tab: Tab, pg_plane: Plane) -> None:  # noqa: F811
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    run = await submit(alice, "digest me")
    await tab.sign_in(bob.token or "")
    card = tab.card(run.id)
    await card.wait_for()
    assert f"sha256:{run.action_digest}" in await card.inner_text()
    # An approver has no audit screen.
    assert await tab.page.locator("#nav a[href='/audit']").count() == 0
    await card.get_by_role("button", name="Approve").click()
    await tab.page.wait_for_selector(f"text=You approved {run.id}")
    got = await bob.approvals.GetApproval(aps.GetApprovalRequest(run_id=run.id), metadata=bob.md)
    assert [d.action_digest for d in got.approval.decisions] == [run.action_digest]
    # The run page shows the digests, and what the decision was given for.
    await tab.page.goto(f"{tab.base}/runs/{run.id}")
    integrity = tab.page.locator("#integrity")
    await integrity.filter(has_text=run.input_sha256).wait_for()
    assert f"sha256:{run.action_digest}" in await integrity.inner_text()
    await tab.page.locator("#s-approval").locator("..").filter(
        has_text=f"for sha256:{run.action_digest}").wait_for()
    await tab.shot("20-run-integrity")
    tab.check_clean()


async def records_shown(t: Tab) -> list[list[str]]:
    await t.page.wait_for_selector(".page.audit .status-line:has-text('shown')")
    rows = t.page.locator(".page.audit table tbody tr")
    out = []
    for i in range(await rows.count()):
        out.append([c.strip() for c in await rows.nth(i).locator("td, th").all_inner_texts()])
    return out


async def test_auditor_filters_the_trail_and_sees_verification_fail_after_an_edit(
        tab: Tab, pg_plane: Plane) -> None:  # noqa: F811
    await register_risky(pg_plane)
    alice = await pg_plane.key("alice", "submitter")
    bob = await pg_plane.key("bob", "approver")
    carol = await pg_plane.key("carol", "approver")
    vera = await pg_plane.key("vera", "viewer")
    first = await submit(alice, "first")
    second = await submit(alice, "second")
    await bob.approvals.Approve(aps.ApproveRequest(run_id=first.id, reason="ok"), metadata=bob.md)
    await carol.approvals.Reject(aps.RejectRequest(run_id=second.id, reason="no"),
                                 metadata=carol.md)
    await tab.sign_in(vera.token or "")
    await tab.page.click("#nav a[href='/audit']")
    await tab.page.wait_for_selector(".page.audit[data-verified=ok]")
    status = await tab.page.locator("#verify-status").inner_text()
    assert "2 runs" in status and "match" in status
    rows = await records_shown(tab)
    actions = [(r[1], r[2], r[3]) for r in rows]
    assert ("alice", "run.submit", first.id) in actions
    assert ("bob", "approval.approve", first.id) in actions
    assert ("carol", "approval.reject", second.id) in actions
    await tab.shot("21-audit")

    # Filter by actor, then by run (the filters live in the address).
    await tab.page.fill("#f-actor", "carol")
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_url("**/audit?actor=carol")
    assert [(r[1], r[2]) for r in await records_shown(tab)] == [("carol", "approval.reject")]
    await tab.page.fill("#f-actor", "")
    await tab.page.fill("#f-run", first.id)
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_url(f"**/audit?run={first.id}")
    assert [r[2] for r in await records_shown(tab)] == ["run.submit", "approval.approve"]
    # A time window after everything: nothing.
    await tab.page.goto(f"{tab.base}/audit?since=2999-01-01T00:00")
    await tab.page.wait_for_selector("text=No audit records match.")

    # Behind the API: the approver's name changed. Verification names the decision.
    async with pg_plane.cp.store.transaction() as tx:
        await tx.conn.execute(text("UPDATE approval_decisions SET approver = 'mallory' "
                                   "WHERE run_id = :r"), {"r": first.id})
    await tab.page.click("#verify")
    await tab.page.wait_for_selector(".page.audit[data-verified=mismatch]")
    status = await tab.page.locator("#verify-status").inner_text()
    assert status.startswith("Mismatch at approval_decisions #") and "mallory" in status
    await tab.shot("22-audit-mismatch")
    tab.check_clean()


async def test_audit_screen_refuses_other_roles(tab: Tab, pg_plane: Plane) -> None:  # noqa: F811
    alice = await pg_plane.key("alice", "submitter")
    await tab.sign_in(alice.token or "")
    assert await tab.page.locator("#nav a[href='/audit']").count() == 0
    await tab.page.goto(f"{tab.base}/audit")
    err: Any = tab.page.locator(".page.audit .error-box")
    await err.filter(has_text="Refused").wait_for()
    await tab.page.wait_for_selector(".page.audit[data-verified=error]")
    runs = await alice.runs.ListRuns(rs.ListRunsRequest(), metadata=alice.md)
    assert list(runs.runs) == []
    tab.check_clean()
