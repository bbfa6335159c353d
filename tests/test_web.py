"""The unsubscribe endpoint and the web archive, over real HTTP on 127.0.0.1.

Every test serves mailer.web on a free loopback port (mailer.web.wsgi's waitress server, as
`mailer serve` does) and speaks HTTP to it with http.client, which never follows a redirect by
itself.
"""

from __future__ import annotations

import csv
import http.client
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from click.testing import CliRunner

from mailer import config
from mailer.cli import main
from mailer.deliver import tokens
from mailer.errors import ConfigError
from mailer.preview.app import PreviewApp
from mailer.preview.watcher import Preview
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState
from mailer.web import routes as web
from mailer.web import wsgi

REPO = Path(__file__).resolve().parents[1]
SENT = DeliveryState.SENT
SECRET = "test-secret-of-the-suite"
LIST_ID = "nlp-newsletter.example.org"  # list_id in mailer.toml
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUBSCRIBERS = """email,name
ann@example.com,Ann
bob@example.com,Bob
carol@example.com,Carol
Dave@Example.com,Dave
erin@example.com,Erin
"""


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    text: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Site:
    """A running server: its port, its app, and a way to talk to it."""

    port: int
    app: web.WebApp
    settings: config.Settings

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read().decode("utf-8"))
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def one_click(self, token: str) -> Reply:
        return self.request("POST", f"/unsubscribe?token={quote(token)}", ONE_CLICK, FORM)

    def suppressions(self) -> dict[str, tuple[str, str]]:
        with Ledger(self.settings.state_path) as ledger:
            return {s.email: (s.reason, s.source) for s in ledger.suppressions()}


def token_for(email: str, *, secret: str = SECRET, list_id: str = LIST_ID) -> str:
    return tokens.sign(secret, list_id, email)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "news"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues" / "issue-2.md")
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    (root / "subscribers.csv").write_text(SUBSCRIBERS, encoding="utf-8")
    return root


@pytest.fixture
def settings(project: Path) -> config.Settings:
    return config.load(project, environ={"MAILER_SECRET": SECRET})


def _start(settings: config.Settings) -> tuple[wsgi.Server, web.WebApp, threading.Thread]:
    app = web.WebApp(settings)
    # No request log here: a line written after a test ends would land on the terminal.
    server = wsgi.Server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, app, thread


def _stop(server: wsgi.Server, app: web.WebApp, thread: threading.Thread) -> None:
    server.stop()
    thread.join(5)
    server.close()
    app.close()


@pytest.fixture
def site(settings: config.Settings) -> Iterator[Site]:
    server, app, thread = _start(settings)
    try:
        yield Site(server.port, app, settings)
    finally:
        _stop(server, app, thread)


# -- one-click and the confirmation page ----------------------------------------------------


def test_one_click_post_unsubscribes_at_once_without_redirect(site: Site) -> None:
    reply = site.one_click(token_for("Reader@Example.com"))
    assert reply.status == 200
    assert reply.header("Location") is None
    assert "You are unsubscribed" in reply.text
    assert site.suppressions() == {"reader@example.com": ("unsubscribed", "one-click")}


