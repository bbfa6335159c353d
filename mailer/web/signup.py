"""The signup form of `mailer serve`: the form, its POST, and the confirmation link.

    GET  /subscribe                 the form (email, name, and a honeypot people never see)
    POST /subscribe                 the same reply whoever signs up; the work is done after
    GET  /subscribe/confirm?token=T a page with one button; never confirms by itself
    POST /subscribe/confirm         confirms (twice changes nothing), then the welcome issue

The path is subscribe_url's (default /subscribe). Storing the signup and mailing the
confirmation happen on one background worker: the reply to a known address, an unknown one
or a bot that filled the honeypot is the same bytes after the same work, so the form cannot
be used to find out who is on the list.
"""

from __future__ import annotations

import html
import ipaddress
import math
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from itsdangerous import BadData

from mailer.config import Settings
from mailer.deliver.tokens import BadToken, ExpiredToken, verify_confirm
from mailer.signup import DEFAULT_PATH, Outcome, Signup, Signups, Store, Window
from mailer.state.subscribers import check_email
from mailer.web import wsgi
from mailer.web.pages import Response, mask_email, page
from mailer.web.wsgi import HTTPError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

MAX_SIGNUP_BODY = 4 * 1024  # a filled-in form is a few hundred bytes: 413 beyond this
MAX_NAME = 200
MAX_TOKEN = 2048
QUEUE = 1000  # signups waiting for the worker; past this a request does its own
HONEYPOT = "website"

# Off-screen rather than display:none alone, which some bots skip; hidden from screen
# readers and the tab order, and never filled in by the browser.
_HONEYPOT_HTML = (
    '<div aria-hidden="true" style="position:absolute;left:-10000px;top:auto;width:1px;'
    'height:1px;overflow:hidden">\n'
    f'<label for="signup-{HONEYPOT}">Leave this empty</label>\n'
    f'<input type="text" id="signup-{HONEYPOT}" name="{HONEYPOT}" value="" tabindex="-1" '
    'autocomplete="off">\n</div>\n'
)


def form_html(action: str, list_name: str) -> str:
    """The signup form: a plain POST (no JavaScript), labelled fields, the honeypot."""
    act = html.escape(action, quote=True)
    return (
        f'<form method="post" action="{act}" class="mailer-signup">\n'
        '<p><label for="signup-email">Email address</label><br>\n'
        '<input type="email" id="signup-email" name="email" required autocomplete="email" '
        'maxlength="254" size="30"></p>\n'
        '<p><label for="signup-name">Name <span class="muted">(optional)</span></label><br>\n'
        '<input type="text" id="signup-name" name="name" autocomplete="name" '
        f'maxlength="{MAX_NAME}" size="30"></p>\n'
        f"{_HONEYPOT_HTML}"
        f'<p><button type="submit">Subscribe to {html.escape(list_name)}</button></p>\n'
        "</form>\n"
    )


def _path_of(url: str) -> str:
    return (urlsplit(url).path.rstrip("/") or DEFAULT_PATH) if url else DEFAULT_PATH


