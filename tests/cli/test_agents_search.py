"""``airlock agents list --capability NAME --search TEXT`` against a real control plane."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import Cli, admin_token
from tests.conftest import Plane
from tests.server.test_agent_search import manifest


@pytest.fixture
def cli(plane: Plane, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys, plane)


async def test_agents_list_by_capability_and_search(cli: Cli, plane: Plane) -> None:
    admin = admin_token(plane)
    await cli.ok("agents", "register", manifest("mailer", "Sends mail",
                                                {"send_email": "One e-mail"}), token=admin)
    await cli.ok("agents", "register", manifest("invoicer", "Makes invoices",
                                                {"render_pdf": "An invoice as PDF"}), token=admin)

    def listed(out: str) -> list[str]:
        return [line.split()[0] for line in out.splitlines()[1:]]

    r = await cli.ok("agents", "list", "--capability", "send_email", token=admin)
    assert listed(r.out) == ["mailer"]
    r = await cli.ok("agents", "list", "--search", "PDF invoice", token=admin)
    assert listed(r.out) == ["invoicer"]
    r = await cli.ok("agents", "list", "--json", "--capability", "render_pdf", "--search", "mail",
                     token=admin)
    assert r.json()["agents"] == []
    bad = await cli("agents", "list", "--capability", "No Such", token=admin)
    assert bad.rc == 1 and "INVALID_ARGUMENT: capability:" in bad.err, bad.err
