"""The preview's "send a test to me": one test copy, as `mailer send ISSUE --to ADDRESS` sends it.

The address is fixed when the preview starts (`mailer preview ISSUE --to ADDRESS`); the page
only asks for the copy to go. The request must come from this machine, name this machine in
its Host, come from the preview's own page (Origin and Sec-Fetch-Site, when the browser sends
them) and carry the page's token in a header, which a form or a page on another site cannot
set. So no other site, and no other machine, can make the preview send mail.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from typing import TYPE_CHECKING, Any

from mailer.errors import MailerError
from mailer.preview.watcher import Preview
from mailer.states import DeliveryState
from mailer.web import wsgi
from mailer.web.wsgi import HTTPError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

PATH = "/api/send-test"
TOKEN_HEADER = "X-Mailer-Token"
MAX_BODY = 1024  # the page sends "{}"


class TestCopies:
    """Sends one test copy of the previewed issue to `to` when the page asks for it."""

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(self, preview: Preview, to: str) -> None:
        self.preview = preview
        self.to = to
        self.token = secrets.token_urlsafe(24)
        self._busy = threading.Lock()

    def state(self) -> dict[str, str]:
        """What the page needs to show the button and ask for a copy."""
        return {"to": self.to, "token": self.token, "header": TOKEN_HEADER}

    def check(self, environ: WSGIEnvironment) -> None:
        """HTTPError unless the request is the preview's own page on this machine asking."""
        if not wsgi.is_loopback(str(environ.get("REMOTE_ADDR") or "")):
            raise HTTPError(403, "test copies are sent only when asked from this machine")
        if not wsgi.host_is_loopback(environ):
            raise HTTPError(421, "wrong Host header")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and origin != f"http://{environ.get('HTTP_HOST', '')}":
            raise HTTPError(403, "a page on another site cannot send test copies")
        if environ.get("HTTP_SEC_FETCH_SITE", "same-origin") != "same-origin":
            raise HTTPError(403, "a page on another site cannot send test copies")
        given = str(environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_")) or "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HTTPError(403, "missing or wrong token: reload the preview page")
        ctype = str(environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPError(415, "send JSON")
        wsgi.read_body(environ, MAX_BODY)

    def send(self) -> dict[str, Any]:
        """One copy through the test-copy path of `mailer send`; what to tell the page."""
        from mailer import campaign

        if not self._busy.acquire(blocking=False):
            raise HTTPError(409, "a test copy is already on its way")
        try:
            settings, path = self.preview.settings, self.preview.path
            result = campaign.test_copy(settings, str(path), self.to, dry_run=False)
        except MailerError as exc:
            return {"ok": False, "message": exc.format_message()}
        finally:
            self._busy.release()
        sent = result.state == DeliveryState.SENT
        what = "sent to" if sent else f"not sent ({result.state.value}) to"
        return {"ok": sent, "message": f"Test copy {what} {self.to}: {result.reply}"}

    def answer(self, environ: WSGIEnvironment) -> bytes:
        """The JSON answer to the page's POST."""
        self.check(environ)
        return json.dumps(self.send()).encode()
