"""`mailer preview`: one local page showing an issue as readers will see it, live while edited.

The page (preview/page.html: inline CSS and JS, no external assets) shows the email at phone
and desktop widths, its plaintext twin, the headers one subscriber's copy carries, and the
build's warnings. A watcher thread polls the issue, the templates and the settings files and
re-renders into an in-memory state; the page long-polls /api/state and swaps its iframes
without reloading. A broken edit becomes an error banner, never a dead server.

Never prints: the CLI reports through the `ready` callback.
"""

from __future__ import annotations

import dataclasses
import email as email_pkg
import ipaddress
import json
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from email import policy
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import config as config_mod
from . import issue as issue_mod
from .config import EXAMPLE_FROM, EXAMPLE_READER, EXAMPLE_SUBSCRIBERS, Settings
from .errors import ConfigError, InputError, MailerError
from .message import Composer
from .render import GMAIL_CLIP_BYTES, Email, render, template_dirs
from .send import preflight
from .subscribers import Subscriber, SubscriberList, check_email

PAGE = Path(__file__).resolve().parent / "preview" / "page.html"
POLL_SECONDS = 0.3  # how often the watcher looks at the files
LONG_POLL_SECONDS = 25.0  # how long /api/state waits for a change before answering anyway
_STATE_MARK = "/*__MAILER_STATE__*/null"
# Notices that were fixed on the way (shown, but not as something to act on).
_INFO_CODES = frozenset({"mojibake", "stylesheet"})

Signature = tuple[tuple[str, tuple[int, int, int] | None], ...]


# -- the reader whose copy is shown ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reader:
    """The subscriber the preview is personalised for, and where they came from."""

    subscriber: Subscriber
    source: str
    columns: tuple[str, ...] | None  # the list's merge-field columns, None without a list
    problem: str = ""  # why the list could not be used, if it could not


def _subscriber_files(settings: Settings) -> list[Path]:
    return [settings.root / settings.subscribers, settings.root / EXAMPLE_SUBSCRIBERS]


_readers: dict[tuple[Any, ...], Reader] = {}


def choose_reader(settings: Settings, as_email: str | None) -> Reader:
    """--as EMAIL, else the first subscriber in the list, else a made-up reader."""
    files = _subscriber_files(settings)
    key = (as_email, *((str(p), _stat(p)) for p in files))
    if key not in _readers:  # --as may read a long list to its end: once per version of it
        _readers.clear()
        _readers[key] = _choose_reader(settings, as_email)
    return _readers[key]


def _choose_reader(settings: Settings, as_email: str | None) -> Reader:
    wanted = None
    if as_email:
        try:
            wanted = check_email(as_email.strip())
        except ValueError:
            wanted = as_email.strip()
    path = next((p for p in _subscriber_files(settings) if p.is_file()), None)
    if path is None:
        if wanted:
            return Reader(Subscriber(wanted, "", {}, 0), "--as (no subscriber list)", None)
        return Reader(
            Subscriber(EXAMPLE_READER, "", {}, 0), "an example reader (no subscriber list)", None
        )
    label = _relative(path, settings.root)
    try:
        listing = SubscriberList(path)
        rows = iter(listing)
        try:
            for sub in rows:
                if wanted is None or sub.email.lower() == wanted.lower():
                    where = "--as, " if wanted else "the first subscriber, "
                    return Reader(sub, f"{where}{label} line {sub.line}", listing.columns)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
    except InputError as exc:
        fallback = wanted or EXAMPLE_READER
        return Reader(
            Subscriber(fallback, "", {}, 0),
            "--as" if wanted else "an example reader",
            None,
            problem=f"subscriber list unusable: {exc.message}",
        )
    if wanted:
        return Reader(Subscriber(wanted, "", {}, 0), f"--as (not in {label})", listing.columns)
    return Reader(
        Subscriber(EXAMPLE_READER, "", {}, 0),
        f"an example reader ({label} has nobody)",
        listing.columns,
    )


# -- one render: everything the page shows ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One successful render, personalised: what the page and the static files are made of."""

    email: Email
    html: str  # filled in for the reader
    text: str
    message: bytes  # the reader's whole message, as it would go on the wire
    state: dict[str, Any]  # JSON for the page (without version/error)


def _relative(path: Path | str, root: Path) -> str:
    p = Path(path)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return str(p)


def _source_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    except OSError:
        return []


