"""gRPC-Web and Connect adapter (connectrpc) and the built UI, served as one ASGI app on one origin.

- ``POST /airlock.v1.<Service>/<Method>`` speaking gRPC-Web (``application/grpc-web[+proto|+json]``)
  or Connect (unary ``application/proto`` or ``application/json``; streams
  ``application/connect+proto`` or ``application/connect+json``) goes to the generated
  ``*ASGIApplication`` of that service, wrapped by :class:`ConnectAuth`, which shares the gRPC
  adapter's checks (``server.transport.auth.authorize``) and its error table
  (``server.transport.errors.to_status``); the gRPC status code becomes the connectrpc ``Code``
  of the same name. Connect with JSON is what ``curl`` or any HTTP library can send. gRPC itself
  (``application/grpc``) is refused with 415: it needs HTTP trailers, which this HTTP/1.1 server
  has not; native clients use the gRPC port.
- ``GET /healthz`` answers ``ok`` (503 while shutting down, and while the control plane's
  health check finds the database unreachable: ``database_ok``).
- Any other ``GET``/``HEAD`` serves a file of the built UI (``server/webui/``) with security
  headers; unknown paths without a file extension fall back to ``index.html`` (client routing).
- CORS is off unless ``cors_origins`` is set; then exactly those origins may call the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import mimetypes
import socket
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextvars import Token
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf.message import DecodeError, Message

from airlock.v1 import (
    admin_service_connect,
    approval_service_connect,
    audit_service_connect,
    registry_service_connect,
    run_service_connect,
    usage_service_connect,
    workflow_service_connect,
)
from server.domain.principal import Principal
from server.logs import REQUEST_ID_HEADER, request_context, request_id_for
from server.services.admin import AdminService
from server.settings import ServerSettings
from server.transport.auth import PACKAGE, authorize
from server.transport.context import reset_principal, set_principal
from server.transport.errors import bad_protobuf, log_failure, to_status
from server.transport.handlers import (
    SERVICES,
    AdminHandlers,
    ApprovalHandlers,
    AuditHandlers,
    RegistryHandlers,
    RunHandlers,
    Services,
    UsageHandlers,
    WorkflowHandlers,
)
from server.transport.streams import recheck_period, rechecked

log = logging.getLogger(__name__)

WEBUI_DIR = Path(__file__).resolve().parent.parent / "webui"
GRPC_WEB_CONTENT_TYPES = frozenset({"application/grpc-web", "application/grpc-web+proto",
                                    "application/grpc-web+json"})
CONNECT_UNARY_CONTENT_TYPES = frozenset({"application/proto", "application/json"})
CONNECT_STREAM_CONTENT_TYPES = frozenset({"application/connect+proto", "application/connect+json"})
API_CONTENT_TYPES = GRPC_WEB_CONTENT_TYPES | CONNECT_UNARY_CONTENT_TYPES | CONNECT_STREAM_CONTENT_TYPES
CORS_ALLOW_HEADERS = ("content-type, authorization, x-grpc-web, x-user-agent, "
                      "connect-protocol-version, connect-timeout-ms, grpc-timeout")
CORS_EXPOSE_HEADERS = f"grpc-status, grpc-message, {REQUEST_ID_HEADER}"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
UI_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
SHUTTING_DOWN = "server is shutting down; reconnect"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METHOD_PATHS = frozenset(f"/{svc.full_name}/{m.name}" for svc in SERVICES for m in svc.methods)

# grpc.StatusCode -> connectrpc Code, by name (gRPC spells CANCELLED with two Ls).
_CODES = {**{c.name: c for c in Code}, "CANCELLED": Code.CANCELED}


def connect_error(exc: BaseException) -> ConnectError:
    """The ConnectError for an exception, through the same table as gRPC (internals never leak)."""
    code, message = to_status(exc)
    return ConnectError(_CODES.get(code.name, Code.INTERNAL), message)


def _grpc_status_of(code: Code) -> int:
    """Numeric gRPC status of a connectrpc Code (for responses this module writes itself)."""
    name = "CANCELLED" if code is Code.CANCELED else code.name
    return int(grpc.StatusCode[name].value[0])


class ProtoCodec:
    """connectrpc's binary codec for google.protobuf messages, with the gRPC port's wording of a
    body it cannot parse (the field at fault named, never protobuf's text)."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, ValueError, RecursionError):
            raise ConnectError(Code.INVALID_ARGUMENT,
                               bad_protobuf(message_class.DESCRIPTOR, bytes(data))) from None


class ConnectAuth:
    """connectrpc interceptors: authenticate and check the role before the body is read (the
    first, a metadata interceptor; so bad bytes without a key are UNAUTHENTICATED, as on the
    gRPC port), then hold the caller and map errors around the handler (as the gRPC one does)."""

    def __init__(self, admin: AdminService, closing: asyncio.Event) -> None:
        self.admin = admin
        self.closing = closing
        self._callers: weakref.WeakKeyDictionary[RequestContext, Principal] = (
            weakref.WeakKeyDictionary())
        self.gate = _Gate(self)

    async def _authorize(self, ctx: RequestContext) -> Principal:
        method = ctx.method
        operation = f"{method.service_name.removeprefix(PACKAGE)}.{method.name}"
        return await authorize(self.admin, operation, ctx.request_headers.get("authorization"))

    async def _enter(self, ctx: RequestContext) -> Token[Principal]:
        principal = self._callers.pop(ctx, None)
        if principal is None:
            try:
                principal = await self._authorize(ctx)
            except Exception as e:  # also a database failure: internals never leak
                raise connect_error(e) from None
        return set_principal(principal)

    @staticmethod
    def _leave(token: Token[Principal]) -> None:
        with contextlib.suppress(ValueError):  # closed from another context (garbage collector)
            reset_principal(token)

    async def intercept_unary(self, call_next: Callable[[Any, RequestContext], Awaitable[Any]],
                              request: Any, ctx: RequestContext) -> Any:
        token = await self._enter(ctx)
        try:
            return await call_next(request, ctx)
        except ConnectError:
            raise
        except Exception as e:
            raise connect_error(e) from None
        finally:
            self._leave(token)

    async def intercept_server_stream(
        self, call_next: Callable[[Any, RequestContext], AsyncIterator[Any]], request: Any,
        ctx: RequestContext,
    ) -> AsyncIterator[Any]:
        token = await self._enter(ctx)
        try:
            stream = rechecked(call_next(request, ctx), lambda: self._authorize(ctx),
                               recheck_period(self.admin))
            # Closed now when the client goes away, not whenever they are collected.
            async with contextlib.aclosing(stream), \
                    contextlib.aclosing(self._until_closing(stream)) as items:
                async for item in items:
                    yield item
        finally:
            self._leave(token)

    async def _until_closing(self, stream: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
        """The handler's messages; ends the stream with UNAVAILABLE when the server stops.

        The handler runs in its own task, so a shutdown (or a client disconnect, which
        cancels this generator) stops it at whatever it awaits, inside its own frames.
        """
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1)

        async def produce() -> None:
            try:
                async for item in stream:
                    await queue.put(("item", item))
                await queue.put(("end", None))
            except Exception as e:
                await queue.put(("error", e))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

        producer = asyncio.create_task(produce(), name="grpcweb-stream")
        closing = asyncio.create_task(self.closing.wait())
        try:
            while True:
                get = asyncio.create_task(queue.get())
                done, _ = await _wait_first(get, closing)
                if get not in done:
                    get.cancel()
                    raise ConnectError(Code.UNAVAILABLE, SHUTTING_DOWN)
                kind, value = get.result()
                if kind == "end":
                    return
                if kind == "error":
                    if isinstance(value, ConnectError):
                        raise value
                    raise connect_error(value) from None
                yield value
        finally:
            closing.cancel()
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer


class _Gate:
    """The leading metadata interceptor: the caller is checked before the request is parsed."""

    def __init__(self, auth: ConnectAuth) -> None:
        self.auth = auth

    async def on_start(self, ctx: RequestContext) -> None:
        # The request id as a trailer in every protocol (WebApp sets it and the header).
        request_id = ctx.request_headers.get(REQUEST_ID_HEADER)
        if request_id:
            ctx.response_trailers.add(REQUEST_ID_HEADER, request_id)
        try:
            self.auth._callers[ctx] = await self.auth._authorize(ctx)
        except Exception as e:  # also a database failure: internals never leak
            error = connect_error(e)
            self._log(ctx, error)  # on_end is not called when on_start raises
            raise error from None

    async def on_end(self, token: None, ctx: RequestContext, error: Exception | None, /) -> None:
        self.auth._callers.pop(ctx, None)
        if error is not None:
            self._log(ctx, error)

    @staticmethod
    def _log(ctx: RequestContext, error: Exception) -> None:
        code, message = ((error.code.name, error.message) if isinstance(error, ConnectError)
                         else ("UNKNOWN", type(error).__name__))
        log_failure(f"/{ctx.method.service_name}/{ctx.method.name}",
                    "CANCELLED" if code == "CANCELED" else code, message)


async def _wait_first(*tasks: asyncio.Task[Any]) -> tuple[set[asyncio.Task[Any]], Any]:
    try:
        return await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        raise


# --- the ASGI app -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    gzipped: bytes | None
    content_type: str
    key: tuple[int, int]


_COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml",
                 "application/manifest+json")
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".svg": "image/svg+xml", ".json": "application/json", ".map": "application/json",
          ".ico": "image/x-icon", ".png": "image/png", ".woff2": "font/woff2",
          ".txt": "text/plain; charset=utf-8", ".webmanifest": "application/manifest+json"}


