"""The one table from domain error groups to status codes, shared by both transports."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.domain import errors as e

log = logging.getLogger(__name__)

# Most specific first; every AirlockError a service raises falls under one of these groups
# (ConfigError and the CLI's errors stop a local process and never reach a caller).
CODES: list[tuple[type[e.AirlockError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
]

INTERNAL_MESSAGE = "internal error; the server logged the details"


def log_failure(method: str, code: str, message: str) -> None:
    """The server's line for a call answered with an error (it carries the request id)."""
    log.info("%s answered %s: %s", method, code, message)


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and client-safe message for an exception raised by a service."""
    if isinstance(exc, e.AirlockError):
        for cls, code in CODES:
            if isinstance(exc, cls):
                return code, exc.message
    # Never send str(exc) of an unexpected error to the client: it may hold internals.
    log.exception("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


# --- requests whose bytes are not a valid message -------------------------------------------------


class _Malformed(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def bad_protobuf(descriptor: Descriptor, data: bytes) -> str:
    """The one wording, on every transport, of a request body protobuf could not parse.

    protobuf's own parse error names no field; this walks the wire bytes along the message
    descriptor to find the first field that is at fault (a string that is not valid UTF-8, at
    any depth; a length or varint running past the end) and names it as ``a.b[2].c``.
    """
    try:
        _walk(descriptor, memoryview(bytes(data)), "", 0)
    except _Malformed as e:
        return str(e)
    except RecursionError:
        return "request: nested too deeply"
    return f"request: could not be parsed as {descriptor.full_name}"


_MAX_DEPTH = 100  # protobuf's own default recursion limit


def _varint(data: memoryview, pos: int, field: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _Malformed(field, "truncated (a varint runs past the end of the message)")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Malformed(field, "malformed varint (longer than 10 bytes)")


def _walk(desc: Descriptor, data: memoryview, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed(path or "request", "nested too deeply")
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos, path or "request")
        number, wire = key >> 3, key & 7
        f = desc.fields_by_number.get(number)
        if f is None:
            name = f"{path}.#{number}" if path else f"#{number}"
            where = path or "request"
        else:
            name = f"{path}.{f.name}" if path else f.name
            if f.is_repeated:
                i = seen.get(number, 0)
                seen[number] = i + 1
                name = f"{name}[{i}]"
            where = name
        if number == 0:
            raise _Malformed(path or "request", "field number 0 is invalid")
        if wire == 0:
            _, pos = _varint(data, pos, where)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise _Malformed(where, "truncated (a fixed-size value runs past the end)")
        elif wire == 2:
            size, pos = _varint(data, pos, where)
            end = pos + size
            if end > len(data):
                raise _Malformed(where, f"truncated (length {size} runs past the end of the message)")
            chunk = data[pos:end]
            pos = end
            if f is None:
                continue
            if f.type == FieldDescriptor.TYPE_STRING:
                try:
                    str(chunk, "utf-8")
                except UnicodeDecodeError as e:
                    raise _Malformed(where, f"is not valid UTF-8 (byte {e.start})") from None
            elif f.type == FieldDescriptor.TYPE_MESSAGE:
                _walk(f.message_type, chunk, where, depth + 1)
        elif wire in (3, 4):
            return  # groups (proto2 only): leave these to the generic message
        else:
            raise _Malformed(where, f"invalid wire type {wire}")
