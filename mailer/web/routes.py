"""The web side: the one-click unsubscribe endpoint (RFC 8058) and the archive of sent issues.

A plain WSGI application. Everything it knows comes from the Settings it is made with: the
state directory (the ledger holds the suppression list and which issues went out), the
signing secret and the list id. Run it with `mailer serve` (mailer.web.wsgi: waitress, a fixed
pool of threads, loopback by default) or under another WSGI server: `gunicorn 'mailer.web:app'`.

    GET  /unsubscribe?token=T   a page with one button; never unsubscribes by itself
    POST /unsubscribe?token=T   List-Unsubscribe=One-Click (or the button): suppress, 200
    GET  /issues/<slug>         a public issue, rendered without anyone's data (mailer/archive)
    GET  /                      the public issues, newest first, with their dates
    GET  /feed.xml              the same as an Atom feed
    GET  /healthz               "ok"
    /subscribe, /subscribe/confirm   the signup form and its double opt-in (web/signup.py)
"""

from __future__ import annotations

import html
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlsplit

from itsdangerous import BadData

from mailer.archive.pages import site_url
from mailer.archive.site import LiveArchive
from mailer.compose.issue import is_slug
from mailer.config import Settings
from mailer.deliver.tokens import BadToken, verify
from mailer.errors import ConfigError, MailerError
from mailer.state.database import LedgerGone
from mailer.state.ledger import Ledger, existing_ledger, open_ledger
from mailer.states import Reason
from mailer.web import wsgi
from mailer.web.limits import Limits
from mailer.web.pages import (
    PAGE_CSP,
    Response,
    error_page,
    mask_email,
    page,
    text_response,
)
from mailer.web.signup import SignupPages
from mailer.web.wsgi import HTTPError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_BODY = 10 * 1024  # a one-click POST is 26 bytes; a form post a few hundred
MAX_TOKEN = 2048  # real tokens are ~100-300 characters
DEFAULT_UNSUBSCRIBE_PATH = "/unsubscribe"
DEFAULT_ARCHIVE_PATH = "/issues"

# An archived issue: the email's own inline styles and remote images, never a script or a form.
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "font-src https: data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
ARCHIVE_CACHE = "public, max-age=300"


# -- request helpers ------------------------------------------------------------------------


def _path_of(url: str, default: str) -> str:
    """The path part of a configured URL, without a trailing slash ("" for the site root)."""
    return urlsplit(url).path.rstrip("/") if url else default


# -- the application ------------------------------------------------------------------------


class Pages(Protocol):
    """The ledger as the pages use it: the suppression list, and which issues went out."""

    def suppress(self, email: str, reason: Reason, source: str) -> bool: ...
    def is_suppressed(self, email: str) -> bool: ...
    def first_sends(self) -> dict[str, datetime]: ...


