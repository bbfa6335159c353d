"""The one HTTP layer: any WSGI app served by waitress, and what every response carries.

mailer.web (unsubscribe + archive) and mailer.preview are plain WSGI apps; this module owns
everything between them and the socket, and nothing of theirs:

- `Server`: waitress on one socket with a fixed pool of worker threads. An idle or slow
  connection costs a socket in waitress' event loop, never a thread; headers, bodies, the
  time a request takes to arrive and open connections are bounded (web/limits.py); client
  junk gets a 4xx status line and no traceback.
- `limit_target`: 414 for a request-target over MAX_TARGET. (Waitress hands a URL of any
  length up to max_request_header_size to the app, and answers 431 only beyond that.)
- `headers`: the security headers of every response; each response chooses its CSP.
- `url`, `is_loopback`, `host_is_loopback`: the address to show and the DNS-rebinding guard.
- `HTTPError`, `query`, `read_body`, `form`: request parsing that fails as 400 / 413.

Under another server (`gunicorn 'mailer.web:app'`) the apps still send the same headers;
that server brings its own limits (gunicorn: 414 past limit_request_line).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from email import policy as email_policy
from email.parser import BytesParser
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qs

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.task import ThreadedTaskDispatcher

from mailer.web.limits import GuardedServer, Limits

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

THREADS = 8  # worker threads: requests served at once (connections are not threads)
CHANNEL_TIMEOUT = 30  # seconds an idle connection (no request in progress) stays open
MAX_TARGET = 8 * 1024  # the longest request-target (path + query) answered; 414 beyond
# Above MAX_TARGET so that a long URL reaches limit_target (414), not waitress' own 431.
MAX_HEADER = 128 * 1024
MAX_BODY = 1024 * 1024  # waitress buffers a body before the app runs: 413 beyond this
SHUTDOWN_SECONDS = 5.0  # how long close() waits for requests in progress

# For responses that show nothing: text, JSON, errors.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
NO_STORE = "no-store"


# -- what every response carries --------------------------------------------------------------


def headers(
    content_type: str,
    length: int,
    *,
    csp: str = DEFAULT_CSP,
    cache: str = NO_STORE,
    extra: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """A response's headers: its own type, length, CSP and caching, and the security set."""
    if "frame-ancestors" not in csp:  # nobody frames our pages (X-Frame-Options for old browsers)
        csp = f"{csp.rstrip('; ')}; frame-ancestors 'none'"
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(length)),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", csp),
        ("Cache-Control", cache),
        *extra,
    ]


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def url(host: str, port: int) -> str:
    """http://host:port/ for a bound address, an IPv6 host in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """A name or address that only this machine reaches."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_is_loopback(environ: WSGIEnvironment) -> bool:
    """The Host header names this machine: a page on another site, its name rebound to
    127.0.0.1, sends its own name and is refused."""
    host = str(environ.get("HTTP_HOST") or "")
    name = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return is_loopback(name)


# -- reading a request --------------------------------------------------------------------------


class HTTPError(Exception):
    """Raised inside a route to answer with an error status (and page, in mailer.web)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def query(environ: WSGIEnvironment, max_fields: int = 20) -> dict[str, list[str]]:
    """The query string's fields; 400 for one that is not valid."""
    try:
        return parse_qs(
            str(environ.get("QUERY_STRING") or ""),
            keep_blank_values=True,
            max_num_fields=max_fields,
            errors="replace",
        )
    except ValueError:
        raise HTTPError(400, "The address of this page is not valid.") from None


def read_body(environ: WSGIEnvironment, limit: int, drain: int = MAX_BODY) -> bytes:
    """The request body, at most `limit` bytes (413 beyond; read and dropped up to `drain`)."""
    stream = environ.get("wsgi.input")
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    too_large = HTTPError(413, "The request is too large.")
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise HTTPError(400, "The request is not valid.") from None
        if length < 0:
            raise HTTPError(400, "The request is not valid.")
        if length > limit:
            if stream is not None and length <= drain:
                # Read it anyway: closing on unread data makes the client see a reset, not 413.
                while length > 0:
                    chunk = stream.read(min(length, 65536))
                    if not chunk:
                        break
                    length -= len(chunk)
            raise too_large
        return bytes(stream.read(length)) if length and stream is not None else b""
    if environ.get("wsgi.input_terminated") and stream is not None:
        data = stream.read(limit + 1)  # chunked upload behind a server that de-chunks it
        if len(data) > limit:
            raise too_large
        return bytes(data)
    return b""  # no length and no terminated stream: reading would block


