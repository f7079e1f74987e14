"""The one check of a run's input against its capability's input schema.

Used by the control plane at submit and by ``airlock agent run-local`` (and the Dagger CI
module), so an input refused by one is refused by the others with the same words.
"""

from __future__ import annotations

from typing import Any

from agents.manifest import Capability
from agents.schemas import UnsupportedPattern, first_error

MAX_PROBLEM = 300  # schema messages quote the instance, which may be megabytes


class InputMismatch(ValueError):
    """Raised when an input does not match the input schema; ``path`` is where (JSON path)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"input does not match the input schema at {path}: {problem}")
        self.path = path
        self.problem = problem


class SchemaUnusable(ValueError):
    """Raised when the input schema itself cannot be applied safely (a pattern RE2 cannot run,
    in a manifest stored before such patterns were refused at registration)."""


def check_input(capability: Capability, payload: Any) -> None:
    """Raise ``InputMismatch`` unless ``payload`` is valid for ``capability``'s input schema.

    Formats are checked, patterns match on RE2 and no reference is fetched (``agents.schemas``).
    """
    try:
        error = first_error(capability.input_schema, payload)
    except UnsupportedPattern as e:
        raise SchemaUnusable(str(e)) from None
    if error is not None:
        raise InputMismatch(error.json_path, error.message[:MAX_PROBLEM])
