"""The agent manifest (``agent.yaml``): what an agent author declares.

Parsed into pydantic models so that every problem is reported with the path of the offending
field (``capabilities.0.input_schema: ...``). This module is imported by the control plane and
the CLI; it is *not* needed inside agent images (see ``agents._helper``).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from agents.schemas import SchemaRefused, check_schema_safe

NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"
CAPABILITY_RE = r"^[a-z][a-z0-9_-]{0,62}$"
SECRET_RE = r"^[A-Z][A-Z0-9_]{0,62}$"
# Semantic version without build metadata; pre-release tags allowed (1.2.0-rc.1).
VERSION_RE = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$"


class Risk(enum.IntEnum):
    """Declared or effective risk; ordered so that ``max()`` gives the stronger one."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | Risk) -> Risk:
        if isinstance(value, Risk):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise ValueError(f"unknown risk {value!r}; expected low, medium, high or critical") from None

    @property
    def label(self) -> str:
        return self.name.lower()


def _nul_at(value: Any, path: str = "") -> str | None:
    """Where a NUL character hides in plain data (strings, keys, lists, dicts), else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            where = _nul_at(k, f"{path}.{k!r}") or _nul_at(v, f"{path}.{k}" if path else str(k))
            if where is not None:
                return where
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            where = _nul_at(v, f"{path}.{i}" if path else str(i))
            if where is not None:
                return where
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # Text columns of PostgreSQL cannot store NUL, and no manifest needs one.
        where = _nul_at(v)
        if where is not None:
            raise ValueError("must not contain NUL characters" + (f" (at {where})" if where else ""))
        return v


class LimitsSpec(_Strict):
    """Resource limits for one run. Any field left out takes the deployment default."""

    memory_mib: int | None = Field(default=None, ge=16, le=65536)
    timeout_seconds: float | None = Field(default=None, gt=0, le=86400)
    pids: int | None = Field(default=None, ge=4, le=4096)
    cpus: float | None = Field(default=None, gt=0, le=64)
    output_kib: int | None = Field(default=None, ge=1, le=65536)
    log_kib: int | None = Field(default=None, ge=1, le=65536)


class ManifestLimits(_Strict):
    default: LimitsSpec = LimitsSpec()
    max: LimitsSpec = LimitsSpec()


class Permissions(_Strict):
    """What runs of this agent may ask for. Asking raises the run's effective risk."""

    network: bool = False
    secrets: tuple[str, ...] = ()

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not re.fullmatch(SECRET_RE, name):
                raise ValueError(f"secret name {name!r} must match {SECRET_RE}")
        if len(set(v)) != len(v):
            raise ValueError("secret names must be unique")
        return v


MAX_SCHEMA_DEPTH = 64


def _depth(value: Any) -> int:
    """Nesting depth of dicts and lists (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is not None:
            deepest = max(deepest, d)
            todo.extend((c, d + 1) for c in children)
    return deepest


def _check_schema(schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"not a valid JSON Schema: {e.message}") from None
    # Registration rules (no remote references, RE2 patterns) apply when a manifest is
    # registered; one read back from the database was accepted under the rules of its day and
    # must still load (validation at submit never fetches and refuses what it cannot run).
    if not (info.context or {}).get("stored"):
        try:
            check_schema_safe(schema)
        except SchemaRefused as e:
            raise ValueError(str(e)) from None
    return schema


class Capability(_Strict):
    name: str = Field(pattern=CAPABILITY_RE)
    description: str = Field(default="", max_length=2000)
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _check_schema(v, info)


class BuildSpec(_Strict):
    context: str = "."
    containerfile: str = "Containerfile"


class Manifest(_Strict):
    """A parsed, validated ``agent.yaml``."""

    name: str = Field(pattern=NAME_RE)
    version: str = Field(pattern=VERSION_RE)
    description: str = Field(default="", max_length=4000)
    image: str | None = Field(default=None, min_length=1, max_length=512)
    build: BuildSpec | None = None
    entrypoint: tuple[str, ...] | None = None
    risk: Risk = Risk.LOW
    permissions: Permissions = Permissions()
    limits: ManifestLimits = ManifestLimits()
    capabilities: tuple[Capability, ...] = Field(min_length=1)

    @field_validator("risk", mode="before")
    @classmethod
    def _risk(cls, v: Any) -> Risk:
        return Risk.parse(v)

    @field_serializer("risk")
    def _risk_label(self, v: Risk) -> str:
        return v.label

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.image is None and self.build is None:
            raise ValueError("one of 'image' or 'build' is required")
        names = [c.name for c in self.capabilities]
        if len(set(names)) != len(names):
            raise ValueError("capabilities: names must be unique")
        d, m = self.limits.default, self.limits.max
        for field in LimitsSpec.model_fields:
            dv, mv = getattr(d, field), getattr(m, field)
            if dv is not None and mv is not None and dv > mv:
                raise ValueError(f"limits.default.{field}: {dv} exceeds limits.max.{field} ({mv})")
        return self

    def capability(self, name: str) -> Capability | None:
        return next((c for c in self.capabilities if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ManifestError(ValueError):
    """Raised when a manifest cannot be parsed; ``field`` names the first offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def parse_manifest(data: Any, *, stored: bool = False) -> Manifest:
    """Validate a decoded manifest document. Raises ``ManifestError`` naming the field.

    ``stored``: read back from the database, so the rules that apply only at registration
    (see ``_check_schema``) are not re-applied.
    """
    if not isinstance(data, dict):
        raise ManifestError("", "manifest must be a mapping")
    try:
        return Manifest.model_validate(data, context={"stored": stored})
    except RecursionError:  # e.g. a JSON Schema nested deeper than the meta-schema check can go
        raise ManifestError("", "not a manifest: nested too deeply") from None
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # a check across fields: its message may start with the field it blames
            m = re.fullmatch(r"([a-z_][a-z0-9_.]*): (.*)", msg, re.DOTALL)
            if m:
                loc, msg = m.groups()
        raise ManifestError(loc, msg) from None


def load_manifest_text(text: str) -> Manifest:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError("", f"not valid YAML: {e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ManifestError("", "not a manifest: nested too deeply") from None
    except ValueError as e:  # a scalar YAML accepts but Python refuses (an int of 5000 digits)
        raise ManifestError("", f"not valid YAML: {e}") from None
    return parse_manifest(data)


def load_manifest(path: str | Path) -> Manifest:
    """Load ``agent.yaml`` (or the ``agent.yaml`` inside a folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "agent.yaml"
    return load_manifest_text(p.read_text())