class SignupPages:
    """The form's routes, the per-client limit, and the worker that does the mail."""

    def __init__(
        self,
        settings: Settings,
        store: Callable[[], Store],
        log: Callable[[str], None],
        signups: Signups | None = None,
    ) -> None:
        self.settings = settings
        self.path = _path_of(settings.subscribe_url)
        self.confirm_path = self.path + "/confirm"
        self.paths = {DEFAULT_PATH, self.path}
        self.signups = signups or Signups(settings, store)
        self.log = log
        self.clients = Window(60.0)
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        host = urlsplit(settings.subscribe_url).netloc.lower() if settings.subscribe_url else ""
        self.host = host
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue(QUEUE)
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def handles(self, path: str) -> bool:
        return path in self.paths or path in {p + "/confirm" for p in self.paths}

    def respond(self, environ: WSGIEnvironment, method: str, path: str, script: str) -> Response:
        if path.endswith("/confirm"):
            if method not in ("GET", "HEAD", "POST"):
                raise HTTPError(405, "This method is not allowed here.", [("Allow", "GET, POST")])
            return self.confirm(environ, method, script)
        if method in ("GET", "HEAD"):
            return self.form_page(script)
        if method != "POST":
            raise HTTPError(405, "This method is not allowed here.", [("Allow", "GET, POST")])
        return self.post(environ)

    # -- the form -------------------------------------------------------------------------

    def form_page(self, script: str) -> Response:
        lst = html.escape(self.settings.list_name)
        body = (
            f"<h1>Subscribe to {lst}</h1>\n"
            "<p>We will send you an email with a link to confirm. Nothing else is sent until "
            "you do, and every issue has a link to unsubscribe.</p>\n"
            + form_html(script + self.path, self.settings.list_name)
        )
        return page(200, f"Subscribe to {self.settings.list_name}", body, lang=self.settings.lang)

    def post(self, environ: WSGIEnvironment) -> Response:
        wait = self.clients.take(self.client(environ), self.settings.signup_rate)
        if wait:
            retry = [("Retry-After", str(math.ceil(wait)))]
            raise HTTPError(
                429, "Too many signups from your address: try again in a minute.", retry
            )
        form = wsgi.form(environ, wsgi.read_body(environ, MAX_SIGNUP_BODY))
        try:
            email = check_email(form.get("email", "").strip())
        except ValueError:
            raise HTTPError(400, "That does not look like an email address.") from None
        name = " ".join(form.get("name", "").split())[:MAX_NAME]
        if not form.get(HONEYPOT, ""):
            signup = Signup(email, name, self.form_url(environ))
            self.submit(lambda: self.signups.subscribe(signup))
        return self.thanks_page()

    def thanks_page(self) -> Response:
        body = (
            "<h1>Check your inbox</h1>\n"
            "<p>If this address can be subscribed, an email with a confirmation link is on "
            "its way. Open it and press the button to start receiving "
            f"{html.escape(self.settings.list_name)}.</p>\n"
            '<p class="muted">Nothing there after a few minutes? Look in the spam folder.</p>'
        )
        return page(200, "Check your inbox", body, lang=self.settings.lang)

    def form_url(self, environ: WSGIEnvironment) -> str:
        """The page the form was on (Referer, else Origin), when it is on our own site."""
        ours = {self.host} if self.host else set()
        ours.add(str(environ.get("HTTP_HOST") or "").lower())
        for header in ("HTTP_REFERER", "HTTP_ORIGIN"):
            value = str(environ.get(header) or "")
            parts = urlsplit(value)
            if parts.scheme in ("http", "https") and parts.netloc.lower() in ours:
                return value.split("#", 1)[0][:500]
        return ""

    def client(self, environ: WSGIEnvironment) -> str:
        """The client's address: the peer, or what a trusted proxy says it forwarded."""
        peer = str(environ.get("REMOTE_ADDR") or "")
        if not self.proxies or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
        for hop in reversed([h for h in hops if h]):  # the nearest hop first
            if not self._trusted(hop):
                return hop
        return peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    # -- confirming -----------------------------------------------------------------------

    def confirm(self, environ: WSGIEnvironment, method: str, script: str) -> Response:
        tokens = wsgi.query(environ).get("token")
        token = tokens[0] if tokens else ""
        if method == "POST":
            form = wsgi.form(environ, wsgi.read_body(environ, MAX_SIGNUP_BODY))
            token = form.get("token", token)
        email = self._verify(token)
        lst = html.escape(self.settings.list_name)
        if method != "POST":
            action = html.escape(script + self.confirm_path, quote=True)
            body = (
                f"<h1>Confirm your subscription to {lst}</h1>\n"
                f'<form method="post" action="{action}">\n'
                f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">\n'
                '<button type="submit">Confirm</button>\n</form>'
            )
            return page(200, f"Confirm your subscription to {self.settings.list_name}", body)
        reader = self.signups.confirm(email)
        if reader is None:
            raise HTTPError(
                400, "This confirmation link is not valid any more: please sign up again."
            )
        self.submit(lambda: self.signups.welcome_to(reader))
        body = f"<h1>You are subscribed</h1>\n<p>Welcome to {lst}: the next issue is yours.</p>"
        return page(200, "You are subscribed", body, lang=self.settings.lang)

    def _verify(self, token: str) -> str:
        if not token or len(token) > MAX_TOKEN:
            raise HTTPError(400, "This confirmation link is not valid.")
        secret, list_id = self.settings.signing_secret, self.settings.list_id_effective
        within = self.settings.confirm_within.total_seconds()
        try:
            return verify_confirm(secret, list_id, token, within)
        except ExpiredToken:
            raise HTTPError(
                400, "This confirmation link has expired: please sign up again."
            ) from None
        except (BadToken, BadData, ValueError, TypeError, UnicodeError):
            raise HTTPError(
                400,
                "This confirmation link is not valid: it may have been cut short when it was "
                "copied. Please use the link in the email exactly as it came.",
            ) from None

    # -- the worker -----------------------------------------------------------------------

    def submit(self, job: Callable[[], object]) -> None:
        """Hand `job` to the worker; when too many wait, do it on this request's thread:
        under a burst a signup is slower, never lost."""
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="signup", daemon=True)
                self._worker.start()
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self._run(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run(job)

    def _run(self, job: Callable[[], object]) -> None:
        try:
            outcome = job()
            if isinstance(outcome, Outcome):  # masked: the log is no copy of the list
                what = outcome.mailed or "no mail"
                self.log(f"mailer: signup {mask_email(outcome.email)}: {what} {outcome.reply}")
        except Exception as exc:  # one bad mail must not end the worker
            self.log(f"mailer: signup failed: {type(exc).__name__}: {exc}")

    def close(self, timeout: float = 10.0) -> None:
        """Let the worker finish what waits (up to `timeout` seconds), then stop it."""
        with self._start_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(None)
            worker.join(timeout)
