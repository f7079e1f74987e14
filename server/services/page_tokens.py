"""Page tokens: the opaque text a client passes back to get the next page of a list.

A token names the key the next page starts after, and is authenticated: an HMAC-SHA256 with
the server's page-token key over that key *and a digest of the query it came from* (the list
and its filter fields, not the page size). A forged or altered token, or one passed back with
other filters or to another list, is refused (``page_token`` INVALID_ARGUMENT) instead of
quietly paging through a different result set.

The key is ``AIRLOCK_PAGE_TOKEN_KEY``; unset, each process makes a random one at start. Then a
token is good only in the process that made it (after a restart, or behind a load balancer
over several processes, a client gets INVALID_ARGUMENT and starts again from the first
page): give every process of one deployment the same key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping

_MAC_BYTES = 16  # 128 bits: forging one is a 2**-128 guess per try
_CONTEXT = b"airlock page token v1\x00"
_key: bytes = secrets.token_bytes(32)


def set_key(key: str | bytes | None) -> None:
    """Use ``key`` for tokens made and checked from now on (None: a new random key)."""
    global _key
    if key is None:
        _key = secrets.token_bytes(32)
    else:
        raw = key.encode() if isinstance(key, str) else key
        _key = hashlib.sha256(b"airlock page token key\x00" + raw).digest()


def query_digest(query: Mapping[str, object]) -> bytes:
    """A digest of a list's name and filter fields (canonical JSON, so order does not matter)."""
    text = json.dumps(query, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _mac(value: bytes, query: Mapping[str, object]) -> bytes:
    return hmac.new(_key, _CONTEXT + query_digest(query) + b"\x00" + value,
                    hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or not all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        raise ValueError("bad base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(value: str, query: Mapping[str, object]) -> str:
    """The token for the page of ``query`` that starts after ``value`` ("" for none)."""
    if not value:
        return ""
    raw = value.encode()
    return f"{_b64(raw)}.{_b64(_mac(raw, query))}"


NOT_OURS = ("not a page token this server made for this query (pass back next_page_token "
            "unchanged, with the same filters; start again without a token after a server "
            "restart)")


def decode_token(token: str, query: Mapping[str, object]) -> str:
    """The key a token of ``query`` stands for ("" for no token). Raises ValueError on a
    token we did not make, or made for another query."""
    if not token:
        return ""
    if len(token) > 400:
        raise ValueError(NOT_OURS)
    body, dot, tag = token.partition(".")
    try:
        raw, mac = _unb64(body), _unb64(tag)
    except ValueError:
        raise ValueError(NOT_OURS) from None
    if not dot or not hmac.compare_digest(mac, _mac(raw, query)):
        raise ValueError(NOT_OURS)
    return raw.decode()
