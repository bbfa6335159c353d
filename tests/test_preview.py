"""`mailer preview`: the static files, the server (loopback only, Ctrl-C), and the live page.

The browser tests drive Debian's chromium through Playwright against a real `mailer preview`
subprocess on a temporary copy of issue-2. Every request the page makes to anything but
127.0.0.1 is answered in the test (remote images get a local placeholder) or aborted, so
nothing here touches the network. Screenshots of the page at 1280 px go to build/preview-*.png.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email import policy
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mailer import config
from mailer.compose.render import BUILTIN_TEMPLATES
from mailer.errors import InputError
from mailer.preview import write_static
from mailer.preview.watcher import Preview

pytestmark = pytest.mark.slow  # real `mailer preview` server processes

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "build"
CHROMIUM = "/usr/bin/chromium"
TITLE = (
    "NLP Newsletter #2 [EN]: Reformer, DeepMath, ELECTRA, TinyBERT for Search, VizSeq,"
    " Open-Sourcing ML,…"
)
TITLE_LINE = next(
    line
    for line in (REPO / "issues" / "issue-2.md").read_text(encoding="utf-8").splitlines()
    if line.startswith("title:")
)
IMAGES = 7  # in issue-2, all on cdn-images-1.medium.com
SUBSCRIBERS = "email,name,status\nada@example.com,Ada Lovelace,\ngrace@example.com,Grace Hopper,\n"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed (CI installs it)"
)

PLACEHOLDER_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="800" height="400" viewBox="0 0 800 400">'
    '<rect width="800" height="400" fill="#e8ebf1"/>'
    '<g fill="none" stroke="#a3abb8" stroke-width="8" stroke-linejoin="round">'
    '<rect x="340" y="140" width="120" height="96" rx="12"/>'
    '<path d="M352 224l34-38 24 24 16-16 24 30"/></g>'
    '<circle cx="430" cy="168" r="10" fill="#a3abb8"/>'
    '<text x="400" y="290" text-anchor="middle" font-family="sans-serif" font-size="20"'
    ' fill="#7b8494">remote image (placeholder: the test runs offline)</text></svg>'
)


# -- a project to preview ---------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of issue-2 as issues/issue-x.md, the repo's mailer.toml and a two-row list."""
    root = tmp_path / "proj"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues" / "issue-x.md")
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    (root / "subscribers.csv").write_text(SUBSCRIBERS, encoding="utf-8")
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class PreviewServer:
    """`mailer preview` in a subprocess, as a user starts it."""

    def __init__(self, project: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailer",
                "-C",
                str(project),
                "preview",
                "issue-x",
                "--port",
                str(self.port),
                "--no-open",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**_env(), **(env or {})},
        )
        self.out = self.err = ""
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.out, self.err = (b.decode() for b in self.proc.communicate())
                raise AssertionError(f"mailer preview exited {self.proc.returncode}: {self.err}")
            try:
                if _get(self.url + "api/state?wait=0")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("mailer preview did not answer within 60 s")
            time.sleep(0.1)

    def state(self) -> dict:
        status, body = _get(self.url + "api/state?wait=0")
        assert status == 200
        return json.loads(body)

    def wait_for(self, predicate, timeout: float = 15.0) -> dict:
        """Poll the state until predicate(state) holds; return that state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last state error: {state.get('error')}")
            time.sleep(0.1)

    def stop(self) -> int:
        """Ctrl-C, as in a terminal; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("mailer preview did not stop on SIGINT") from None
        self.out, self.err = out.decode(), err.decode()
        return self.proc.returncode

    def assert_clean_exit(self) -> None:
        code = self.stop()
        assert code == 0, (code, self.err)
        assert "Traceback" not in self.out + self.err
        assert "Error" not in self.err, self.err
        assert "previewing issue-x at " + self.url in self.out
        assert "preview stopped" in self.out


