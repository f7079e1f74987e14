"""Page tokens: the opaque text a client passes back to get the next page of a list."""

from __future__ import annotations

import base64


def encode_token(value: str) -> str:
    """The token for the page that starts after ``value`` (an id or a name); "" for none."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=") if value else ""


def decode_token(token: str) -> str:
    """The key a token stands for ("" for no token). Raises ValueError on a token we did not
    make."""
    if not token:
        return ""
    try:
        value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except Exception as e:
        raise ValueError("not a page token from this server") from e
    # Tokens hold ids and names (printable ASCII); anything else, such as a NUL that
    # PostgreSQL refuses in a text parameter, was not made here.
    if not value or len(value) > 200 or not all("\x21" <= ch <= "\x7e" for ch in value):
        raise ValueError("not a page token from this server")
    return value
