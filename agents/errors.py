"""The root of Airlock's errors and its meaning groups (one gRPC code each).

They live at the bottom layer, beside the author kit, because every process raises them:
the control plane (``server.domain.errors`` adds the concrete errors), the executor and its
runtimes (``RuntimeUnavailable``, ``MissingSecret``), and the Dagger CI module, which loads
only ``agents/`` and ``executor/``. They know nothing of gRPC: ``server.transport.errors``
maps groups to codes. ``ConfigError`` is the one error that never crosses the wire: a process
(``airlock serve``, ``executor``, ``relay``, ``dev``) cannot start as configured.
"""

from __future__ import annotations

__all__ = [
    "AirlockError",
    "AlreadyExists",
    "ConfigError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]


class AirlockError(Exception):
    """Root of every error Airlock reports to a caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- meaning groups (one gRPC code each) ------------------------------------------------------


class InvalidArgument(AirlockError):
    """The request is malformed; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(AirlockError):
    """The named thing does not exist (or the caller may not know it does)."""


class AlreadyExists(AirlockError):
    """Creating something that exists, with different content."""


class FailedPrecondition(AirlockError):
    """The request is valid but the system is not in a state that allows it."""


class PermissionDenied(AirlockError):
    """The caller is known but may not do this."""


class Unauthenticated(AirlockError):
    """No valid credentials were presented."""


class ResourceExhausted(AirlockError):
    """A size or rate limit was hit."""


class Unavailable(AirlockError):
    """A dependency is down; retrying later may work."""


# --- process start-up (never sent to a caller over the API) -----------------------------------


class ConfigError(AirlockError):
    """A process cannot start as configured; each line of the message names the setting
    (``AIRLOCK_NATS_STREAM: ...``). The ``airlock`` command exits with status 3."""
