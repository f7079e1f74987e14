"""Under CI (``CI=true``) a missing part fails the run, naming it; locally it is a skip.

The subprocess runs point the suite at a PostgreSQL / NATS address where nothing listens
(127.0.0.1 port 1: refused at once, nothing leaves the machine) and run one real test that
needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.requirements import MAY_SKIP_UNDER_CI, require

REPO = Path(__file__).resolve().parent.parent
NOWHERE_PG = "postgresql://postgres@127.0.0.1:1/postgres"
NOWHERE_NATS = "nats://127.0.0.1:1"
PG_TEST = "tests/server/test_migrations.py::test_migrated_schema_matches_metadata[postgresql]"
NATS_TEST = "tests/events/test_relay.py::test_every_state_change_once_in_order[sqlite]"


def pytest_run(test: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "CI"} | env
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_missing_postgresql_fails_under_ci_naming_it() -> None:
    r = pytest_run(PG_TEST, CI="true", AIRLOCK_TEST_PG=NOWHERE_PG)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "1 failed" in r.stdout or "1 error" in r.stdout, r.stdout[-3000:]
    assert "missing PostgreSQL: PostgreSQL not reachable at " + NOWHERE_PG in r.stdout
    assert "CI=true" in r.stdout


@pytest.mark.slow
def test_missing_postgresql_is_a_skip_locally() -> None:
    r = pytest_run(PG_TEST, AIRLOCK_TEST_PG=NOWHERE_PG)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "1 skipped" in r.stdout and "missing PostgreSQL" in r.stdout, r.stdout[-3000:]


@pytest.mark.slow
def test_missing_nats_fails_under_ci_naming_it() -> None:
    r = pytest_run(NATS_TEST, CI="true", AIRLOCK_TEST_NATS=NOWHERE_NATS)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "missing NATS: NATS not reachable at " + NOWHERE_NATS in r.stdout, r.stdout[-3000:]


def test_require_fails_under_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    require("catatonit", None)  # nothing missing: goes on
    require("catatonit", "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"missing catatonit: no /usr/libexec/podman/catatonit"):
        require("catatonit", "no /usr/libexec/podman/catatonit")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="missing catatonit"):
        require("catatonit", "no /usr/libexec/podman/catatonit")


def test_only_a_live_dagger_engine_may_skip_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAY_SKIP_UNDER_CI == {"a Dagger engine"}
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match="missing a Dagger engine"):
        require("a Dagger engine", "no engine reachable")
