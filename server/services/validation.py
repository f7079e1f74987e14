"""Request field checks shared by services; each failure names the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from server.domain.errors import InvalidArgument
from server.domain.models import Page
from server.services.page_tokens import decode_token, encode_token

T = TypeVar("T")

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


def require(field: str, value: str, *, pattern: str | None = None, max_len: int = 200) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    return check(field, value, pattern=pattern, max_len=max_len)


def check(field: str, value: str, *, pattern: str | None = None, max_len: int = 200) -> str:
    if len(value) > max_len:
        raise InvalidArgument(field, f"is longer than {max_len} characters")
    if value and pattern and not re.fullmatch(pattern, value):
        raise InvalidArgument(field, f"must match {pattern}")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class Paging:
    """A page request, checked: its size and the key the page starts after.

    Lists fetch ``fetch`` rows (one more than the page) to know whether another page follows;
    ``page`` cuts them to size and makes the next token from the last row's key.
    """

    size: int
    after: str
    query: Mapping[str, object]

    @classmethod
    def of(cls, size: int, token: str, query: Mapping[str, object]) -> Paging:
        """``query``: the list's name and every filter field; the token is bound to them."""
        n = page_size(size)
        try:
            after = decode_token(token, query)
        except ValueError as e:
            raise InvalidArgument("page_token", str(e)) from None
        return cls(n, after, query)

    @property
    def fetch(self) -> int:
        return self.size + 1

    def page(self, rows: Sequence[T], key: Callable[[T], str]) -> Page[T]:
        items = list(rows[: self.size])
        return Page(items, encode_token(key(items[-1]), self.query) if len(rows) > self.size else "")


def parse_json(field: str, text: str, *, max_bytes: int) -> Any:
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(field, f"is larger than {max_bytes} bytes")
    if not text:
        raise InvalidArgument(field, "is required (JSON text)")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(field, f"is not valid JSON: {e}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")
