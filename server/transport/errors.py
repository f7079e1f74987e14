"""The one table from domain error groups to status codes, shared by both transports."""

from __future__ import annotations

import logging

import grpc

from server.domain import errors as e

log = logging.getLogger(__name__)

# Most specific first; every AirlockError a service raises falls under one of these groups
# (ConfigError and the CLI's errors stop a local process and never reach a caller).
CODES: list[tuple[type[e.AirlockError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
]

INTERNAL_MESSAGE = "internal error; the server logged the details"


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and client-safe message for an exception raised by a service."""
    if isinstance(exc, e.AirlockError):
        for cls, code in CODES:
            if isinstance(exc, cls):
                return code, exc.message
    # Never send str(exc) of an unexpected error to the client: it may hold internals.
    log.exception("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
