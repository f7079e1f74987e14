"""Resolve a run's named secrets from the executor's own source. Values never leave here
except into the sandbox (the runtime mounts them as files)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from agents.errors import FailedPrecondition
from executor.runtime.base import SecretValue

_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")


class MissingSecret(FailedPrecondition):
    """Raised when a run names a secret this executor cannot provide (the run fails with it)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name!r} is not available on this executor")
        self.name = name


class SecretSource:
    """A directory with one file per secret, else ``<prefix><NAME>`` environment variables."""

    def __init__(self, *, directory: Path | None = None, env_prefix: str = "AIRLOCK_SECRET_",
                 environ: Mapping[str, str] | None = None) -> None:
        self.directory = directory
        self.env_prefix = env_prefix
        self.environ = os.environ if environ is None else environ

    def resolve(self, names: Sequence[str]) -> dict[str, SecretValue]:
        out: dict[str, SecretValue] = {}
        for name in names:
            if not _NAME.match(name):  # also keeps path traversal out of the directory lookup
                raise MissingSecret(name)
            value: bytes | None = None
            if self.directory is not None:
                path = self.directory / name
                if path.is_file():
                    value = path.read_bytes()
            if value is None and self.env_prefix + name in self.environ:
                value = self.environ[self.env_prefix + name].encode()
            if value is None:
                raise MissingSecret(name)
            out[name] = SecretValue(value)
        return out