def _excerpt(lines: list[str], line: int | None, limit: int = 200) -> str:
    if not line or not 0 < line <= len(lines):
        return ""
    text = lines[line - 1].strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _headers(message: bytes) -> tuple[list[list[str]], list[dict[str, Any]], str]:
    """(name, value) pairs as a mail client decodes them, the MIME parts, the raw header block."""
    parsed = email_pkg.message_from_bytes(message, policy=policy.default)
    headers = [[name, str(value)] for name, value in parsed.items()]
    parts = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        parts.append(
            {
                "type": part.get_content_type(),
                "charset": part.get_content_charset() or "",
                "encoding": str(part.get("Content-Transfer-Encoding", "")),
                "bytes": len(payload),
            }
        )
    raw = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace").replace("\r\n", "\n")
    return headers, parts, raw


def build(settings: Settings, path: Path, as_email: str | None) -> Snapshot:
    """Read, render and personalise the issue at `path`; MailerError if it cannot be rendered."""
    started = time.perf_counter()
    issue = issue_mod.read(path, default_lang=settings.lang, base_url=settings.base_url)
    email = render(issue, settings)
    reader = choose_reader(settings, as_email)
    problems: list[tuple[str, str, str]] = []  # (code, message, where), before the notices
    try:
        composer = Composer(email, settings)
    except ConfigError:  # no usable From: preflight below says so; show the rest anyway
        composer = Composer(email, config_mod.with_overrides(settings, from_=EXAMPLE_FROM))
    html, text = composer.personalise(
        reader.subscriber, composer.unsubscribe_url(reader.subscriber.email) or "#unsubscribe"
    )
    message = composer.compose(reader.subscriber).data
    headers, parts, raw_headers = _headers(message)

    rel = _relative(path, settings.root)
    reasons = preflight(email, settings, dry_run=False)
    problems += [("send", reason, _reason_source(reason)) for reason in reasons]
    if reader.columns is not None:
        try:
            composer.check_fields(set(reader.columns))
        except InputError as exc:
            problems.append(("fields", exc.message, "template and subscriber list"))
    warnings = _warnings(email, problems, reader, path, rel)

    sub = reader.subscriber
    state = {
        "issue": {
            "slug": issue.slug,
            "path": rel,
            "title": issue.title,
            "lang": issue.lang,
            "dir": issue.dir,
        },
        "subject": email.subject,
        "preheader": email.preheader,
        "from": composer.settings.from_,
        "reader": {"email": sub.email, "name": sub.name, "source": reader.source},
        "html": html,
        "text": text,
        "own_dark_mode": "prefers-color-scheme" in email.html,
        "stats": {
            "html_bytes": email.html_bytes,
            "clip_bytes": GMAIL_CLIP_BYTES,
            "text_bytes": len(email.text.encode("utf-8")),
            "words": email.words,
            "links": email.links,
            "images": email.images,
        },
        "headers": headers,
        "raw_headers": raw_headers,
        "parts": parts,
        "message_bytes": len(message),
        "warnings": warnings,
        "templates": [_relative(d, settings.root) for d in dict.fromkeys(template_dirs(settings))],
        "render_ms": round((time.perf_counter() - started) * 1000),
    }
    return Snapshot(email, html, text, message, state)


def _reason_source(reason: str) -> str:
    if "template" in reason:
        return "template"
    if "MAILER_SECRET" in reason:
        return "settings (.env)"
    return "settings (mailer.toml)"


_NOTICE_SOURCES = {"size": "rendered HTML", "unsubscribe": "template", "stylesheet": "template"}


