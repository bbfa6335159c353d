"""One careful HTTP GET of a feed: a deadline, a size cap, few redirects, and a conditional
request (If-None-Match / If-Modified-Since) so an unchanged feed costs a 304 and no body."""

from __future__ import annotations

import http.client
import importlib.metadata
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import IO, Any
from urllib.parse import urlsplit

from mailer.errors import EXIT_UNAVAILABLE, InputError, MailerError

TIMEOUT = 20.0  # seconds for the whole fetch, not per read
MAX_BYTES = 10 * 1024 * 1024  # the largest real feeds are a few MB
MAX_REDIRECTS = 5
NOT_MODIFIED = 304


class FeedUnavailable(MailerError):
    """The feed's host cannot be reached, or answers that it cannot serve now."""

    exit_code = EXIT_UNAVAILABLE


class FeedError(InputError):
    """What came back is not a feed we can read (exit 65)."""


@dataclass(frozen=True)
class Fetched:
    """What the server answered: a body (200) or nothing new (304)."""

    url: str  # where the feed was found, after redirects
    status: int
    body: bytes
    etag: str
    last_modified: str
    content_type: str


class _Redirects(urllib.request.HTTPRedirectHandler):
    """At most MAX_REDIRECTS, and only to http(s): never file: or ftp:."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise FeedError(f"{req.full_url}: redirected to {newurl}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(
    url: str,
    *,
    etag: str = "",
    last_modified: str = "",
    timeout: float = TIMEOUT,
    max_bytes: int = MAX_BYTES,
) -> Fetched:
    """GET `url`; FeedUnavailable when it cannot be reached, FeedError when refused."""
    if urlsplit(url).scheme.lower() not in ("http", "https") or not urlsplit(url).netloc:
        raise FeedError(f"{url!r} is not an http(s) URL")
    version = importlib.metadata.version("mailer")
    headers = {
        "User-Agent": f"mailer/{version} (newsletter digest)",
        "Accept": "application/atom+xml, application/rss+xml, application/xml;q=0.9, */*;q=0.5",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    opener = urllib.request.build_opener(_Redirects)
    deadline = time.monotonic() + timeout
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            body = _read(resp, url, deadline, max_bytes)
            return _fetched(resp.geturl(), resp.status, body, resp.headers)
    except urllib.error.HTTPError as exc:
        if exc.code == NOT_MODIFIED:
            return _fetched(exc.geturl() or url, NOT_MODIFIED, b"", exc.headers)
        raise _http_error(url, exc.code, exc.reason) from None
    except urllib.error.URLError as exc:
        raise FeedUnavailable(f"cannot reach {url}: {_reason(exc.reason)}") from None
    except TimeoutError:
        raise FeedUnavailable(f"{url}: no answer within {timeout:g} s") from None
    except (http.client.HTTPException, ConnectionError, ssl.SSLError, OSError) as exc:
        raise FeedUnavailable(f"{url}: the connection failed: {_reason(exc)}") from None


def _read(resp: Any, url: str, deadline: float, max_bytes: int) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FeedError(f"{url}: {int(declared)} bytes, more than the {max_bytes} a feed may be")
    chunks: list[bytes] = []
    size = 0
    while chunk := resp.read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise FeedError(f"{url}: more than the {max_bytes} bytes a feed may be")
        if time.monotonic() > deadline:
            raise FeedUnavailable(f"{url}: still sending after the {TIMEOUT:g} s allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def _fetched(url: str, status: int, body: bytes, headers: Message | None) -> Fetched:
    get = headers.get if headers is not None else (lambda name, default="": default)
    return Fetched(
        url=url,
        status=status,
        body=body,
        etag=str(get("ETag", "") or ""),
        last_modified=str(get("Last-Modified", "") or ""),
        content_type=str(get("Content-Type", "") or ""),
    )


def _http_error(url: str, code: int, reason: object) -> MailerError:
    text = f"{url}: HTTP {code} {reason}".rstrip()
    if 300 <= code < 400:
        return FeedError(f"{url}: more than {MAX_REDIRECTS} redirects")
    if code >= 500 or code in (408, 429):
        return FeedUnavailable(text, hint="the server says to try again later")
    return FeedError(text)


def _reason(reason: object) -> str:
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"certificate not trusted ({reason.verify_message})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__
