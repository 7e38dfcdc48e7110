"""A small HTTP server with a route table: the standard library's ThreadingHTTPServer parses HTTP (one thread
per connection); this module adds routes (method + path pattern → handler), one-line JSON errors, body limits
and the checks that guard mutating requests (bearer token, Host header, JSON content type).

Adding an endpoint::

    def preview(request: Request) -> Response:
        return Response(200, render(request.params["source"]), "text/html; charset=utf-8")

    server.routes.add("GET", "/preview/{source}", preview)

A handler gets a :class:`Request` and returns a :class:`Response` whose body is bytes or an iterator of byte
chunks (streamed as they come, e.g. ``multipart/x-mixed-replace`` frames; the connection closes after it), or
raises :class:`HttpError`. Routes that change state (POST, PUT, PATCH, DELETE, or ``mutating=True``) pass the
:class:`Guard` first.
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from streamer.config import NO_BIND, TOKEN_ENV
from streamer.errors import ConfigError, StreamerError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes a request body may have
IDLE_TIMEOUT_S = 30.0  # a kept-alive connection idle this long is closed (its thread ends)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
ADDRESS_HINT = "give HOST:PORT (e.g. 127.0.0.1:8090, or 0.0.0.0:8090 for every interface), PORT alone for " \
               "127.0.0.1:PORT, or none"


class HttpError(StreamerError):
    """An answer other than success: ``status`` and a one-line message (with its hint) as JSON."""

    def __init__(self, status: int, message: str, hint: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, hint)
        self.status = status
        self.headers = dict(headers or {})


# -- addresses -----------------------------------------------------------------------------------------
def parse_address(text: str, where: str = "--http") -> tuple[str, int] | None:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1) → (host, port); none, off or '' → None."""
    text = text.strip()
    if text.lower() in NO_BIND:
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    bad_host = not host or any(c in host for c in "/ @")
    if bad_host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{where}: bad address {text!r}", ADDRESS_HINT)
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for anything else (0.0.0.0, a LAN address, a name)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- requests, responses, routes -------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    method: str
    path: str  # decoded path, without the query
    params: dict[str, str]  # the {name} segments of the route's pattern
    query: dict[str, list[str]]
    headers: Message
    body: bytes = b""
    client: str = ""

    def json(self) -> Any:
        """The body as JSON: 415 unless sent as application/json (a browser cannot send that cross-site
        without a CORS preflight, which this server never grants), 400 when it does not parse."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, f"{self.method} {self.path} takes a JSON body",
                            "send it with Content-Type: application/json")
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"malformed JSON body: {exc}",
                            'send a JSON object, e.g. {"source": "rtsp://cam1/live"}') from None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, (json.dumps(obj, indent=1) + "\n").encode(), "application/json", headers)

    @classmethod
    def error(cls, exc: HttpError) -> Response:
        return cls.json({"error": str(exc), "status": exc.status}, exc.status, tuple(exc.headers.items()))


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/sources/{name}": a {name} segment matches one path segment
    handler: Handler
    mutating: bool = False
    _parts: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self._parts):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self._parts, parts, strict=True):
            m = _SEGMENT.fullmatch(want)
            if m:
                if not got:
                    return None
                params[m.group(1)] = got
            elif want != got:
                return None
        return params


def _split(path: str) -> list[str]:
    return [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []


class Routes:
    """The route table. ``add`` a handler for a method and a path pattern; ``find`` answers 404 and 405."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._lock = threading.Lock()

    def add(self, method: str, pattern: str, handler: Handler, *, mutating: bool | None = None) -> Route:
        method = method.upper()
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern {pattern!r} must start with /")
        parts = tuple(pattern.strip("/").split("/")) if pattern.strip("/") else ()
        route = Route(method, pattern, handler, method in MUTATING if mutating is None else mutating, parts)
        shape = tuple(_SEGMENT.sub("{}", part) for part in parts)
        with self._lock:
            if any(r.method == method and tuple(_SEGMENT.sub("{}", x) for x in r._parts) == shape
                   for r in self._routes):
                raise ValueError(f"{method} {pattern} is already routed")
            self._routes.append(route)
        return route

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        parts = _split(path)
        allowed: list[str] = []
        with self._lock:
            routes = list(self._routes)
        for route in routes:
            params = route.match(parts)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            raise HttpError(405, f"{method} is not allowed on {path}", f"use {', '.join(sorted(allowed))}",
                            {"Allow": ", ".join(sorted(allowed))})
        raise HttpError(404, f"no such endpoint: {path}",
                        "see docs/control.md: /metrics, /healthz, /readyz, /sources")