@pytest.fixture
def server(project: Path) -> Iterator[PreviewServer]:
    running = PreviewServer(project)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


def _words(text: str) -> str:
    """Text with its line breaks and runs of spaces as single spaces (templates wrap lines)."""
    return " ".join(text.split())


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# -- static files -----------------------------------------------------------------------------


def test_write_static_writes_a_self_contained_page(project: Path, tmp_path: Path) -> None:
    settings = config.load(project)
    out = tmp_path / "site"
    written = write_static(settings, "issue-x", out)
    assert [p.name for p in written] == ["index.html", "email.html", "email.txt", "message.eml"]
    assert all(p.is_file() and p.parent == out for p in written)

    page = (out / "index.html").read_text(encoding="utf-8")
    # No external assets: no script or stylesheet by URL, no fonts from anywhere.
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "fonts.googleapis" not in page
    # The state is inlined, with the email in it, escaped so it cannot close the script tag.
    state_json = page.split("window.MAILER_STATE = ", 1)[1].split(";</script>", 1)[0]
    state = json.loads(state_json)
    assert "</" not in state_json
    assert state["live"] is False and state["ok"] is True and state["error"] is None
    assert state["issue"]["title"] == TITLE
    assert state["subject"] == TITLE

    html = (out / "email.html").read_text(encoding="utf-8")
    assert TITLE in html and html.count("<img") >= IMAGES
    assert "%%mailer:" not in html  # every slot filled in for the reader
    assert "ada@example.com" in html  # the first subscriber of subscribers.csv
    text = (out / "email.txt").read_text(encoding="utf-8")
    assert _words(text).startswith(TITLE) and "%%mailer:" not in text

    message = email.message_from_bytes((out / "message.eml").read_bytes(), policy=policy.default)
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Subject"] == TITLE
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_write_static_as_another_subscriber(project: Path, tmp_path: Path) -> None:
    settings = config.load(project)
    write_static(settings, "issue-x", tmp_path / "site", as_email="Grace@Example.com")
    message = email.message_from_bytes(
        (tmp_path / "site" / "message.eml").read_bytes(), policy=policy.default
    )
    assert message["To"] == "Grace Hopper <grace@example.com>"
    assert "grace@example.com" in (tmp_path / "site" / "email.html").read_text(encoding="utf-8")