class StaticFiles:
    """Read-only files under one directory, with a small in-memory cache (gzip included)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, _File] = {}

    def find(self, url_path: str) -> Path | None:
        """The file for a URL path, or None. Refuses traversal and hidden files."""
        if "\x00" in url_path or "\\" in url_path:
            return None
        parts = [p for p in url_path.split("/") if p]
        if any(p.startswith(".") for p in parts):
            return None
        try:
            root = self.root.resolve(strict=True)
            candidate = root.joinpath(*parts).resolve() if parts else root / "index.html"
        except (OSError, RuntimeError):
            return None
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
        return candidate

    def load(self, path: Path) -> _File:
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit is not None and hit.key == key:
            return hit
        body = path.read_bytes()
        ctype = _TYPES.get(path.suffix.lower()) or (
            mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        gz = (gzip.compress(body, 9, mtime=0)
              if len(body) > 512 and ctype.startswith(_COMPRESSIBLE) else None)
        f = _File(body, gz, ctype, key)
        if len(self._cache) > 512:
            self._cache.clear()
        self._cache[path] = f
        return f


class WebApp:
    """The ASGI app: gRPC-Web for every service, /healthz, and the UI."""

    def __init__(self, services: Services, settings: ServerSettings, *,
                 webui_dir: Path = WEBUI_DIR) -> None:
        self.closing = asyncio.Event()
        self.database_ok = True  # set by the control plane's database health check
        self.cors_origins = frozenset(settings.cors_origins)
        self.static = StaticFiles(webui_dir)
        auth = ConnectAuth(services.admin, self.closing)
        options: dict[str, Any] = {
            "interceptors": [auth.gate, auth], "read_max_bytes": settings.max_message_bytes,
            # JSON refuses unknown fields: a misspelt field is INVALID_ARGUMENT, not ignored.
            "codecs": [ProtoCodec(),
                       google_protobuf_json_codec(ignore_unknown_fields=False)],
        }
        apps: list[Any] = [
            registry_service_connect.RegistryServiceASGIApplication(
                RegistryHandlers(services), **options),
            run_service_connect.RunServiceASGIApplication(RunHandlers(services), **options),
            approval_service_connect.ApprovalServiceASGIApplication(
                ApprovalHandlers(services), **options),
            admin_service_connect.AdminServiceASGIApplication(AdminHandlers(services), **options),
            workflow_service_connect.WorkflowServiceASGIApplication(
                WorkflowHandlers(services), **options),
            usage_service_connect.UsageServiceASGIApplication(UsageHandlers(services), **options),
            audit_service_connect.AuditServiceASGIApplication(AuditHandlers(services), **options),
        ]
        self.services: dict[str, ASGIApp] = {app.path: app for app in apps}

    def close(self) -> None:
        """Refuse new calls and end open streams with UNAVAILABLE (clients reconnect)."""
        self.closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served (uvicorn runs with ws="none")
        path: str = scope["path"]
        method: str = scope["method"]
        headers = _headers(scope)
        if path.startswith("/" + PACKAGE):
            await self._api(scope, receive, send, path, method, headers)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            body = (b"shutting down\n" if self.closing.is_set()
                    else b"database unavailable\n" if not self.database_ok else b"ok\n")
            await _plain(send, 200 if body == b"ok\n" else 503, body, head=method == "HEAD")
        elif method in ("GET", "HEAD"):
            await self._ui(send, path, method, headers)
        else:
            await _plain(send, 405, b"method not allowed\n", extra=[(b"allow", b"GET, HEAD")])

    # --- API ------------------------------------------------------------------------------------

    def _cors(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        origin = headers.get("origin")
        if not self.cors_origins or origin is None or origin not in self.cors_origins:
            return []
        return [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin"),
                (b"access-control-expose-headers", CORS_EXPOSE_HEADERS.encode())]

    async def _api(self, scope: Scope, receive: Receive, send: Send, path: str, method: str,
                   headers: dict[str, str]) -> None:
        request_id = request_id_for(headers.get(REQUEST_ID_HEADER))
        # The handlers see the request id the server settled on (the caller's, if sane).
        scope = {**scope, "headers": [
            *((k, v) for k, v in scope.get("headers", ()) if k.lower() != REQUEST_ID_HEADER.encode()),
            (REQUEST_ID_HEADER.encode(), request_id.encode())]}
        with request_context(request_id):
            await self._api_call(scope, receive, send, path, method, headers,
                                 [(REQUEST_ID_HEADER.encode(), request_id.encode())])

    async def _api_call(self, scope: Scope, receive: Receive, send: Send, path: str, method: str,
                        headers: dict[str, str], rid: list[tuple[bytes, bytes]]) -> None:
        allowed = self._cors(headers)
        cors = allowed + rid  # what every answer below carries
        if method == "OPTIONS":
            if not allowed:
                await _plain(send, 403, b"origin not allowed\n", extra=rid)
                return
            await send({"type": "http.response.start", "status": 204, "headers": [
                *cors, (b"access-control-allow-methods", b"POST"),
                (b"access-control-allow-headers", CORS_ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"7200")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if method != "POST":
            await _plain(send, 405, b"method not allowed\n", extra=[(b"allow", b"POST"), *cors])
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in API_CONTENT_TYPES:
            await _plain(send, 415, b"served here: gRPC-Web (application/grpc-web+proto) and "
                         b"Connect (application/json, application/proto, application/connect+json, "
                         b"application/connect+proto); gRPC is served on the gRPC port\n",
                         extra=[(b"accept-post", b"application/json, application/proto"), *cors])
            return
        if path not in METHOD_PATHS:
            log_failure(path, "UNIMPLEMENTED", "unknown method")
            await _error(send, ctype, Code.UNIMPLEMENTED, f"unknown method {path}", cors)
            return
        if self.closing.is_set():
            log_failure(path, "UNAVAILABLE", SHUTTING_DOWN)
            await _error(send, ctype, Code.UNAVAILABLE, SHUTTING_DOWN, cors)
            return
        app = self.services[path[: path.index("/", 1)]]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *cors,
                                                  (b"x-content-type-options", b"nosniff")]}
            await send(message)

        await app(scope, receive, send_with_headers)

    # --- UI -------------------------------------------------------------------------------------

    async def _ui(self, send: Send, path: str, method: str, headers: dict[str, str]) -> None:
        found = self.static.find(path)
        if found is None:
            last = path.rstrip("/").rsplit("/", 1)[-1]
            if "." in last:  # a missing asset, not a client-side route
                await _plain(send, 404, b"not found\n", extra=list(UI_SECURITY_HEADERS))
                return
            found = self.static.find("/index.html")
        if found is None:
            await _plain(send, 404, b"The UI is not built: run ui/build.sh\n",
                         extra=list(UI_SECURITY_HEADERS))
            return
        f = await asyncio.to_thread(self.static.load, found)
        use_gzip = f.gzipped is not None and "gzip" in headers.get("accept-encoding", "")
        body = f.gzipped if use_gzip and f.gzipped is not None else f.body
        immutable = path.startswith("/assets/") and found.name != "index.html"
        out = [(b"content-type", f.content_type.encode()),
               (b"content-length", str(len(body)).encode()),
               (b"cache-control",
                b"public, max-age=31536000, immutable" if immutable else b"no-cache"),
               *UI_SECURITY_HEADERS]
        if f.gzipped is not None:
            out.append((b"vary", b"Accept-Encoding"))
        if use_gzip:
            out.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


async def _plain(send: Send, status: int, body: bytes, *, head: bool = False,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    extra = extra or []
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store"),
               *extra]
    if not any(k == b"x-content-type-options" for k, _ in extra):
        headers.append((b"x-content-type-options", b"nosniff"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _error(send: Send, ctype: str, code: Code, message: str,
                 extra: list[tuple[bytes, bytes]]) -> None:
    """An error in the protocol the request spoke (this module answers some calls itself)."""
    if ctype in GRPC_WEB_CONTENT_TYPES:
        await _grpc_web_status(send, code, message, extra)
        return
    from connectrpc._protocol import ConnectWireError

    wire = ConnectWireError(code, message, details=())
    body = wire.to_json_bytes()
    if ctype in CONNECT_STREAM_CONTENT_TYPES:  # a stream: 200, the error in the end message
        end = b'{"error":' + body + b"}"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", ctype.encode()), (b"x-content-type-options", b"nosniff"), *extra]})
        await send({"type": "http.response.body", "body": b"\x02" + len(end).to_bytes(4, "big") + end})
        return
    await send({"type": "http.response.start", "status": wire.to_http_status().code, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _grpc_web_status(send: Send, code: Code, message: str,
                           extra: list[tuple[bytes, bytes]]) -> None:
    """A gRPC-Web trailers-only response (status in the headers, no body)."""
    from urllib.parse import quote

    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/grpc-web+proto"),
        (b"grpc-status", str(_grpc_status_of(code)).encode()),
        (b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()),
        (b"x-content-type-options", b"nosniff"), *extra]})
    await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def build_web_app(services: Services, settings: ServerSettings, *,
                  webui_dir: Path = WEBUI_DIR) -> WebApp:
    return WebApp(services, settings, webui_dir=webui_dir)


# --- uvicorn, embedded ----------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def split_host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class WebServer:
    """Serves a :class:`WebApp` on uvicorn as a task of the running loop; port 0 is supported."""

    def __init__(self, app: WebApp, listen: str, *, reuse_port: bool = False) -> None:
        self.app = app
        self.host, self.port = split_host_port(listen)
        self.reuse_port = reuse_port  # SO_REUSEPORT: several serving processes share the port
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        # Bind here, not in uvicorn: a busy port raises OSError instead of sys.exit().
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, host=self.host, port=self.port, lifespan="off",
                                log_level="warning", log_config=None, access_log=False,
                                ws="none", server_header=False, timeout_graceful_shutdown=5)
        self.server = _Server(config)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="uvicorn")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the start-up error
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.005)

    async def stop(self, grace: float = 5.0) -> None:
        """End open streams (UNAVAILABLE), let calls in flight finish, then close."""
        if self._task is None:
            return
        self.app.close()
        self.server.config.timeout_graceful_shutdown = max(int(grace), 1)
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace + 2)
        except TimeoutError:
            self.server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None
