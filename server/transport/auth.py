"""Authentication and the role check, shared by the gRPC and the gRPC-Web adapters.

Both adapters call :func:`authorize` with the operation name and the ``authorization`` header
value, then map any error with :func:`server.transport.errors.to_status`, so a request gets the
same code and message whichever transport carried it.
"""

from __future__ import annotations

from server.domain.errors import PermissionDenied
from server.domain.principal import Principal, allowed
from server.services.admin import AdminService

PACKAGE = "airlock.v1."


def parse_bearer(value: str | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` value; None for any other scheme."""
    if value is None:
        return None
    scheme, _, token = str(value).partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def operation_of(method: str) -> str:
    """'/airlock.v1.RunService/GetRun' -> 'RunService.GetRun' (the role table's key)."""
    return method[len("/" + PACKAGE):].replace("/", ".")


async def authorize(admin: AdminService, operation: str, authorization: str | None) -> Principal:
    """The caller behind the header, if its role may call ``operation``.

    Raises ``Unauthenticated`` (no or unknown key) or ``PermissionDenied`` (role not allowed).
    """
    principal = await admin.authenticate(parse_bearer(authorization))
    if not allowed(operation, principal.role):
        raise PermissionDenied(f"role {principal.role.value} may not call {operation}")
    return principal
