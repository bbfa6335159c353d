"""The signup form of `mailer serve`: double opt-in, the welcome issue, and what abuse meets.

Real servers throughout: the web app on waitress, the aiosmtpd server taking the
confirmation and welcome mails, SQLite and PostgreSQL for the store, chromium for the form.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from click.testing import CliRunner
from conftest import SECRET, greeting_templates, smtp_env
from smtp_server import SMTPServer

from mailer import config
from mailer.cli import main
from mailer.deliver import tokens
from mailer.state.ledger import open_ledger
from mailer.web import routes as web
from mailer.web import wsgi

SUBSCRIBE_URL = "https://newsletter.example.org/subscribe"
LIST_ID = "nlp-newsletter.example.org"
WELCOME = """---
title: "Welcome to the NLP Newsletter"
excerpt: "What to expect, and how to leave"
---

Welcome: an issue comes once a month.
"""
GREETING = (
    "<mj-section><mj-column><mj-text>Hi {{ subscriber.name }}</mj-text></mj-column></mj-section>"
)
THANKS = b"Check your inbox"
WAIT = 30.0  # seconds a mail may take to arrive through the worker (a bound, not a measure)


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    root = new_project("email,name\n")
    (root / "issues" / "welcome.md").write_text(WELCOME, encoding="utf-8")
    greeting_templates(root, GREETING)  # the reader's name, as any issue takes it
    _without_subscribe_url(root)
    with (root / "mailer.toml").open("a") as toml:
        toml.write('templates = "templates"\n')
        toml.write(f'subscribers = "store"\nsubscribe_url = "{SUBSCRIBE_URL}"\n')
        toml.write('welcome = "welcome"\n')
    return root


def _without_subscribe_url(root: Path) -> None:
    """The bundled mailer.toml names a subscribe_url: these tests set their own (or none)."""
    toml = root / "mailer.toml"
    kept = [
        line
        for line in toml.read_text("utf-8").splitlines()
        if not line.startswith("subscribe_url")
    ]
    toml.write_text("\n".join(kept) + "\n", encoding="utf-8")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_project(project: Path, request: pytest.FixtureRequest) -> Path:
    if request.param == "postgresql":
        url = request.getfixturevalue("database_with_password")
        with (project / "mailer.toml").open("a") as toml:
            toml.write(f'database_url = "{url}"\n')
    return project


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Site:
    port: int
    settings: config.Settings

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def post(self, path: str, fields: dict[str, str], **headers: str) -> Reply:
        head = {"Content-Type": "application/x-www-form-urlencoded", **headers}
        return self.request("POST", path, urlencode(fields).encode(), head)

    def signup(self, email: str, name: str = "", website: str = "", **headers: str) -> Reply:
        return self.post(
            "/subscribe", {"email": email, "name": name, "website": website}, **headers
        )

    def readers(self) -> dict[str, tuple[str, str, str]]:
        with open_ledger(self.settings) as book:
            return {
                r.email: (r.status.value, r.consent.source, r.consent.form_url)
                for r in book.readers()
            }


def serve(project: Path, server: SMTPServer, **env: str) -> Iterator[Site]:
    settings = config.load(project, environ={**smtp_env(server), **env})
    app = web.WebApp(settings)
    http_server = wsgi.Server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=http_server.run, daemon=True)
    thread.start()
    try:
        yield Site(http_server.port, settings)
    finally:
        http_server.stop()
        thread.join(5)
        http_server.close()
        app.close()


@pytest.fixture
def site(store_project: Path, smtp_server: SMTPServer) -> Iterator[Site]:
    yield from serve(store_project, smtp_server)


def wait_for_mail(server: SMTPServer, count: int) -> None:
    """Until `count` messages have arrived (the worker sends after the reply)."""
    deadline = time.monotonic() + WAIT
    while len(server.received) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.received) >= count, [m.rcpt_tos for m in server.received]


def confirm_link(server: SMTPServer, index: int = 0) -> str:
    text = server.received[index].message().get_body(("plain",)).get_content()  # type: ignore[union-attr]
    match = re.search(r"(https://\S+/subscribe/confirm\?token=\S+)", text)
    assert match, text
    return match.group(1)


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# -- the form -------------------------------------------------------------------------------


def _check_form(html: str) -> None:
    assert 'method="post"' in html
    assert 'name="email"' in html and 'type="email"' in html and "required" in html
    assert 'name="name"' in html
    assert '<label for="signup-email">' in html and '<label for="signup-name">' in html
    honeypot = re.search(r'<div aria-hidden="true" style="([^"]*)">.*?</div>', html, re.S)
    assert honeypot, html
    assert "left:-10000px" in honeypot.group(1)
    field = re.search(r'<input[^>]*name="website"[^>]*>', honeypot.group(0))
    assert field
    assert 'tabindex="-1"' in field.group(0) and 'autocomplete="off"' in field.group(0)
    assert "<script" not in html


def test_form_page_and_snippet(project: Path, smtp_server: SMTPServer) -> None:
    for site in serve(project, smtp_server):
        page = site.request("GET", "/subscribe")
        assert page.status == 200
        html = page.body.decode()
        _check_form(html)
        assert 'action="/subscribe"' in html
        assert "form-action 'self'" in page.headers["Content-Security-Policy"]
    result = CliRunner().invoke(main, ["-C", str(project), "form"], env=smtp_env(smtp_server))
    assert result.exit_code == 0, result.output
    _check_form(result.stdout)
    assert f'action="{SUBSCRIBE_URL}"' in result.stdout


def test_form_without_subscribe_url_is_one_line(new_project: Callable[[str], Path]) -> None:
    root = new_project("email,name\n")
    _without_subscribe_url(root)
    result = CliRunner().invoke(main, ["-C", str(root), "form"], env={"MAILER_SECRET": SECRET})
    assert result.exit_code == 2
    assert result.output.startswith("Error: no subscribe_url")
    assert "Traceback" not in result.output


# -- the whole flow, on SQLite and PostgreSQL -------------------------------------------------


def test_signup_confirm_welcome(site: Site, smtp_server: SMTPServer) -> None:
    page = "https://newsletter.example.org/join"
    reply = site.signup("Ada@Example.com", "Ada Lovelace", Referer=page)
    assert (reply.status, THANKS in reply.body) == (200, True)
    wait_for_mail(smtp_server, 1)
    assert smtp_server.received[0].rcpt_tos == ["Ada@example.com"]
    assert site.readers() == {"Ada@example.com": ("pending", "form", page)}
    link = confirm_link(smtp_server)
    assert link.startswith(SUBSCRIBE_URL + "/confirm?token=")

    # A link scanner's GET (twice) confirms nothing: the page has one button.
    for _ in range(2):
        shown = site.request("GET", local(link))
        assert shown.status == 200 and b'<button type="submit">Confirm</button>' in shown.body
    assert site.readers()["Ada@example.com"][0] == "pending"

    token = urlsplit(link).query.removeprefix("token=")
    from urllib.parse import unquote

    for _ in range(2):  # pressed twice: the same page, one welcome
        done = site.post("/subscribe/confirm", {"token": unquote(token)})
        assert done.status == 200 and b"You are subscribed" in done.body
    wait_for_mail(smtp_server, 2)
    site_readers = site.readers()
    assert site_readers == {"Ada@example.com": ("confirmed", "form", page)}
    welcome = smtp_server.received[1].message()
    assert welcome["Subject"] == "Welcome to the NLP Newsletter"
    assert "Hello Ada Lovelace from" in welcome.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hi Ada Lovelace" in welcome.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert welcome["List-Unsubscribe"]
    with open_ledger(site.settings) as book:
        assert [d.state.value for d in book.deliveries("welcome")] == ["sent"]
    assert smtp_server.by_recipient() == {"ada@example.com": 2}


# -- nobody can read the list through the form ------------------------------------------------


def test_same_reply_for_known_unknown_and_honeypot(site: Site, smtp_server: SMTPServer) -> None:
    with open_ledger(site.settings) as book:
        from mailer.state.reader_rows import Wanted
        from mailer.states import SubscriberStatus

        book.apply_readers(
            [Wanted("known@example.com", SubscriberStatus.CONFIRMED, "cli")],
            forgotten=__import__("mailer.state.reader_rows", fromlist=["Forgotten"]).Forgotten(
                SECRET, []
            ),
        )
    known = site.signup("known@example.com", "K")
    unknown = site.signup("new@example.com", "N")
    bot = site.signup("bot@example.com", "B", website="http://spam.example")
    assert known.status == unknown.status == bot.status == 200
    assert known.body == unknown.body == bot.body
    drop = {"Date", "Content-Length"}
    assert {k: v for k, v in known.headers.items() if k not in drop} == {
        k: v for k, v in bot.headers.items() if k not in drop
    }
    wait_for_mail(smtp_server, 1)
    # The known reader is mailed nothing, the bot stored nothing; only the new one waits.
    assert smtp_server.by_recipient() == {"new@example.com": 1}
    readers = site.readers()
    assert set(readers) == {"known@example.com", "new@example.com"}
    assert readers["new@example.com"][0] == "pending"


def test_one_confirmation_a_day_per_address(site: Site, smtp_server: SMTPServer) -> None:
    for _ in range(3):
        assert site.signup("twice@example.com").status == 200
    wait_for_mail(smtp_server, 1)
    assert site.signup("other@example.com").status == 200
    wait_for_mail(smtp_server, 2)  # the worker is in order: the repeats are behind us
    assert smtp_server.by_recipient() == {"twice@example.com": 1, "other@example.com": 1}


def test_one_confirmation_a_day_survives_a_restart(
    store_project: Path, smtp_server: SMTPServer
) -> None:
    """The once-a-day rule lives in the store: a second server (or a restarted one) keeps it."""
    served = serve(store_project, smtp_server)
    assert next(served).signup("again@example.com").status == 200
    wait_for_mail(smtp_server, 1)
    served.close()
    served = serve(store_project, smtp_server)  # a new server: nothing kept in memory
    site = next(served)
    assert site.signup("again@example.com").status == 200
    assert site.signup("marker@example.com").status == 200
    wait_for_mail(smtp_server, 2)  # the worker is in order: the repeat is behind the marker
    served.close()
    assert smtp_server.by_recipient() == {"again@example.com": 1, "marker@example.com": 1}


# -- abuse ------------------------------------------------------------------------------------


def test_rate_limit_per_client(project: Path, smtp_server: SMTPServer) -> None:
    env = {"MAILER_SIGNUP_RATE": "2", "MAILER_TRUSTED_PROXIES": "127.0.0.1"}
    for site in serve(project, smtp_server, **env):
        fwd = {"X-Forwarded-For": "203.0.113.7"}
        assert [site.signup(f"r{i}@example.com", **fwd).status for i in range(2)] == [200, 200]
        refused = site.signup("r3@example.com", **fwd)
        assert refused.status == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # Another client behind the same (trusted) proxy has its own allowance.
        assert site.signup("s@example.com", **{"X-Forwarded-For": "198.51.100.9"}).status == 200
    for site in serve(project, smtp_server, MAILER_SIGNUP_RATE="2"):
        # No trusted proxy: X-Forwarded-For is ignored, the peer is the client.
        statuses = [
            site.signup(f"t{i}@example.com", **{"X-Forwarded-For": f"192.0.2.{i}"}).status
            for i in range(3)
        ]
        assert statuses == [200, 200, 429]


def test_large_body_and_bad_address(site: Site) -> None:
    big = site.post("/subscribe", {"email": "a@example.com", "name": "x" * 8000})
    assert big.status == 413
    bad = site.signup("not an address")
    assert bad.status == 400 and b"does not look like an email address" in bad.body
    assert site.readers() == {}


def test_forged_and_expired_tokens(site: Site) -> None:
    forged = tokens.sign_confirm("another secret", LIST_ID, "ada@example.com")
    unsubscribe = tokens.sign(SECRET, LIST_ID, "ada@example.com")
    for token in (forged, unsubscribe, "junk", forged[:-3]):
        for method in ("GET", "POST"):
            reply = (
                site.request("GET", f"/subscribe/confirm?token={token}")
                if method == "GET"
                else site.post("/subscribe/confirm", {"token": token})
            )
            assert reply.status == 400 and b"not valid" in reply.body, (token, method)
    eight_days_ago = time.time() - 8 * 86400
    with pytest.MonkeyPatch.context() as clock:
        clock.setattr("itsdangerous.timed.time.time", lambda: eight_days_ago)
        old = tokens.sign_confirm(SECRET, LIST_ID, "ada@example.com")
    for reply in (
        site.request("GET", f"/subscribe/confirm?token={old}"),
        site.post("/subscribe/confirm", {"token": old}),
    ):
        assert reply.status == 400 and b"has expired" in reply.body
    assert site.readers() == {}


def test_single_opt_in_confirms_at_once(project: Path, smtp_server: SMTPServer) -> None:
    for site in serve(project, smtp_server, MAILER_DOUBLE_OPT_IN="false"):
        assert site.signup("grace@example.com", "Grace").status == 200
        wait_for_mail(smtp_server, 1)
        assert site.readers() == {"grace@example.com": ("confirmed", "form", "")}
    assert smtp_server.received[0].message()["Subject"] == "Welcome to the NLP Newsletter"
    assert len(smtp_server.received) == 1


def test_regular_sends_skip_the_welcome_issue(project: Path) -> None:
    from mailer import campaign
    from mailer.state.roster import Roster

    settings = config.load(project, environ={"MAILER_SECRET": SECRET})
    (project / "issues" / "welcome.md").touch()  # the newest file: still not picked
    assert campaign.pick_issue(settings, Roster(None)) == "issue-2"


# -- in a browser, against `mailer serve` -----------------------------------------------------


def test_form_in_chromium(browser, project: Path, smtp_server: SMTPServer) -> None:
    mailer = Path(sys.executable).parent / "mailer"
    env = {**__import__("os").environ, **smtp_env(smtp_server)}
    proc = subprocess.Popen(
        [str(mailer), "-C", str(project), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        base = match.group(1).rstrip("/")
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/subscribe")
        page.get_by_label("Email address").fill("lin@example.com")
        page.get_by_label("Name").fill("Lin")
        page.keyboard.press("Tab")  # the honeypot is not in the tab order: the button is next
        assert page.evaluate("document.activeElement.tagName") == "BUTTON"
        page.get_by_role("button", name=re.compile("Subscribe")).click()
        page.wait_for_selector("text=Check your inbox")
        wait_for_mail(smtp_server, 1)
        page.goto(base + local(confirm_link(smtp_server)))
        page.get_by_role("button", name="Confirm").click()
        page.wait_for_selector("text=You are subscribed")
        wait_for_mail(smtp_server, 2)
        context.close()
        settings = config.load(project, environ=smtp_env(smtp_server))
        with open_ledger(settings) as book:
            reader = book.reader("lin@example.com")
        assert reader is not None and reader.status.value == "confirmed"
        assert reader.name == "Lin"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert smtp_server.by_recipient() == {"lin@example.com": 2}
