"""What a test needs from the machine, in one rule: skip locally, fail under CI.

On a developer's machine a missing part (PostgreSQL, NATS, podman, ...) skips the tests that
need it, with a reason naming it. Under CI (``CI=true``) the same absence is a failure naming
the part: a suite that went green because half of it was skipped proves nothing. The one
exception is a live Dagger engine, which no machine of this project can run (its image is in
a registry they cannot reach): tests needing one may skip under CI too.

Every skip for a missing part goes through ``require``; ``grep -rn "pytest.skip" tests`` finds
only those for a reason that is not a missing part.
"""

from __future__ import annotations

import os

import pytest

# Parts a test may skip for even under CI.
MAY_SKIP_UNDER_CI = frozenset({"a Dagger engine"})


def under_ci() -> bool:
    """True when CI=true (or 1/yes), as CI sets it."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(part: str, reason: str | None, *, module: bool = False) -> None:
    """Go on if ``reason`` is empty; else skip (locally) or fail (CI) naming ``part``.

    ``part`` is what a reader installs or starts ("PostgreSQL", "catatonit", ...); ``reason``
    says what was tried and what happened. ``module=True`` at module level (collection).
    """
    if not reason:
        return
    message = f"missing {part}: {reason}"
    if under_ci() and part not in MAY_SKIP_UNDER_CI:
        pytest.fail(f"CI=true and a required part is missing ({message}); "
                    "scripts/setup.sh --test and scripts/services.sh provide it", pytrace=False)
    pytest.skip(message, allow_module_level=module)
