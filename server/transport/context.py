"""The authenticated caller of the current request, set by each transport's auth layer."""

from __future__ import annotations

import contextvars

from server.domain.principal import Principal

_CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("airlock_principal")


def current_principal() -> Principal:
    return _CURRENT.get()


def set_principal(p: Principal) -> contextvars.Token[Principal]:
    return _CURRENT.set(p)


def reset_principal(token: contextvars.Token[Principal]) -> None:
    _CURRENT.reset(token)
