"""signed-digest: HMAC-SHA256 under a secret key. Standard library only."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from agents import AgentError, serve

SECRETS_DIR = os.environ.get("AIRLOCK_SECRETS_DIR", "/run/secrets")


def signing_key() -> bytes:
    try:
        with open(os.path.join(SECRETS_DIR, "SIGNING_KEY"), "rb") as f:
            key = f.read()
    except OSError as e:  # say which secret is missing, never what it contains
        raise AgentError("E_NO_KEY", f"secret SIGNING_KEY is not available: {e.strerror}") from None
    if not key:
        raise AgentError("E_NO_KEY", "secret SIGNING_KEY is empty")
    return key


def handle(capability: str, payload: dict[str, Any]) -> dict[str, Any]:
    if capability != "sign":
        raise AgentError("E_CAPABILITY", f"unknown capability {capability!r}")
    digest = hmac.new(signing_key(), payload["text"].encode("utf-8"), hashlib.sha256)
    return {"algorithm": "HMAC-SHA256", "digest": digest.hexdigest()}


if __name__ == "__main__":
    serve(handle)