def _warnings(
    email: Email, problems: list[tuple[str, str, str]], reader: Reader, path: Path, rel: str
) -> list[dict[str, Any]]:
    """Everything worth a look, most serious first, each with where it comes from."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(
        level: str, code: str, message: str, where: str, line: int | None = None, source: str = ""
    ) -> None:
        if message not in seen:
            seen.add(message)
            out.append(
                {
                    "level": level,
                    "code": code,
                    "message": message,
                    "where": where,
                    "line": line,
                    "source": source,
                }
            )

    for code, message, where in problems:
        add("error", code, message, where)
    if reader.problem:
        add("warning", "subscribers", reader.problem, "subscriber list")
    lines = _source_lines(path)
    for notice in email.notices:
        add(
            "info" if notice.code in _INFO_CODES else "warning",
            notice.code,
            notice.message,
            f"{rel}:{notice.line}" if notice.line else _NOTICE_SOURCES.get(notice.code, rel),
            notice.line,
            _excerpt(lines, notice.line),
        )
    order = {"error": 0, "warning": 1, "info": 2}
    out.sort(key=lambda w: (order[w["level"]], w["line"] or 0))
    return out


def _error_state(exc: BaseException, settings: Settings) -> dict[str, Any]:
    """What the banner shows for a failed render: message, hint, and the lines around it."""
    if isinstance(exc, MailerError):
        out: dict[str, Any] = {
            "kind": type(exc).__name__,
            "message": exc.message.replace(f"{settings.root.resolve()}{os.sep}", ""),
            "hint": exc.hint or "",
            "context": [],
            "where": "",
        }
        path, line = getattr(exc, "path", None), getattr(exc, "line", None)
        if path is not None:
            rel = _relative(path, settings.root)
            out["where"] = rel + (f":{line}" if line else "")
            if exc.message.startswith(f"{path}:"):  # a long absolute path -> the project's
                out["message"] = rel + exc.message[len(str(path)) :]
        if path is not None and line:
            lines = _source_lines(Path(str(path)))
            first = max(1, line - 3)
            out["context"] = [
                {"n": n, "text": lines[n - 1], "hit": n == line}
                for n in range(first, min(len(lines), line + 2) + 1)
            ]
        return out
    return {
        "kind": "internal error",
        "message": f"{type(exc).__name__}: {exc}",
        "hint": "this is a bug in mailer, not in your issue; the traceback is below",
        "context": [],
        "where": "",
        "traceback": "".join(traceback.format_exception(exc)),
    }


# -- the live preview ------------------------------------------------------------------------


def _flag_overrides(settings: Settings) -> dict[str, Any]:
    """The settings that came from command-line flags: kept when mailer.toml is re-read."""
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(Settings)
        if settings.sources.get(f.name.rstrip("_")) == "flag"
    }


def _watched(path: Path) -> bool:
    """Not an editor's swap or backup file (vim writes .x.swp every few seconds)."""
    name = path.name
    return not (name.startswith((".", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp")))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Preview:
    """The current render of one issue, re-made whenever one of its inputs changes."""

    def __init__(self, settings: Settings, issue: str, as_email: str | None = None) -> None:
        self.settings = settings
        self.root = settings.root
        self.as_email = as_email
        self.path = issue_mod.resolve(issue, settings.root).resolve()
        self.overrides = _flag_overrides(settings)
        self.instance = secrets.token_hex(6)
        self.cond = threading.Condition()
        self.version = 0
        self.closed = False
        self.snapshot: Snapshot | None = None
        self.good_at: float | None = None
        self.error: dict[str, Any] | None = None
        self.updated_at = 0.0
        self._config_sig: Signature = self._signature(self._config_files())
        self._input_sig: Signature = ()
        self._config_broken = False

    # files

    def _config_files(self) -> list[Path]:
        return [self.root / config_mod.CONFIG_FILE, self.root / ".env"]

    def _input_files(self) -> list[Path]:
        files = [self.path, *_subscriber_files(self.settings)]
        try:
            dirs = template_dirs(self.settings)
        except MailerError:
            dirs = []
        for folder in dict.fromkeys([*dirs, self.root / "templates"]):
            files.append(folder)  # its own mtime changes when a file is added or removed
            if folder.is_dir():
                files += sorted(p for p in folder.rglob("*") if p.is_file() and _watched(p))[:500]
        return files

    @staticmethod
    def _signature(paths: list[Path]) -> Signature:
        return tuple((str(p), _stat(p)) for p in paths)

    # rendering

    def refresh(self, *, reload_settings: bool = False) -> None:
        """Re-render now (re-reading the settings first if asked) and tell the waiting pages."""
        self._input_sig = self._signature(self._input_files())
        error = None
        snapshot = None
        try:
            if reload_settings or self._config_broken:
                self._config_broken = True
                self.settings = config_mod.load(self.root, overrides=self.overrides)
                self._config_broken = False
                self._input_sig = self._signature(self._input_files())
            snapshot = build(self.settings, self.path, self.as_email)
        except Exception as exc:  # noqa: BLE001 - any failure is shown on the page
            error = _error_state(exc, self.settings)
        with self.cond:
            if snapshot is not None:
                self.snapshot = snapshot
                self.good_at = time.time()
            self.error = error
            self.version += 1
            self.updated_at = time.time()
            self.cond.notify_all()

    def check(self) -> bool:
        """Re-render if any input changed since the last look; True if it did."""
        config_sig = self._signature(self._config_files())
        config_changed = config_sig != self._config_sig
        if config_changed:
            self._config_sig = config_sig
        if config_changed or self._signature(self._input_files()) != self._input_sig:
            self.refresh(reload_settings=config_changed)
            return True
        return False

    def watch(self, stop: threading.Event, interval: float = POLL_SECONDS) -> None:
        """Poll the inputs until `stop` is set."""
        while not stop.wait(interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive anything
                with self.cond:
                    self.error = _error_state(exc, self.settings)
                    self.version += 1
                    self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # what the page gets

    def state(self, *, live: bool = True) -> dict[str, Any]:
        with self.cond:
            base = (
                dict(self.snapshot.state)
                if self.snapshot
                else {
                    "issue": {
                        "slug": self.path.stem,
                        "path": _relative(self.path, self.root),
                        "title": self.path.stem,
                    },
                }
            )
            return {
                **base,
                "ok": self.snapshot is not None,
                "version": self.version,
                "instance": self.instance,
                "live": live,
                "error": self.error,
                "updated_at": round(self.updated_at * 1000),
                "good_at": round(self.good_at * 1000) if self.good_at else None,
            }

    def wait(self, since: int, instance: str, timeout: float) -> None:
        """Block until the version moves past `since` (or the server restarted, or timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while (
                not self.closed
                and instance == self.instance
                and self.version == since
                and (left := deadline - time.monotonic()) > 0
            ):
                self.cond.wait(left)


def page(state: dict[str, Any]) -> str:
    """The preview page with `state` inlined (so it shows at once, and works from a file)."""
    data = (
        json.dumps(state, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return PAGE.read_text(encoding="utf-8").replace(_STATE_MARK, data, 1)


# -- HTTP ---------------------------------------------------------------------------------------


# The email opened on its own: what a mail client allows, and no scripts.
_EMAIL_CSP = (
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; font-src * data:;"
    " media-src *; base-uri 'none'; form-action 'none'"
)
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    preview: Preview
    host_check: bool

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser closing a long poll, or a tab going away: nothing worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "mailer-preview"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Quiet: the terminal is for the user, not for a line per poll."""

    def _host_ok(self) -> bool:
        if not self.server.host_check:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return _is_loopback(name.strip("[]").lower())

    def _send(self, status: int, body: bytes, content_type: str, **extra: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any) -> None:
        self._send(200, json.dumps(data).encode(), "application/json; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self._host_ok():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"wrong Host header\n", "text/plain")
            return
        preview = self.server.preview
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        snap = preview.snapshot
        if url.path in ("/", "/index.html"):
            body = page(preview.state()).encode("utf-8")
            self._send(200, body, "text/html; charset=utf-8")
        elif url.path == "/api/state":
            try:
                since = int(query.get("since", ["-1"])[0])
            except ValueError:
                since = -1
            wait = query.get("wait", ["1"])[0] != "0"
            if wait:
                preview.wait(since, query.get("instance", [""])[0], LONG_POLL_SECONDS)
            self._json(preview.state())
        elif url.path == "/version":
            self._json(
                {
                    "version": preview.version,
                    "instance": preview.instance,
                    "error": bool(preview.error),
                }
            )
        elif url.path == "/email.html" and snap:
            self._send(
                200,
                snap.html.encode("utf-8"),
                "text/html; charset=utf-8",
                Content_Security_Policy=_EMAIL_CSP,
            )
        elif url.path == "/email.txt" and snap:
            self._send(200, snap.text.encode("utf-8"), "text/plain; charset=utf-8")
        elif url.path == "/message.eml" and snap:
            self._send(
                200,
                snap.message,
                "message/rfc822",
                Content_Disposition=f'attachment; filename="{snap.email.issue.slug}.eml"',
            )
        elif url.path in ("/email.html", "/email.txt", "/message.eml"):
            self._send(
                503,
                b"the issue does not render right now: see the preview page\n",
                "text/plain; charset=utf-8",
            )
        elif url.path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    settings: Settings,
    issue: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8025,
    as_email: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the preview until KeyboardInterrupt; call ready(url) once listening."""
    preview = Preview(settings, issue, as_email)  # an unknown issue fails here, before binding
    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), _Handler)
    server.preview = preview
    server.host_check = _is_loopback(host)
    stop = threading.Event()
    watcher = threading.Thread(
        target=preview.watch, args=(stop,), name="preview-watch", daemon=True
    )
    try:
        preview.refresh()
        watcher.start()
        if ready is not None:
            ready(_url(host, server.server_address[1]))
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        preview.close()
        server.server_close()
        if watcher.is_alive():
            watcher.join(timeout=2)


def write_static(
    settings: Settings, issue: str, out: Path, *, as_email: str | None = None
) -> list[Path]:
    """Write index.html (+ email.html, email.txt) to out; return the paths written."""
    preview = Preview(settings, issue, as_email)
    snapshot = build(settings, preview.path, as_email)  # a broken issue raises: no error page
    preview.snapshot = snapshot
    preview.updated_at = preview.good_at = time.time()
    preview.version = 1
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "index.html": page(preview.state(live=False)).encode("utf-8"),
        "email.html": snapshot.html.encode("utf-8"),
        "email.txt": snapshot.text.encode("utf-8"),
        "message.eml": snapshot.message,
    }
    written = []
    for name, data in files.items():
        target = out / name
        target.write_bytes(data)
        written.append(target)
    return written