def test_one_click_as_multipart_form_data(site: Site) -> None:
    boundary = "xYzZY"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()
    reply = site.request(
        "POST",
        f"/unsubscribe?token={token_for('m@example.com')}",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert reply.status == 200
    assert site.suppressions() == {"m@example.com": ("unsubscribed", "one-click")}


def test_get_shows_one_button_and_changes_nothing(site: Site) -> None:
    token = token_for("reader@example.com")
    for _ in range(3):  # a link scanner fetching the link, several times
        reply = site.get(f"/unsubscribe?token={token}")
        assert reply.status == 200
        assert "Unsubscribe re***@example.com from NLP Newsletter?" in reply.text
        assert "reader@example.com" not in reply.text  # masked
        assert reply.text.count("<form") == 1 and reply.text.count("<button") == 1
        assert re.search(r'<form method="post" action="/unsubscribe">', reply.text)
    head = site.request("HEAD", f"/unsubscribe?token={token}")
    assert head.status == 200 and head.text == ""
    assert site.suppressions() == {}


def test_the_button_posts_and_a_second_time_is_harmless(site: Site) -> None:
    page = site.get(f"/unsubscribe?token={token_for('reader@example.com')}").text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    action = re.search(r'<form method="post" action="([^"]+)">', page).group(1)
    body = "&".join(f"{k}={quote(v)}" for k, v in fields.items()).encode()
    first = site.request("POST", action, body, FORM)  # the person pressing the button
    assert first.status == 200 and "You are unsubscribed" in first.text
    again = site.request("POST", action, body, FORM)
    assert again.status == 200 and "already" in again.text
    one_click = site.one_click(fields["token"])
    assert one_click.status == 200
    # The first unsubscribe is the one kept.
    assert site.suppressions() == {"reader@example.com": ("unsubscribed", "web")}
    # And the link, opened again, now says so instead of offering the button.
    later = site.get(f"/unsubscribe?token={fields['token']}")
    assert later.status == 200 and "<form" not in later.text and "already" in later.text


def test_unsubscribe_without_token_explains_how(site: Site) -> None:
    reply = site.get("/unsubscribe")
    assert reply.status == 200
    assert "<form" not in reply.text and "Unsubscribe" in reply.text
    assert site.request("POST", "/unsubscribe", ONE_CLICK, FORM).status == 400
    assert site.suppressions() == {}


def _bad_tokens() -> dict[str, str]:
    good = token_for("reader@example.com")
    payload, sig = good.rsplit(".", 1)
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    return {
        "other secret": token_for("reader@example.com", secret="not-our-secret"),
        "other list": token_for("reader@example.com", list_id="another-list.example.org"),
        "truncated": good[:-6],
        "signature cut off": payload,
        "tampered signature": f"{payload}.{flipped}",
        "moved to another address": token_for("mallory@example.com").split(".")[0] + "." + sig,
        "dev secret": token_for("reader@example.com", secret=config.DEV_SECRET),
        "garbage": "not-a-token",
        "empty": "",
        "script": "<script>alert(1)</script>",
        "huge": "A" * 5000,
    }


@pytest.mark.parametrize("name", sorted(_bad_tokens()))
def test_bad_tokens_get_400_and_record_nothing(site: Site, name: str) -> None:
    token = _bad_tokens()[name]
    q = quote(token, safe="")
    for reply in (
        site.get(f"/unsubscribe?token={q}"),
        site.request("POST", f"/unsubscribe?token={q}", ONE_CLICK, FORM),
        site.request("POST", "/unsubscribe", f"token={q}&confirm=1".encode(), FORM),
    ):
        assert reply.status == 400, name
        assert "not valid" in reply.text
        assert "<script>" not in reply.text
        assert reply.header("Cache-Control") == "no-store"
    assert site.suppressions() == {}


def test_reflected_values_are_escaped(site: Site) -> None:
    evil = "ab<i>cd@<script>alert(1)</script>.example"
    token = token_for(evil)
    page = site.get(f"/unsubscribe?token={token}")
    assert page.status == 200
    assert "<script>" not in page.text and "<i>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    done = site.one_click(token)
    assert done.status == 200 and "<script>" not in done.text
    assert "&lt;script&gt;" in done.text
    # Odd paths are never echoed.
    lost = site.get("/%3Cscript%3Ealert(1)%3C/script%3E")
    assert lost.status == 404 and "<script>" not in lost.text and "alert" not in lost.text


def test_twenty_concurrent_one_click_posts_all_land(site: Site) -> None:
    addresses = [f"reader{i}@example.com" for i in range(20)]
    barrier = threading.Barrier(len(addresses))

    def unsubscribe(address: str) -> int:
        token = token_for(address)
        barrier.wait(10)
        return site.one_click(token).status

    with ThreadPoolExecutor(len(addresses)) as pool:
        statuses = list(pool.map(unsubscribe, addresses))
    assert statuses == [200] * 20
    assert site.suppressions() == {a: ("unsubscribed", "one-click") for a in addresses}


# -- headers, methods, limits ---------------------------------------------------------------


def test_headers_on_every_response(site: Site) -> None:
    with Ledger(site.settings.state_path) as ledger:
        ledger.record("issue-2", "ann@example.com", SENT)
    token = token_for("reader@example.com")
    replies = {
        "confirm": site.get(f"/unsubscribe?token={token}"),
        "done": site.one_click(token),
        "bad": site.get("/unsubscribe?token=nope"),
        "how-to": site.get("/unsubscribe"),
        "index": site.get("/"),
        "archive": site.get("/issues/issue-2"),
        "404": site.get("/nothing-here"),
        "405": site.request("DELETE", "/unsubscribe"),
        "healthz": site.get("/healthz"),
    }
    for name, reply in replies.items():
        assert re.fullmatch(r"text/(html|plain); charset=utf-8", reply.header("Content-Type")), name
        assert reply.header("X-Content-Type-Options") == "nosniff", name
        assert reply.header("Referrer-Policy") == "no-referrer", name
        assert reply.header("X-Frame-Options") == "DENY", name
        csp = reply.header("Content-Security-Policy")
        assert csp and "default-src 'none'" in csp and "script-src" not in csp, name
        assert reply.header("Location") is None, name
        assert "Python" not in (reply.header("Server") or ""), name
    for name in ("confirm", "done", "bad", "how-to"):
        assert replies[name].header("Cache-Control") == "no-store", name
        csp = replies[name].header("Content-Security-Policy")
        assert "style-src 'unsafe-inline'" in csp and "form-action 'self'" in csp, name
    assert replies["healthz"].status == 200 and replies["healthz"].text == "ok"


def test_methods_not_allowed(site: Site) -> None:
    for method, path, allowed in [
        ("PUT", "/unsubscribe", "GET, HEAD, POST"),
        ("DELETE", "/unsubscribe?token=x", "GET, HEAD, POST"),
        ("POST", "/", "GET, HEAD"),
        ("POST", "/issues/issue-2", "GET, HEAD"),
        ("PATCH", "/healthz", "GET, HEAD"),
    ]:
        reply = site.request(method, path, b"", FORM)
        assert reply.status == 405, (method, path)
        assert reply.header("Allow") == allowed


def test_oversized_body_gets_413_and_records_nothing(site: Site) -> None:
    token = token_for("reader@example.com")
    body = ONE_CLICK + b"&pad=" + b"x" * 20_000
    reply = site.request("POST", f"/unsubscribe?token={token}", body, FORM)
    assert reply.status == 413
    assert site.suppressions() == {}
    # Just under the limit is fine.
    body = ONE_CLICK + b"&pad=" + b"x" * 9_000
    assert site.request("POST", f"/unsubscribe?token={token}", body, FORM).status == 200


def test_no_secret_no_endpoint(project: Path) -> None:
    unsigned = config.load(project, environ={})
    with pytest.raises(ConfigError, match="MAILER_SECRET"):
        web.make_app(unsigned)


def test_configured_unsubscribe_path_is_served(project: Path) -> None:
    custom = config.load(
        project,
        environ={
            "MAILER_SECRET": SECRET,
            "MAILER_UNSUBSCRIBE_URL": "https://news.example.org/u/leave",
        },
    )
    server, app, thread = _start(custom)
    try:
        s = Site(server.port, app, custom)
        token = token_for("a@example.com")
        assert s.get(f"/u/leave?token={token}").status == 200
        assert 'action="/u/leave"' in s.get(f"/u/leave?token={token}").text
        assert s.one_click(token).status == 200  # /unsubscribe always works too
    finally:
        _stop(server, app, thread)


# -- the archive ----------------------------------------------------------------------------


def test_archive_shows_only_sent_issues_without_personal_data(site: Site, project: Path) -> None:
    draft = project / "issues" / "issue-3.md"
    draft.write_text("---\ntitle: Secret draft\n---\n\nNot yet.\n", encoding="utf-8")
    assert site.get("/issues/issue-2").status == 404  # nothing sent yet
    assert site.get("/issues/issue-3").status == 404
    assert "No issues yet" in site.get("/").text

    with Ledger(site.settings.state_path) as ledger:
        ledger.record("issue-2", "ann@example.com", SENT)
    reply = site.get("/issues/issue-2")
    assert reply.status == 200
    page = reply.text
    assert "NLP Newsletter #2" in page
    assert "%%mailer:" not in page and "token=" not in page
    assert "ann@example.com" not in page
    assert "You receive this because you subscribed to NLP Newsletter." in page
    # The web version has no unsubscribe link: nobody's, and not the endpoint's either.
    assert "/unsubscribe" not in page and ">Unsubscribe<" not in page
    assert "script-src" not in reply.header("Content-Security-Policy")

    index = site.get("/")
    assert index.status == 200
    assert 'href="/issues/issue-2"' in index.text and "NLP Newsletter #2" in index.text
    assert "Secret draft" not in index.text and "issue-3" not in index.text
    assert site.get("/issues/issue-3").status == 404  # the draft stays private
    for path in (
        "/issues/nope",
        "/issues/..%2Fmailer",
        "/issues/../mailer.toml",
        "/issues/issue-2/extra",
        "/issues/%2e%2e",
    ):
        assert site.get(path).status == 404, path


def test_archive_is_cached_until_the_file_changes(
    site: Site, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailer.archive.pages

    renders: list[str] = []
    real = mailer.archive.pages.render

    def counted(parsed: Any, settings: Any) -> Any:
        renders.append(parsed.slug)
        return real(parsed, settings)

    monkeypatch.setattr(mailer.archive.pages, "render", counted)
    issue = project / "issues" / "issue-2.md"
    with Ledger(site.settings.state_path) as ledger:
        ledger.record("issue-2", "ann@example.com", SENT)
    first = site.get("/issues/issue-2").text
    assert site.get("/issues/issue-2").text == first
    assert renders == ["issue-2"]  # the second request rendered nothing
    text = issue.read_text(encoding="utf-8").replace("NLP Newsletter #2", "NLP Newsletter No. 2", 1)
    issue.write_text(text, encoding="utf-8")
    st = issue.stat()
    os.utime(issue, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert "NLP Newsletter No. 2" in site.get("/issues/issue-2").text
    assert "NLP Newsletter No. 2" in site.get("/").text


# -- the server: bounded threads, and client junk gets a status line -------------------------


def _raw(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    """Send bytes on a fresh connection; everything the server answers before it closes."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What waitress logs: no record may carry a traceback."""
    caplog.set_level(logging.DEBUG, logger="waitress")
    return caplog


def test_a_70_kb_url_gets_414_and_the_server_keeps_serving(
    site: Site, server_log: pytest.LogCaptureFixture
) -> None:
    for path in ("/issues/" + "a" * 70_000, "/unsubscribe?token=" + "A" * 70_000):
        reply = site.get(path)
        assert reply.status == 414, path[:30]
        assert reply.header("X-Content-Type-Options") == "nosniff"
    assert site.get("/healthz").text == "ok"
    # Just under the limit, the app answers (a token that long is not valid: 400).
    target = "/unsubscribe?token=" + "A" * (wsgi.MAX_TARGET - 19)
    assert len(target) == wsgi.MAX_TARGET and site.get(target).status == 400
    assert not [r for r in server_log.records if r.exc_info]


@pytest.mark.parametrize(
    "junk",
    [
        b"GARBAGE\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: x\r\n\r\n",  # methods are case-sensitive
        b"GET / HTTP/1.1\r\nHost x\r\n\r\n",  # a header without its colon
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ],
)
def test_a_garbage_request_gets_400(
    site: Site, server_log: pytest.LogCaptureFixture, junk: bytes
) -> None:
    answer = _raw(site.port, junk)
    assert re.match(rb"HTTP/1\.[01] 400 Bad Request\r\n", answer), answer[:80]
    assert site.get("/healthz").text == "ok"
    assert not [r for r in server_log.records if r.exc_info]


def test_headers_past_the_limit_get_431(site: Site) -> None:
    # Exactly the limit, headers unfinished: waitress has read every byte when it answers
    # (bytes still unread when it closes would make the kernel reset the connection).
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    junk = start + b"p" * (wsgi.MAX_HEADER - len(start))
    assert re.match(rb"HTTP/1\.[01] 431 ", _raw(site.port, junk))
    assert site.get("/healthz").text == "ok"


def test_fifty_idle_connections_take_no_thread(site: Site) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", site.port), timeout=10) for _ in range(50)]
    try:
        for sock in idle[::2]:  # half of them slow: a request started and never finished
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        assert site.get("/healthz").text == "ok"  # answered while all fifty are open
        assert threading.active_count() <= before  # waitress' pool was started up front
    finally:
        for sock in idle:
            sock.close()
    names = [t.name for t in threading.enumerate() if t.name.startswith("waitress-")]
    assert len(names) == wsgi.THREADS


def test_serves_on_ipv6_loopback(settings: config.Settings) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    app = web.WebApp(settings)
    server = wsgi.Server(app, host="::1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert server.url == f"http://[::1]:{server.port}/"
        conn = http.client.HTTPConnection("::1", server.port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok"
        conn.close()
    finally:
        _stop(server, app, thread)


def test_both_apps_send_the_same_security_headers(site: Site) -> None:
    """mailer.web and the preview: one set of headers; each response picks its CSP."""
    preview = Preview(site.settings, "issue-2")
    preview.refresh()
    app = PreviewApp(preview, host_check=True, max_waiting=2)
    server = wsgi.Server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    other = Site(server.port, None, site.settings)  # type: ignore[arg-type]
    long_url = "/" + "x" * 10_000
    try:
        replies = {
            **{f"web {p}": site.get(p) for p in ("/", "/healthz", "/unsubscribe", "/nope")},
            "web 405": site.request("DELETE", "/"),
            "web 414": site.get(long_url),
            **{
                f"preview {p}": other.get(p)
                for p in (
                    "/",
                    "/email.html",
                    "/email.txt",
                    "/message.eml",
                    "/api/state?wait=0",
                    "/nope",
                )
            },
            "preview 405": other.request("POST", "/", b"", FORM),
            "preview 414": other.get(long_url),
            "preview 421": other.request("GET", "/", headers={"Host": "attacker.example"}),
        }
    finally:
        preview.close()
        server.stop()
        thread.join(5)
        server.close()
    statuses = {name: r.status for name, r in replies.items()}
    assert statuses["preview /"] == statuses["web /"] == 200
    assert statuses["preview 421"] == 421 and statuses["preview 405"] == 405
    assert statuses["preview 414"] == statuses["web 414"] == 414
    security = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Server": "mailer",
    }
    for name, reply in replies.items():
        for header, value in security.items():
            assert reply.header(header) == value, (name, header)
        csp = reply.header("Content-Security-Policy") or ""
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, name
        assert reply.header("Cache-Control"), name
        assert reply.header("Content-Type"), name
    # Each app's CSP is its own: the preview page runs its inline script, nothing else does.
    assert "script-src 'unsafe-inline'" in replies["preview /"].header("Content-Security-Policy")
    csps = {name: reply.header("Content-Security-Policy") for name, reply in replies.items()}
    scripted = [name for name, csp in csps.items() if "script-src" in csp]
    assert scripted == ["preview /"]


# -- the module-level app and `mailer serve` ------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(extra)
    return env


def test_module_app_is_lazy_and_reads_the_working_directory(project: Path) -> None:
    code = """
import io, os, sys
from wsgiref.util import setup_testing_defaults
import mailer.web
assert not os.path.exists('.mailer'), 'import had side effects'
assert mailer.web.app._app is None
environ = {'PATH_INFO': '/healthz'}
setup_testing_defaults(environ)
out = []
body = b''.join(mailer.web.app(environ, lambda status, headers: out.append(status)))
print(out[0], body.decode())
environ = {'PATH_INFO': '/'}
setup_testing_defaults(environ)
body = b''.join(mailer.web.app(environ, lambda status, headers: out.append(status)))
print(out[1], 'NLP Newsletter' in body.decode())
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=_env(MAILER_SECRET=SECRET),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["200 OK ok", "200 OK True"]


def test_module_app_without_secret_answers_500(project: Path) -> None:
    code = """
from wsgiref.util import setup_testing_defaults
import mailer.web
environ = {'PATH_INFO': '/healthz'}
setup_testing_defaults(environ)
out = []
body = b''.join(mailer.web.app(environ, lambda status, headers: out.append(status)))
print(out[0])
print(environ['wsgi.errors'].getvalue())
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("500 Internal Server Error")
    assert "MAILER_SECRET" in result.stdout


def test_mailer_serve_binds_loopback_and_stops_on_ctrl_c(project: Path) -> None:
    mailer = Path(sys.executable).parent / "mailer"
    proc = subprocess.Popen(
        [str(mailer), "-C", str(project), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(MAILER_SECRET=SECRET),
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        port = int(match.group(1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok"
        conn.close()
        token = token_for("reader@example.com")
        site = Site(port, None, config.load(project, environ={"MAILER_SECRET": SECRET}))  # type: ignore[arg-type]
        assert site.one_click(token).status == 200
        assert site.suppressions() == {"reader@example.com": ("unsubscribed", "one-click")}
        # Client junk: a status line each, and nothing but a log line on the server's side.
        assert site.get("/unsubscribe?token=" + "A" * 70_000).status == 414
        assert _raw(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.0 400 Bad Request")
        assert site.get("/healthz").text == "ok"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert "token=" not in err  # the request log leaves tokens (and so addresses) out
    assert '"POST /unsubscribe" 200' in err
    assert '"GET /unsubscribe" 414' in err
    assert "Traceback" not in err and "Error" not in err, err


# -- the CLI around the suppression list ----------------------------------------------------


def _cli(project: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["-C", str(project), *args], env=_env(MAILER_SECRET=SECRET))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)  # `-C` chdirs the test process; monkeypatch puts it back
    return project


def test_cli_unsubscribe_suppressed_and_export(cli_project: Path, site: Site) -> None:
    project = cli_project
    assert site.one_click(token_for("bob@example.com")).status == 200
    code, out, _ = _cli(project, "unsubscribe", "Dave@Example.COM")
    assert code == 0 and "dave@example.com: suppressed (manual)" in out.lower()
    code, out, _ = _cli(project, "unsubscribe", "dave@example.com", "--reason", "bounced")
    assert code == 0 and "already suppressed" in out
    code, _, err = _cli(project, "unsubscribe", "not an address")
    assert code == 2 and "ADDRESS" in err

    code, out, _ = _cli(project, "suppressed", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["email"], r["reason"], r["source"]) for r in rows] == [
        ("bob@example.com", "unsubscribed", "one-click"),
        ("dave@example.com", "manual", "cli"),
    ]
    assert all(r["created_at"] for r in rows)
    code, out, err = _cli(project, "suppressed")
    assert code == 0 and "bob@example.com  unsubscribed  one-click" in out and "2 suppressed" in err

    code, out, err = _cli(project, "subscribers", "export")
    assert code == 0
    exported = [r["email"].lower() for r in csv.DictReader(io.StringIO(out))]
    assert exported == ["ann@example.com", "carol@example.com", "erin@example.com"]
    assert "3 exported" in err


# -- end to end: unsubscribe over HTTP, then a real send skips them -------------------------


@pytest.mark.slow
def test_send_skips_addresses_unsubscribed_over_http(
    site: Site, project: Path, smtp_server
) -> None:
    assert site.get("/issues/issue-2").status == 404  # not sent yet: not public

    # Bob uses his mail app's one-click button; Dave (Dave@Example.com in the CSV) the page.
    assert site.one_click(token_for("bob@example.com")).status == 200
    page = site.get(f"/unsubscribe?token={token_for('dave@example.com')}").text
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    assert site.request("POST", "/unsubscribe", f"token={token}".encode(), FORM).status == 200

    env = _env(
        MAILER_SECRET=SECRET,
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(smtp_server.port),
        MAILER_SMTP_SECURITY="none",
        MAILER_RATE="off",
    )
    mailer = str(Path(sys.executable).parent / "mailer")
    dry = subprocess.run(
        [mailer, "-C", str(project), "send", "issue-2", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert re.search(r"recipients\s+3\b", dry.stdout) and re.search(r"suppressed\s+2\b", dry.stdout)
    assert smtp_server.received == []

    result = subprocess.run(
        [mailer, "-C", str(project), "send", "issue-2", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 suppressed" in result.stdout
    got = smtp_server.by_recipient()
    assert got == {"ann@example.com": 1, "carol@example.com": 1, "erin@example.com": 1}

    # The archive now has the issue, without anyone's data.
    archived = site.get("/issues/issue-2")
    assert archived.status == 200 and "ann@example.com" not in archived.text

    # The links in a real message work against the endpoint: header (one-click) and footer.
    msg = smtp_server.received[0].message()
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header_url = re.search(r"<(https://[^>]+)>", str(msg["List-Unsubscribe"])).group(1)
    html_part = msg.get_body(("html",)).get_content()
    footer_url = re.search(r'href="(https://[^"]+/unsubscribe\?token=[^"]+)"', html_part).group(1)
    assert footer_url.replace("&amp;", "&") == header_url
    split = urlsplit(header_url)
    recipient = msg["To"].addresses[0].addr_spec.lower()
    page = site.get(f"{split.path}?{split.query}")
    assert page.status == 200 and "<button" in page.text
    assert recipient not in site.suppressions()
    assert site.request("POST", f"{split.path}?{split.query}", ONE_CLICK, FORM).status == 200
    assert site.suppressions()[recipient] == ("unsubscribed", "one-click")
    assert set(site.suppressions()) == {"bob@example.com", "dave@example.com", recipient}


@pytest.mark.parametrize(
    "email",
    [
        "ann@example.com",
        "Ann.Upper@Example.COM",
        "josé.ünï@exämple.org",
        "a" * 50 + "@" + "a" * 40 + ".aa",  # so repetitive that itsdangerous compresses it
    ],
)
@pytest.mark.parametrize("list_id", ["nlp-newsletter.example.org", "ünï.example", ""])
def test_fast_sign_makes_itsdangerous_tokens_byte_for_byte(email: str, list_id: str) -> None:
    """tokens.sign skips itsdangerous for speed; links already sent must keep working."""
    made = tokens.sign(SECRET, list_id, email)
    assert made == tokens._serializer(SECRET, list_id).dumps([list_id, email.lower()])
    assert tokens.verify(SECRET, list_id, made) == email.lower()
    assert made.startswith(".") == (email.startswith("a" * 50))
