"""Loading a process's settings: pydantic's errors become a ``ConfigError`` naming each
variable (``AIRLOCK_<NAME>: <problem>``, one per line), which ``main`` turns into exit 3."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

from airlock.cli._framework import ConfigError

if TYPE_CHECKING:  # imported when settings are loaded: client commands do without
    from pydantic_settings import BaseSettings

S = TypeVar("S", bound="BaseSettings")


def settings_errors(exc: Exception, prefix: str) -> str:
    """Lines ``AIRLOCK_<NAME>: <message>``, one per problem of a pydantic(-settings) error."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        lines = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            var = prefix + (loc[0].upper() if loc else "?")
            where = "".join(f"[{p}]" for p in loc[1:])
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"{var}{where}: {msg}")
        return "\n".join(lines)
    # SettingsError carries no field attribute, only 'error parsing value for field "x" ...'
    # (a list or mapping setting whose text is not JSON).
    m = re.search(r'field "(\w+)"', str(exc))
    if m:
        return f"{prefix}{m.group(1).upper()}: not valid JSON (this setting is a list or mapping)"
    return str(exc)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build a settings class from the environment (and ``overrides``, e.g. command options).

    Raises ``ConfigError`` naming the variable(s) when a value is refused.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    prefix = str(cls.model_config.get("env_prefix", "AIRLOCK_"))
    try:
        return cls(**overrides)
    except (ValidationError, SettingsError) as e:
        raise ConfigError(settings_errors(e, prefix)) from None
