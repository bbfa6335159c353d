"""The preview as a WSGI app: the page, its long-polled state, and the email's parts.

GET /               the page, with the current state inlined (page.html)
GET /api/state      the state as JSON; ?since=V&instance=I waits until it moves past V
GET /email.html     the reader's copy, as a mail client would show it (no scripts)
GET /email.txt      its plaintext twin
GET /message.eml    the whole message, as it would go on the wire
POST /api/send-test one test copy to the --to address (testcopy.py says who may ask)
"""

from __future__ import annotations

import json
import re
import threading
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.preview.testcopy import PATH as SEND_TEST
from mailer.preview.testcopy import TestCopies
from mailer.preview.watcher import Preview
from mailer.web import wsgi
from mailer.web.wsgi import HTTPError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

PAGE = Path(__file__).resolve().with_name("page.html")
_STATE_MARK = "/*__MAILER_STATE__*/null"
# The page's own policy (a <meta> in page.html, so the static copy has it too), sent as a
# header as well: a header can also say frame-ancestors, which a <meta> cannot.
_PAGE_CSP = re.search(
    r'http-equiv="Content-Security-Policy" content="([^"]+)"', PAGE.read_text(encoding="utf-8")
)
PAGE_CSP = _PAGE_CSP.group(1) if _PAGE_CSP else wsgi.DEFAULT_CSP
# The email opened on its own: what a mail client allows, and no scripts.
EMAIL_CSP = (
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; font-src * data:;"
    " media-src *; base-uri 'none'; form-action 'none'"
)
LONG_POLL_SECONDS = 25.0  # how long /api/state waits for a change before answering anyway
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
_PARTS = ("/email.html", "/email.txt", "/message.eml")


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


class PreviewApp:
    """Serves one Preview. `max_waiting` long polls park at once; more are answered at once
    (the page then polls again a second later), so waiting pages never take every thread."""

    def __init__(
        self,
        preview: Preview,
        *,
        host_check: bool,
        max_waiting: int,
        copies: TestCopies | None = None,
    ) -> None:
        self.preview = preview
        self.host_check = host_check
        self.copies = copies  # "send a test to me", when the preview has a --to address
        self._waiting = threading.BoundedSemaphore(max(1, max_waiting))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        extra: list[tuple[str, str]] = []
        try:
            if self.host_check and not wsgi.host_is_loopback(environ):
                raise HTTPError(421, "wrong Host header")
            path = str(environ.get("PATH_INFO") or "/")
            if path == SEND_TEST and self.copies is not None:
                if method != "POST":
                    raise HTTPError(405, "method not allowed", [("Allow", "POST")])
                body = self.copies.answer(environ)
                status, ctype, csp = 200, "application/json; charset=utf-8", ""
            elif method not in ("GET", "HEAD"):
                raise HTTPError(405, "method not allowed", [("Allow", "GET, HEAD")])
            else:
                status, body, ctype, csp, extra = self.route(environ)
        except HTTPError as exc:
            status, body, ctype, csp = exc.status, f"{exc.message}\n".encode(), TEXT, ""
            extra = exc.headers
        except Exception:  # a bug in mailer: say so, keep serving
            environ["wsgi.errors"].write(traceback.format_exc())
            status, body, ctype, csp = 500, b"internal error: see the terminal\n", TEXT, ""
        response_headers = wsgi.headers(ctype, len(body), csp=csp or wsgi.DEFAULT_CSP, extra=extra)
        start_response(wsgi.status_line(status), response_headers)
        return [b"" if method == "HEAD" else body]

    def route(self, environ: WSGIEnvironment) -> tuple[int, bytes, str, str, list[tuple[str, str]]]:
        """(status, body, content type, CSP or "" for the default, extra headers)."""
        preview = self.preview
        path = str(environ.get("PATH_INFO") or "/")
        if path in ("/", "/index.html"):
            return 200, page(self.shown(preview.state())).encode("utf-8"), HTML, PAGE_CSP, []
        if path == "/api/state":
            body = json.dumps(self.shown(self.state(environ))).encode()
            return 200, body, "application/json; charset=utf-8", "", []
        if path == "/favicon.ico":
            return 204, b"", "image/x-icon", "", []
        if path not in _PARTS:
            raise HTTPError(404, "not found")
        snap = preview.snapshot
        if snap is None:
            raise HTTPError(503, "the issue does not render right now: see the preview page")
        if path == "/email.html":
            return 200, snap.html.encode("utf-8"), HTML, EMAIL_CSP, []
        if path == "/email.txt":
            return 200, snap.text.encode("utf-8"), TEXT, "", []
        attachment = f'attachment; filename="{snap.email.issue.slug}.eml"'
        return 200, snap.message, "message/rfc822", "", [("Content-Disposition", attachment)]

    def shown(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state as the live page gets it: with the test-copy button's address and token."""
        return {**state, "send_test": self.copies.state()} if self.copies else state

    def state(self, environ: WSGIEnvironment) -> dict[str, Any]:
        """The state, once it moves past ?since (unless ?wait=0, or too many pages wait)."""
        query = wsgi.query(environ)
        try:
            since = int(query.get("since", ["-1"])[0])
        except ValueError:
            since = -1
        if query.get("wait", ["1"])[0] != "0" and self._waiting.acquire(blocking=False):
            try:
                instance = query.get("instance", [""])[0]
                self.preview.wait(since, instance, LONG_POLL_SECONDS)
            finally:
                self._waiting.release()
        return self.preview.state()