def test_write_static_without_a_list_uses_an_example_reader(project: Path, tmp_path: Path) -> None:
    (project / "subscribers.csv").unlink()
    write_static(config.load(project), "issue-x", tmp_path / "site")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    state = json.loads(page.split("window.MAILER_STATE = ", 1)[1].split(";</script>", 1)[0])
    assert state["reader"]["email"] == "reader@example.org"
    headers = dict(state["headers"])
    assert headers["To"] == "reader@example.org"
    for name in ("From", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Id"):
        assert headers[name]


def test_write_static_lists_the_warnings_with_their_lines(project: Path, tmp_path: Path) -> None:
    write_static(config.load(project), "issue-x", tmp_path / "site")
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    state = json.loads(page.split("window.MAILER_STATE = ", 1)[1].split(";</script>", 1)[0])
    by_code: dict[str, list[dict]] = {}
    for w in state["warnings"]:
        by_code.setdefault(w["code"], []).append(w)
    assert len(by_code["alt"]) == IMAGES
    first = by_code["alt"][0]
    assert first["line"] == 14 and first["where"] == "issues/issue-x.md:14"
    assert first["source"].startswith("![](https://cdn-images-1.medium.com/")
    assert by_code["http"][0]["message"] == "link is not https: http://aidemos.cs.toronto.edu/nds/"
    assert by_code["mojibake"][0]["level"] == "info"
    # Without MAILER_SECRET a real send would refuse: said first, as an error.
    assert state["warnings"][0]["level"] == "error"
    assert "MAILER_SECRET" in state["warnings"][0]["message"]


def test_write_static_refuses_a_broken_issue(project: Path, tmp_path: Path) -> None:
    _edit(project / "issues" / "issue-x.md", TITLE_LINE, 'title: "unclosed')
    with pytest.raises(InputError, match="front matter"):
        write_static(config.load(project), "issue-x", tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_preview_out_writes_files_from_the_command_line(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "-C",
            str(project),
            "preview",
            "issue-x",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in ("index.html", "email.html", "email.txt"):
        assert (out / name).is_file()
        assert f"wrote {out / name}" in result.stdout


def test_unknown_issue_fails_before_serving(project: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "-C",
            str(project),
            "preview",
            "nope",
            "--port",
            str(_free_port()),
            "--no-open",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 65
    assert "no issue 'nope'" in result.stderr and "issue-x" in result.stderr
    assert "Traceback" not in result.stderr


# -- the live state, without a browser -------------------------------------------------------------


def test_preview_keeps_the_last_good_render_under_an_error(project: Path) -> None:
    preview = Preview(config.load(project), "issue-x")
    preview.refresh()
    assert preview.state()["ok"] and preview.error is None
    assert preview.check() is False  # nothing changed

    issue = project / "issues" / "issue-x.md"
    _edit(issue, TITLE_LINE, 'title: "unclosed')
    assert preview.check() is True
    state = preview.state()
    assert state["ok"] is True and state["issue"]["title"] == TITLE
    assert "front matter is not valid YAML" in state["error"]["message"]
    assert state["error"]["message"].startswith("issues/issue-x.md:")  # not the absolute path
    assert state["error"]["where"].startswith("issues/issue-x.md:")
    assert any(line["hit"] for line in state["error"]["context"])

    _edit(issue, 'title: "unclosed', 'title: "Back again"')
    assert preview.check() is True
    state = preview.state()
    assert state["error"] is None and state["issue"]["title"] == "Back again"
    assert state["version"] == 3


# -- the server -------------------------------------------------------------------------------


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a socket listening on `port`, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_server_binds_loopback_only_and_stops_on_ctrl_c(server: PreviewServer) -> None:
    status, body = _get(server.url)
    assert status == 200 and b"mailer preview" in body
    status, body = _get(server.url + "api/state?wait=0")
    assert status == 200 and json.loads(body)["version"] >= 1
    assert _get(server.url + "version")[0] == 404  # the old /version route is gone

    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(server.port) == ["0100007F"]  # 127.0.0.1, nothing else
    # Another loopback address reaches a socket bound to all interfaces, not this one.
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.settimeout(5)
        s.connect(("127.0.0.2", server.port))

    # A page on another site that resolves its name to 127.0.0.1 gets nothing.
    status, _ = _get(server.url, headers={"Host": f"attacker.example:{server.port}"})
    assert status == 421
    status, _ = _get(server.url + "nothing-here")
    assert status == 404
    server.assert_clean_exit()


def test_ctrl_c_with_a_page_still_waiting(server: PreviewServer) -> None:
    """A browser tab long-polling when the user presses Ctrl-C: still a clean, quick exit."""
    state = server.state()
    answers: list[object] = []

    def wait() -> None:
        try:
            answers.append(
                _get(f"{server.url}api/state?since={state['version']}&instance={state['instance']}")
            )
        except Exception as exc:  # noqa: BLE001 - cut off mid-answer by the exit is fine too
            answers.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # the long poll is parked on the server
    server.assert_clean_exit()  # with a poll parked: the exit does not wait for it
    waiter.join(timeout=10)
    assert answers


def test_waiting_pages_never_take_every_thread(server: PreviewServer) -> None:
    """More pages long-polling than the pool has threads: the page and its parts still load,
    polls past the cap are answered at once, and Ctrl-C is still quick."""
    from mailer import preview

    state = server.state()
    poll = f"{server.url}api/state?since={state['version']}&instance={state['instance']}"
    polls = preview.THREADS + 4
    answered: list[float] = []
    started = time.monotonic()

    def wait() -> None:
        try:
            with urllib.request.urlopen(poll, timeout=60) as response:
                response.read()
            answered.append(time.monotonic() - started)
        except OSError:  # cut off by the exit below
            pass

    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(polls)]
    for waiter in waiters:
        waiter.start()
    time.sleep(1.5)
    parked = sum(w.is_alive() for w in waiters)
    assert parked == preview.THREADS - 4, (parked, answered)  # the rest got an answer at once
    assert len(answered) == polls - parked  # answered at once, not parked
    for path in ("", "email.html", "email.txt", "message.eml", "api/state?wait=0"):
        assert _get(server.url + path)[0] == 200, path  # served while the polls hold threads
    server.assert_clean_exit()


def test_a_busy_port_is_a_clear_error(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailer",
                "-C",
                str(project),
                "preview",
                "issue-x",
                "--port",
                str(port),
                "--no-open",
            ],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
    assert result.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_issue_at_start_is_served_as_an_error(project: Path) -> None:
    issue = project / "issues" / "issue-x.md"
    _edit(issue, TITLE_LINE + "\n", "")  # no title: an error, but the server starts anyway
    running = PreviewServer(project)
    try:
        state = running.state()
        assert state["ok"] is False
        assert "front matter key 'title' is missing" in state["error"]["message"]
        status, _ = _get(running.url + "email.html")
        assert status == 503
        status, body = _get(running.url)
        assert status == 200 and b"front matter key" in body
        _edit(issue, "---\n", "---\ntitle: Now it has one\n")
        state = running.wait_for(lambda s: s["ok"])
        assert state["error"] is None and state["issue"]["title"] == "Now it has one"
        running.assert_clean_exit()
    finally:
        if running.proc.poll() is None:
            running.proc.kill()


def test_server_serves_the_parts(server: PreviewServer) -> None:
    status, html = _get(server.url + "email.html")
    assert status == 200 and TITLE.encode() in html
    status, text = _get(server.url + "email.txt")
    assert status == 200 and _words(text.decode()).startswith(TITLE)
    status, eml = _get(server.url + "message.eml")
    assert status == 200
    assert email.message_from_bytes(eml, policy=policy.default)["To"] == (
        "Ada Lovelace <ada@example.com>"
    )
    server.assert_clean_exit()


def test_server_rerenders_on_template_and_config_changes(
    server: PreviewServer, project: Path
) -> None:
    first = server.state()
    assert first["ok"] and first["error"] is None

    # A templates/ folder appearing beside issues/ overrides the built-in template.
    (project / "templates").mkdir()
    template = (BUILTIN_TEMPLATES / "newsletter.mjml.j2").read_text(encoding="utf-8")
    (project / "templates" / "newsletter.mjml.j2").write_text(
        template.replace("View this email in your browser", "Read it on the web, please"),
        encoding="utf-8",
    )
    state = server.wait_for(lambda s: "Read it on the web, please" in s.get("html", ""))
    assert state["version"] > first["version"]
    assert state["templates"][0] == "templates"

    # mailer.toml is re-read.
    _edit(project / "mailer.toml", "1 Example Street", "99 Preview Lane")
    server.wait_for(lambda s: "99 Preview Lane" in s.get("html", ""))

    # A broken mailer.toml is an error on the page, not a dead server; fixing it recovers.
    _edit(project / "mailer.toml", 'rate = "10/s"', "rate = ")
    broken = server.wait_for(lambda s: s["error"] is not None)
    assert "mailer.toml" in broken["error"]["message"] and broken["ok"] is True
    _edit(project / "mailer.toml", "rate = ", 'rate = "10/s"')
    server.wait_for(lambda s: s["error"] is None)

    # A broken template too.
    (project / "templates" / "newsletter.mjml.j2").write_text(
        template.replace("{{ issue.title }}", "{{ issue.title "), encoding="utf-8"
    )
    broken = server.wait_for(lambda s: s["error"] is not None)
    assert broken["error"]["kind"] == "TemplateError"
    (project / "templates" / "newsletter.mjml.j2").write_text(template, encoding="utf-8")
    server.wait_for(lambda s: s["error"] is None and "View this email" in s["html"])
    server.assert_clean_exit()


def test_long_poll_answers_when_the_version_moves(server: PreviewServer, project: Path) -> None:
    state = server.state()
    started = time.monotonic()
    _edit(project / "issues" / "issue-x.md", TITLE_LINE, 'title: "Long poll"')
    status, body = _get(
        f"{server.url}api/state?since={state['version']}&instance={state['instance']}"
    )
    waited = time.monotonic() - started
    assert status == 200 and json.loads(body)["issue"]["title"] == "Long poll"
    assert waited < 10
    server.assert_clean_exit()


# -- the page in a browser ---------------------------------------------------------------------


def _offline(page) -> list[str]:
    """Keep the page on 127.0.0.1: remote images get a placeholder, anything else is aborted."""
    remote: list[str] = []

    def handle(route) -> None:
        request = route.request
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or parts.hostname == "127.0.0.1":
            route.continue_()
            return
        remote.append(request.url)
        if request.resource_type == "image":
            route.fulfill(status=200, content_type="image/svg+xml", body=PLACEHOLDER_SVG)
        else:
            route.abort()

    page.route("**/*", handle)
    return remote


def _frame(page, pane: str):
    handle = page.locator(f"#{pane} iframe.live").element_handle()
    assert handle is not None
    frame = handle.content_frame()
    assert frame is not None
    return frame


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"preview-{name}.png"))


@needs_chromium
def test_live_preview_in_a_browser(browser, server: PreviewServer, project: Path) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    remote = _offline(page)
    page.goto(server.url)

    # Both panes show the issue: title and images, at their widths.
    for pane in ("phone", "desktop"):
        expect(page.frame_locator(f"#{pane} iframe.live").locator("body")).to_contain_text(TITLE)
    # The phone at 375 px, the desktop frame in the width left beside it (test_preview_tools).
    desktop = page.evaluate("() => document.querySelector('#desktop').clientWidth")
    assert desktop == 1280 - 2 * 20 - (375 + 24) - 28
    for pane, width in (("phone", 375), ("desktop", desktop)):
        frame = _frame(page, pane)
        assert frame.evaluate("() => window.innerWidth") == width
        frame.wait_for_function(
            f"() => document.images.length >= {IMAGES} && [...document.images].every("
            "i => i.complete && i.naturalWidth > 0 && i.src.startsWith('https://cdn-images-1.'))"
        )
    assert remote and all(urlsplit(u).hostname == "cdn-images-1.medium.com" for u in remote)
    expect(page.locator("#subject")).to_have_text(TITLE)
    expect(page.locator("#status")).to_contain_text("Live")
    expect(page.locator("#error")).to_be_hidden()
    page.wait_for_timeout(300)
    _shot(page, "email")

    # The plaintext twin.
    page.click("#tab-btn-text")
    expect(page.locator("#plaintext")).to_be_visible()
    expect(page.locator("#plaintext")).to_contain_text(TITLE)
    expect(page.locator("#phone")).to_be_hidden()
    _shot(page, "text")

    # The headers of the first subscriber's copy.
    page.click("#tab-btn-headers")
    headers = page.locator("#headers")
    for name in (
        "To",
        "From",
        "Subject",
        "Date",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "List-Id",
        "Content-Type",
    ):
        expect(headers.locator("th", has_text=name).first).to_be_visible()
    expect(headers).to_contain_text("Ada Lovelace <ada@example.com>")
    _shot(page, "headers")

    # The warnings, with where each comes from.
    page.click("#tab-btn-warnings")
    warnings = page.locator("#warnings")
    expect(warnings.locator(".warn[data-code=alt]")).to_have_count(IMAGES)
    expect(warnings).to_contain_text("issues/issue-x.md:14")
    expect(warnings).to_contain_text("link is not https: http://aidemos.cs.toronto.edu/nds/")
    expect(page.locator("#warn-count")).to_have_text(str(warnings.locator(".warn").count()))
    _shot(page, "warnings")

    # Dark mode for the email pane.
    page.click("#tab-btn-email")
    page.click("#dark-toggle")
    expect(page.locator("#dark-toggle")).to_have_attribute("aria-checked", "true")
    # The email has its own dark styles: the preview puts the frame in dark mode and they apply
    # (the card turns #161b22), rather than inverting the colours itself.
    page.wait_for_function(
        "() => { const f = document.querySelector('#desktop iframe.live');"
        " if (!f || f.style.colorScheme !== 'dark') return false;"
        " const card = f.contentDocument.querySelector('.card');"
        " return f.contentDocument.documentElement.style.backgroundColor === ''"
        " && card && getComputedStyle(card).backgroundColor === 'rgb(22, 27, 34)'; }"
    )
    page.wait_for_timeout(300)
    _shot(page, "dark")
    page.click("#dark-toggle")
    expect(page.locator("#dark-toggle")).to_have_attribute("aria-checked", "false")

    # An edit shows up by itself: no reload (the marker survives), within a second or so.
    marker = page.evaluate("() => (window.__previewMarker = Math.random())")
    issue = project / "issues" / "issue-x.md"
    _edit(issue, TITLE_LINE, 'title: "Edited while the preview runs"')
    for pane in ("phone", "desktop"):
        expect(page.frame_locator(f"#{pane} iframe.live").locator("body")).to_contain_text(
            "Edited while the preview runs", timeout=10_000
        )
    expect(page.locator("#subject")).to_have_text("Edited while the preview runs")
    assert page.evaluate("() => window.__previewMarker") == marker

    # Breaking the front matter shows the error; the last good render stays, dimmed.
    _edit(issue, 'title: "Edited while the preview runs"', 'title: "Edited while the preview')
    banner = page.locator("#error")
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("front matter is not valid YAML")
    expect(banner.locator("#error-msg")).to_contain_text("issues/issue-x.md:")
    expect(banner.locator(".ln.hit")).to_have_count(1)
    expect(page.locator("#status")).to_contain_text("Error")
    expect(page.locator("#main")).to_have_class("stale")
    expect(page.frame_locator("#phone iframe.live").locator("body")).to_contain_text(
        "Edited while the preview runs"
    )
    _shot(page, "error")

    # Fixing it brings the preview back.
    _edit(issue, 'title: "Edited while the preview', 'title: "Fixed and back"')
    expect(banner).to_be_hidden(timeout=10_000)
    for pane in ("phone", "desktop"):
        expect(page.frame_locator(f"#{pane} iframe.live").locator("body")).to_contain_text(
            "Fixed and back", timeout=10_000
        )
    expect(page.locator("#main")).not_to_have_class("stale")
    assert page.evaluate("() => window.__previewMarker") == marker
    assert js_errors == []
    context.close()

    server.assert_clean_exit()


@needs_chromium
def test_static_page_works_from_a_file(browser, project: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    written = write_static(config.load(project), "issue-x", tmp_path / "site")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    _offline(page)
    page.goto(written[0].as_uri())
    for pane in ("phone", "desktop"):
        expect(page.frame_locator(f"#{pane} iframe.live").locator("body")).to_contain_text(TITLE)
    expect(page.locator("#status")).to_contain_text("Static snapshot")
    page.click("#tab-btn-text")
    expect(page.locator("#plaintext")).to_contain_text(TITLE)
    assert js_errors == []
    context.close()
