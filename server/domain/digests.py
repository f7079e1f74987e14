"""Digests and the canonical JSON they are taken over: the one definition for every process.

Canonical JSON follows RFC 8785 (the JSON Canonicalization Scheme): object members sorted by
the UTF-16 code units of their names, no whitespace, strings as UTF-8 with only ``"``, ``\\``
and control characters escaped (``\\b \\t \\n \\f \\r``, else ``\\u00xx``), numbers in the
ECMAScript form (``1``, not ``1.0``; ``1e-7``, ``1e+21``). One deviation: integers are written
exactly as they are, also beyond 2**53 (RFC 8785 would first round them to a double); inputs
never hold numbers a double cannot represent in range (``agents.inputs`` refuses them).

Everything here is a lower-case hex SHA-256; ``sha256:`` is added only for display.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from agents.limits import Limits
from server.domain.models import NewRun

_escape = json.JSONEncoder(ensure_ascii=False).encode  # escapes exactly what RFC 8785 does


def _number(x: float) -> str:
    """A double the way ECMAScript's Number.prototype.toString writes it (RFC 8785 3.2.2.3)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"{x} has no JSON form")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")  # repr: the shortest round-tripping digits
    int_part, _, frac = mantissa.partition(".")
    digits = (int_part + frac).lstrip("0")
    # Decimal exponent n such that value = 0.d1d2... x 10**n.
    n = len(int_part.lstrip("0")) if int_part.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    n += int(exp or 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + ("e+" if e > 0 else "e-") + str(abs(e))
    return sign + out


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_escape(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: str(k).encode("utf-16-be"))):
            if not isinstance(key, str):
                raise TypeError(f"object member names must be strings, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(_escape(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """``value`` (JSON types only) as RFC 8785 canonical JSON, UTF-8."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_digest(input_json: str) -> str:
    """SHA-256 of the canonical form of a run's input (however the caller spaced it)."""
    return sha256_hex(canonical_json(json.loads(input_json)))


def output_digest(output_json: str | None) -> str:
    """SHA-256 of the canonical form of a run's output; "" when it left none."""
    return "" if output_json is None else sha256_hex(canonical_json(json.loads(output_json)))


def logs_digest(logs: bytes | None) -> str:
    """SHA-256 of the stored log bytes (as kept: capped at the run's log limit)."""
    return sha256_hex(logs or b"")


def action_digest(*, agent: str, version: str, image: str, capability: str, input_json: str,
                  limits: Limits, network: bool, secrets: Iterable[str],
                  entrypoint: Iterable[str] | None) -> str:
    """SHA-256 over everything that decides what a run does, as canonical JSON.

    ``image`` is the reference the sandbox runs (``name@sha256:...`` when the registry pinned
    its digest); secrets are names (never values), sorted; the input is its canonical form.
    An approval is given for this digest, and the executor recomputes it from what it is
    about to run.
    """
    doc = {
        "agent": agent, "version": version, "image": image, "capability": capability,
        "input": json.loads(input_json), "limits": limits.as_dict(), "network": network,
        "secrets": sorted(secrets),
        "entrypoint": list(entrypoint) if entrypoint is not None else None,
    }
    return sha256_hex(canonical_json(doc))


def with_digests(new: NewRun) -> NewRun:
    """``new`` with its input and action digests: the one place a run's are taken (at
    submit, and for a workflow's step when it starts)."""
    if new.action_digest:
        return new
    return replace(new, input_sha256=input_digest(new.input_json), action_digest=action_digest(
        agent=new.agent, version=new.version, image=new.image, capability=new.capability,
        input_json=new.input_json, limits=new.limits, network=new.network, secrets=new.secrets,
        entrypoint=new.entrypoint))


def chain_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """A chained record's hash: SHA-256 of the previous record's hash (hex, "" for the
    first) followed by the canonical JSON of the record's own content."""
    return sha256_hex(prev_hash.encode("ascii") + canonical_json(content))


def display(digest: str) -> str:
    return f"sha256:{digest}" if digest else ""