# -- who may change things -------------------------------------------------------------------------------
class Guard:
    """Checks a request to a mutating route. With a token: ``Authorization: Bearer <token>`` or 401. Without
    one: allowed only when the server is bound to loopback, and then only for a Host header that names a
    loopback address (a web page that rebinds its own name to 127.0.0.1 is refused)."""

    def __init__(self, host: str, token: str = "") -> None:
        self.host = host
        self.token = token
        self.loopback = is_loopback(host)

    @property
    def open_to_changes(self) -> bool:
        return bool(self.token) or self.loopback

    def check(self, request: Request) -> None:
        if self.token:
            auth = request.headers.get("Authorization") or ""
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                     self.token.encode()):
                raise HttpError(401, f"{request.method} {request.path} needs the control plane's token"
                                     + (" (the one given is wrong)" if auth else ""),
                                f"send Authorization: Bearer <token> (streamer-ctl --token, or {TOKEN_ENV})",
                                {"WWW-Authenticate": 'Bearer realm="streamer"'})
            return
        if not self.loopback:
            raise HttpError(401, f"{request.method} {request.path} is refused: the control plane listens on "
                                 f"{self.host}, beyond this machine, and has no token",
                            f"restart with --http-token TOKEN or {TOKEN_ENV} set",
                            {"WWW-Authenticate": 'Bearer realm="streamer"'})
        host = (request.headers.get("Host") or "").strip()
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        if host and not is_loopback(name):
            raise HttpError(403, f"{request.method} {request.path} with Host {host!r} is refused",
                            "address the control plane as 127.0.0.1 or localhost")


# -- the server ------------------------------------------------------------------------------------------
class HttpServer:
    """The route table served on (host, port) by a ThreadingHTTPServer in a daemon thread."""

    def __init__(self, host: str, port: int, guard: Guard | None = None, where: str = "--http") -> None:
        self.host = host
        self.port = port
        self.routes = Routes()
        self.guard = guard or Guard(host)
        self.where = where
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> HttpServer:
        """Bind and serve; ConfigError (one line) when the address cannot be bound."""
        owner = self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        class Handler(_RequestHandler):
            server_owner = owner

        try:
            self._server = Server((self.host, self.port), Handler)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"{self.where}: cannot listen on {self.host}:{self.port}: {reason}",
                              "another program uses that port, or the address is not on this machine: "
                              "choose another --http (e.g. 127.0.0.1:0 for any free port)") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"http {self.host}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> HttpServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle(self, method: str, target: str, headers: Message, body: bytes, client: str) -> Response:
        """One request → its response (errors included); never raises."""
        parts = urlsplit(target)
        path = unquote(parts.path) or "/"
        try:
            route, params = self.routes.find(method, parts.path or "/")
            request = Request(method, path, params, parse_qs(parts.query), headers, body, client)
            if route.mutating:
                self.guard.check(request)
            return route.handler(request)
        except HttpError as exc:
            return Response.error(exc)
        except Exception as exc:
            log.exception("control plane: %s %s failed", method, path)
            return Response.error(HttpError(500, f"internal error: {type(exc).__name__}: {exc}",
                                            "see the streamer's log"))


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    server_owner: HttpServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server_version = "streamer"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "chunked request bodies are not accepted", "send a Content-Length")
        length_text = self.headers.get("Content-Length") or "0"
        if not length_text.isdigit():
            raise HttpError(400, f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY:
            raise HttpError(413, f"request body of {length} bytes is over {MAX_BODY}")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
        except HttpError as exc:
            self.close_connection = True  # the unread body would be taken for the next request
            self._send(method, Response.error(exc))
            return
        response = self.server_owner.handle(method, self.path, self.headers, body, self.client_address[0])
        self._send(method, response)

    def _send(self, method: str, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers:
                self.send_header(name, value)
            if isinstance(response.body, (bytes, bytearray)):
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(response.body)
                return
            self.close_connection = True  # a stream ends when the connection closes
            self.send_header("Connection", "close")
            self.end_headers()
            if method == "HEAD":
                return
            chunks = response.body
            try:
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # a generator's cleanup runs when the client goes away, too
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away
        except OSError as exc:
            self.close_connection = True
            with contextlib.suppress(Exception):
                log.debug("control plane: writing the response failed: %s", exc)