class WebApp:
    """The WSGI application; make one per settings with make_app()."""

    def __init__(self, settings: Settings) -> None:
        if not settings.secret:
            raise ConfigError(
                "no MAILER_SECRET: the unsubscribe endpoint needs the secret the links were "
                "signed with (without it anyone could forge an unsubscribe)",
                hint="set MAILER_SECRET in .env or the environment, as for `mailer send`",
            )
        self.settings = settings
        self.secret = settings.secret
        # The same list id the Composer signs with: a token for another list is void here.
        self.list_id = settings.list_id_effective
        self.list_name = settings.list_name
        configured = _path_of(settings.unsubscribe_url, DEFAULT_UNSUBSCRIBE_PATH)
        self.unsubscribe_path = configured or DEFAULT_UNSUBSCRIBE_PATH
        self.unsubscribe_paths = {DEFAULT_UNSUBSCRIBE_PATH, self.unsubscribe_path}
        self.archive_prefix = _path_of(settings.archive_url, DEFAULT_ARCHIVE_PATH)
        self.archive_prefixes = {DEFAULT_ARCHIVE_PATH, self.archive_prefix}
        self._ledger: Ledger | None = None
        self._ledger_lock = threading.Lock()
        self.archive = LiveArchive(settings)
        self.signup = SignupPages(settings, self._feedback_ledger, self._log_line)

    # -- plumbing -----------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        try:
            response = self.dispatch(environ, method)
        except HTTPError as exc:
            response = error_page(exc.status, exc.message)
            response.headers += exc.headers
        except MailerError as exc:  # the ledger is busy or broken: say so, never pretend
            self._log(environ, f"mailer: {exc.format_message()}")
            response = error_page(503, "Something went wrong on our side. Please try again later.")
        except Exception:
            self._log(environ, traceback.format_exc())
            response = error_page(500, "Something went wrong on our side.")
        status = wsgi.status_line(response.status)
        start_response(status, response.wsgi_headers())
        return [b"" if method == "HEAD" else response.body]

    @staticmethod
    def _log(environ: WSGIEnvironment, text: str) -> None:
        stream = environ.get("wsgi.errors") or sys.stderr
        stream.write(text.rstrip("\n") + "\n")
        stream.flush()

    @staticmethod
    def _log_line(text: str) -> None:
        sys.stderr.write(text.rstrip("\n") + "\n")
        sys.stderr.flush()

    def ledger(self, *, create: bool) -> Ledger | None:
        """The ledger, opened once and shared (it serialises its own use); None if absent."""
        # Whole, not Pages: POST /sns hands it to feedback/bounces.py (bounces.Returns).
        with self._ledger_lock:
            if self._ledger is not None:
                try:
                    self._ledger.check_identity()
                except LedgerGone:  # replaced (a restored backup) or deleted: open what is there
                    self._ledger.close()
                    self._ledger = None
            if self._ledger is None:
                if create:
                    self._ledger = open_ledger(self.settings)
                else:
                    self._ledger = existing_ledger(self.settings)
            return self._ledger

    def _feedback_ledger(self) -> Ledger:
        """The ledger feedback is recorded in, made if there is none yet."""
        ledger = self.ledger(create=True)
        assert ledger is not None  # create=True always opens one
        return ledger

    def close(self) -> None:
        self.signup.close()  # its worker may still be mailing: before the ledger closes
        with self._ledger_lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def dispatch(self, environ: WSGIEnvironment, method: str) -> Response:
        path = str(environ.get("PATH_INFO") or "/")
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        script = str(environ.get("SCRIPT_NAME") or "").rstrip("/")
        if path in self.unsubscribe_paths:
            self._allow(method, ("GET", "HEAD", "POST"))
            return self.unsubscribe(environ, method, script)
        if self.signup.handles(path):
            return self.signup.respond(environ, method, path, script)
        if path == "/healthz":
            self._allow(method, ("GET", "HEAD"))
            return text_response(200, "ok")
        if path == "/sns":  # Amazon SNS: SES bounces and complaints (mailer/web/sns.py)
            self._allow(method, ("POST",))
            from mailer.web import sns

            def log(line: str) -> None:
                self._log(environ, line)

            status, text = sns.respond(environ, self.settings, self._feedback_ledger, log)
            return text_response(status, text)
        if path == "/" or path in self.archive_prefixes:
            self._allow(method, ("GET", "HEAD"))
            return self.index(script)
        if path == "/feed.xml":
            self._allow(method, ("GET", "HEAD"))
            return self.feed(environ, script)
        for prefix in self.archive_prefixes:
            if path.startswith(prefix + "/"):
                slug = path[len(prefix) + 1 :]
                if is_slug(slug):
                    self._allow(method, ("GET", "HEAD"))
                    return self.archived(environ, script, slug)
        raise HTTPError(404, "There is no such page.")

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            allow = [("Allow", ", ".join(allowed))]
            raise HTTPError(405, "This method is not allowed here.", allow)

    # -- unsubscribe --------------------------------------------------------------------

    def unsubscribe(self, environ: WSGIEnvironment, method: str, script: str) -> Response:
        query = wsgi.query(environ)
        tokens = query.get("token")
        token = tokens[0] if tokens else None
        form: dict[str, str] = {}
        if method == "POST":
            form = wsgi.form(environ, wsgi.read_body(environ, MAX_BODY))
            if token is None:
                token = form.get("token")
        if token is None:
            if method == "POST":
                raise HTTPError(400, "This unsubscribe link is not valid.")
            return self._how_to_page()
        address = self._verify(token)
        ledger: Pages | None
        if method == "POST":
            one_click = form.get("List-Unsubscribe", "").strip().lower() == "one-click"
            ledger = self.ledger(create=True)
            assert ledger is not None
            new = ledger.suppress(address, Reason.UNSUBSCRIBED, "one-click" if one_click else "web")
            return self._done_page(address, already=not new)
        ledger = self.ledger(create=False)
        if ledger is not None and ledger.is_suppressed(address):
            return self._done_page(address, already=True)
        return self._confirm_page(address, token, script)

    def _verify(self, token: str) -> str:
        bad = HTTPError(
            400,
            "This unsubscribe link is not valid: it may have been cut short when it was copied. "
            "Please use the Unsubscribe link at the bottom of one of our emails.",
        )
        if not token or len(token) > MAX_TOKEN:
            raise bad
        try:
            address = verify(self.secret, self.list_id, token)
        except (BadToken, BadData, ValueError, TypeError, UnicodeError):
            raise bad from None
        if "@" not in address or not address.strip():
            raise bad
        return address

    def _confirm_page(self, address: str, token: str, script: str) -> Response:
        who, lst = html.escape(mask_email(address)), html.escape(self.list_name)
        action = html.escape(script + self.unsubscribe_path, quote=True)
        body = (
            f"<h1>Unsubscribe {who} from {lst}?</h1>\n"
            "<p>You will get no more emails from this newsletter.</p>\n"
            f'<form method="post" action="{action}">\n'
            f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">\n'
            '<input type="hidden" name="confirm" value="1">\n'
            '<button type="submit">Unsubscribe</button>\n</form>'
        )
        return page(200, f"Unsubscribe from {self.list_name}?", body, lang=self.settings.lang)

    def _done_page(self, address: str, *, already: bool) -> Response:
        who, lst = html.escape(mask_email(address)), html.escape(self.list_name)
        note = (
            "You had already unsubscribed: nothing more to do."
            if already
            else ("It takes effect at once: no further issue will be sent to this address.")
        )
        back = ""
        if self.settings.reply_to:
            back = (
                f'<p class="muted">Unsubscribed by mistake? Write to '
                f"{html.escape(self.settings.reply_to)}.</p>"
            )
        body = (
            "<h1>You are unsubscribed</h1>\n"
            f"<p>{who} will get no more emails from {lst}.</p>\n<p>{note}</p>\n{back}"
        )
        return page(200, "You are unsubscribed", body, lang=self.settings.lang)

    def _how_to_page(self) -> Response:
        lst = html.escape(self.list_name)
        body = (
            f"<h1>Unsubscribe from {lst}</h1>\n"
            "<p>Every email we send ends with an <strong>Unsubscribe</strong> link made for the "
            "address it was sent to. Open it from one of our emails and confirm with the "
            "button: that address gets nothing more from us.</p>\n"
            "<p>Your mail app may also show an Unsubscribe button next to the sender's name; it "
            "does the same.</p>"
        )
        if self.settings.reply_to:
            body += (
                f"\n<p>Or reply to any issue, or write to {html.escape(self.settings.reply_to)}, "
                "asking to be removed.</p>"
            )
        return page(200, f"Unsubscribe from {self.list_name}", body, lang=self.settings.lang)

    # -- archive: the pages `mailer publish` writes (mailer/archive), served ----------------

    def _sent(self) -> dict[str, datetime]:
        """When each issue the ledger has accepted copies of first went out."""
        ledger: Pages | None = self.ledger(create=False)
        return ledger.first_sends() if ledger is not None else {}

    def _site(self, environ: WSGIEnvironment, script: str) -> str:
        """The site's URL for absolute links: archive_url's, else the one asked for."""
        configured = site_url(self.settings)
        if configured:
            return configured
        host = (
            environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        )
        return f"{environ.get('wsgi.url_scheme', 'http')}://{host}{script}/"

    def archived(self, environ: WSGIEnvironment, script: str, slug: str) -> Response:
        # Only public issues: a draft or a scheduled one must not leak before it goes out.
        page = self.archive.page(slug, self._sent(), self._site(environ, script))
        if page is None:
            raise HTTPError(404, "There is no such issue in the archive.")
        return Response(200, page.encode("utf-8"), csp=ARCHIVE_CSP, cache=ARCHIVE_CACHE)

    def index(self, script: str) -> Response:
        prefix = f"{script}{self.archive_prefix}/"
        text = self.archive.index(
            self._sent(), href=lambda e: prefix + quote(e.slug), feed_href=f"{script}/feed.xml"
        )
        csp = PAGE_CSP
        if self.settings.subscribe_url:  # the signup form posts there
            parts = urlsplit(self.settings.subscribe_url)
            csp = csp.replace(
                "form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}"
            )
        return Response(200, text.encode("utf-8"), csp=csp, cache=ARCHIVE_CACHE)

    def feed(self, environ: WSGIEnvironment, script: str) -> Response:
        body = self.archive.feed(self._sent(), self._site(environ, script))
        atom = "application/atom+xml; charset=utf-8"
        return Response(200, body, content_type=atom, cache=ARCHIVE_CACHE)


def make_app(settings: Settings) -> WSGIApplication:
    """The WSGI application for one project's settings (state dir, secret, list id)."""
    return WebApp(settings)


class _LazyApp:
    """`mailer.web:app`: builds make_app(config.load()) on the first request, not on import."""

    def __init__(self) -> None:
        self._app: WebApp | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from mailer import config

                    try:
                        self._app = WebApp(config.load())
                    except MailerError as exc:  # tried again on the next request
                        WebApp._log(environ, f"mailer.web: {exc.format_message()}")
                        response = error_page(500, "This site is not configured yet.")
                        start_response("500 Internal Server Error", response.wsgi_headers())
                        return [response.body]
        return self._app(environ, start_response)


app = _LazyApp()


# -- the built-in server --------------------------------------------------------------------


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    ready: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve the app until KeyboardInterrupt; ready(url) once listening."""
    application = WebApp(settings)
    try:
        with wsgi.Server(
            application, host=host, port=port, log=sys.stderr, limits=limits
        ) as server:
            if ready is not None:
                ready(server.url)
            server.run()
    finally:
        application.close()
