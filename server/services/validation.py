"""Request field checks shared by services; each failure names the field."""

from __future__ import annotations

import json
import math
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
    """Parse ``text`` as JSON any language reads back the same; each refusal names ``field``.

    Refused besides syntax errors: NaN and Infinity; numbers a double cannot hold (``1e400``
    would be stored as Infinity, ``1e-400`` would silently become 0); lone UTF-16 surrogates
    (``"\\ud800"``), which are not Unicode text and which no database or UTF-8 encoder stores.
    """
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidArgument(field, f"is larger than {max_bytes} bytes")
    if not text:
        raise InvalidArgument(field, "is required (JSON text)")
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_float)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(field, f"is not valid JSON: {e}") from None
    _check_values(field, doc)
    return doc


class _OutOfRange(str):
    """A number literal a double cannot hold; found (with its path) after parsing."""


def _float(literal: str) -> Any:
    value = float(literal)
    mantissa = literal.lower().partition("e")[0]
    if math.isinf(value) or (value == 0.0 and any(c in "123456789" for c in mantissa)):
        return _OutOfRange(literal)
    return value


def _json_path(parts: list[str | int]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if _NAME.fullmatch(p) else f"[{p!r}]"
                         for p in parts)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_values(field: str, doc: Any) -> None:
    """Refuse out-of-range numbers and lone surrogates anywhere in ``doc``, naming the path."""
    todo: list[tuple[list[str | int], Any]] = [([], doc)]
    while todo:
        path, v = todo.pop()
        if isinstance(v, _OutOfRange):
            raise InvalidArgument(field, f"number {v[:40]} at {_json_path(path)} is out of range "
                                  "(JSON numbers must fit a 64-bit float: magnitude at most "
                                  "1.7976931348623157e308, and a non-zero number must not round to 0)")
        if isinstance(v, str):
            _no_surrogate(field, v, path)
        elif isinstance(v, dict):
            for k, item in v.items():
                _no_surrogate(field, k, path, key=True)
                todo.append(([*path, k], item))
        elif isinstance(v, list):
            todo.extend(([*path, i], item) for i, item in enumerate(v))


def _no_surrogate(field: str, text: str, path: list[str | int], *, key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = f"a key of {_json_path(path)}" if key else _json_path(path)
        raise InvalidArgument(field, f"has a lone surrogate (\\u{ord(text[e.start]):04x}) in the string "
                              f"at {where}; JSON text must be valid Unicode") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")
