"""Identifiers: time-ordered (so keyset pagination by id is creation order) and unguessable.

At the bottom layer because run ids are made in three processes: the control plane at submit,
``airlock agent run-local`` and the Dagger CI module (which loads only ``agents/`` and
``executor/``); all of them make the same shape, ``run_`` + 26 lower-case Crockford base32.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_key_id", "new_run_id", "ulid"]

# Crockford base32: digits and letters without I, L, O and U (no look-alikes).
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
