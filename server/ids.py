"""Identifiers: time-ordered (so keyset pagination by id is creation order) and unguessable."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_run_id() -> str:
    return f"run_{ulid().lower()}"


def new_key_id() -> str:
    return f"key_{ulid().lower()[-12:]}"