def form(environ: WSGIEnvironment, body: bytes) -> dict[str, str]:
    """The first value of each field of a urlencoded or multipart/form-data body."""
    ctype = str(environ.get("CONTENT_TYPE") or "")
    if ctype.lower().startswith("multipart/form-data"):
        return _multipart(ctype, body)
    try:
        text = body.decode("utf-8", "replace")
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=50)
    except ValueError:
        raise HTTPError(400, "The request is not valid.") from None
    return {k: v[0] for k, v in parsed.items() if v}


def _multipart(ctype: str, body: bytes) -> dict[str, str]:
    try:
        head = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n"
        message = BytesParser(policy=email_policy.HTTP).parsebytes(head + body)
        out: dict[str, str] = {}
        if not message.is_multipart():
            return out
        for part in message.walk():
            if part is message or part.is_multipart():
                continue
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and name not in out and isinstance(payload, bytes):
                out[name] = payload.decode("utf-8", "replace").strip()
        return out
    except Exception:  # a malformed body is a bad request, whatever the parser tripped on
        raise HTTPError(400, "The request is not valid.") from None


# -- middleware -------------------------------------------------------------------------------


def limit_target(app: WSGIApplication, limit: int = MAX_TARGET) -> WSGIApplication:
    """414 for a request-target longer than `limit`, before the app sees it."""

    def limited(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("REQUEST_URI")
        if target is None:
            target = f"{environ.get('PATH_INFO', '')}?{environ.get('QUERY_STRING', '')}"
        if len(str(target)) > limit:
            body = b"request-target too long\n"
            start_response(status_line(414), headers("text/plain; charset=utf-8", len(body)))
            return [body]
        return app(environ, start_response)

    return limited


def access_log(app: WSGIApplication, stream: TextIO) -> WSGIApplication:
    """A line per request on `stream`: never the query string (a token names its reader)."""

    def logged(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(
            status: str, response_headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Any:
            size = next((v for k, v in response_headers if k.lower() == "content-length"), "-")
            path = str(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "")
            path = "".join(c if c.isprintable() else "?" for c in path.split("?", 1)[0][:200])
            when = time.strftime("%d/%b/%Y %H:%M:%S")
            client = environ.get("REMOTE_ADDR", "-")
            method = environ.get("REQUEST_METHOD", "-")
            stream.write(f'{client} - - [{when}] "{method} {path}" {status[:3]} {size}\n')
            stream.flush()
            return start_response(status, response_headers, exc_info)

        return app(environ, start)

    return logged


# -- the server -------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (an IPv6 literal too); OSError if it cannot be."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class Server:
    """A bound waitress server for one WSGI app: run() until stop() or Ctrl-C, then close()."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = THREADS,
        log: TextIO | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.threads = threads
        self._sock = _bind(host, port)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.url = url(host, self.port)
        self._map: dict[int, Any] = {}  # waitress' event loop: the listener and connections
        self._stopping = threading.Event()
        self._closed = False
        wrapped = limit_target(app)
        if log is not None:  # outermost: a 414 is logged too
            wrapped = access_log(wrapped, log)
        try:
            adj = Adjustments(
                sockets=[self._sock],
                threads=threads,
                ident="mailer",  # the Server header: not waitress', not Python's version
                channel_timeout=CHANNEL_TIMEOUT,
                cleanup_interval=min(10, CHANNEL_TIMEOUT),
                max_request_header_size=MAX_HEADER,
                max_request_body_size=MAX_BODY,
                log_socket_errors=False,  # a client resetting its connection is no traceback
                # X-Forwarded-For reaches the app, which believes it only from trusted_proxies.
                clear_untrusted_proxy_headers=False,
                expose_tracebacks=False,
            )
            dispatcher = ThreadedTaskDispatcher()
            dispatcher.set_thread_count(threads)
            self._server = GuardedServer(
                wrapped,
                self._map,
                True,
                self._sock,
                dispatcher=dispatcher,
                adj=adj,
                bind_socket=False,
                sockinfo=(
                    self._sock.family,
                    self._sock.type,
                    self._sock.proto,
                    self._sock.getsockname(),
                ),
                limits=limits or Limits(),
            )
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self) -> None:
        """Serve until stop() is called; KeyboardInterrupt propagates (close() still needed)."""
        while not self._stopping.is_set() and self._map:
            # One poll at a time (not waitress' run(), which swallows Ctrl-C) so stop() works.
            wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)

    def stop(self) -> None:
        """Make run() return soon; safe from any thread."""
        self._stopping.set()
        if not self._closed:
            self._server.pull_trigger()  # wake the poll now rather than within a second

    def close(self) -> None:
        """Let requests in progress finish (up to SHUTDOWN_SECONDS), then close every socket."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._server.task_dispatcher.shutdown(timeout=SHUTDOWN_SECONDS)
        wasyncore.close_all(self._map, ignore_all=True)
        self._sock.close()
