"""The preview's tools: the lint's findings beside the warnings, frames sized to the window, the
warnings badge, and "send a test to me", received by the real SMTP server on 127.0.0.1.

The browser tests drive Debian's chromium as tests/test_preview.py does.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SECRET, smtp_env
from smtp_server import SMTPServer
from test_preview import IMAGES, SUBSCRIBERS, TITLE, PreviewServer, _env, _offline, needs_chromium

from mailer import config
from mailer.compose import load
from mailer.compose.render import render
from mailer.lint import OriginKind, lint
from mailer.preview import write_static
from mailer.preview.app import PreviewApp
from mailer.preview.testcopy import TestCopies
from mailer.preview.watcher import Preview

pytestmark = pytest.mark.slow  # real `mailer preview` server processes

REPO = Path(__file__).resolve().parents[1]
ME = "me@example.org"
PHONE_FRAME = 375 + 24  # the screen and the phone's bezel
GAP, PADDING = 28, 20


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues" / "issue-x.md")
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    (root / "subscribers.csv").write_text(SUBSCRIBERS, encoding="utf-8")
    return root


def _state_of(page_file: Path) -> dict:
    page = page_file.read_text(encoding="utf-8")
    return json.loads(page.split("window.MAILER_STATE = ", 1)[1].split(";</script>", 1)[0])


def _post(
    url: str, body: bytes = b"{}", headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# -- the lint's findings ----------------------------------------------------------------------


def test_the_lints_findings_about_the_issue_are_listed(project: Path, tmp_path: Path) -> None:
    settings = config.load(project, environ={"MAILER_SECRET": SECRET})
    state = _state_of(write_static(settings, "issue-x", tmp_path / "site")[0])
    rows = [w for w in state["warnings"] if w["level"] == "lint"]
    notices = [w for w in state["warnings"] if w["level"] != "lint"]

    # Exactly the lint's findings whose origin is the issue, each (code, line) once, and none
    # the build already listed (an image without alt text, an http link).
    email = render(load.by_name(settings, "issue-x"), settings)
    noticed = {(n.code, n.line) for n in email.notices if n.line}
    expected = {
        (f.code, f.origin.line)
        for f in lint(email, settings).findings
        if f.origin.kind == OriginKind.ISSUE and (f.code, f.origin.line) not in noticed
    }
    shown = {(row["code"], line) for row in rows for line in row["lines"]}
    assert shown == expected and expected
    assert len([w for w in state["warnings"] if w["code"] == "alt"]) == IMAGES
    assert all(w["level"] != "lint" for w in state["warnings"] if w["code"] in ("alt", "http"))
    # A feature some client lacks is one row, with every line that uses it.
    by_code: dict[str, list[dict]] = {}
    for row in rows:
        by_code.setdefault(row["code"], []).append(row)
    assert all(len(same) == 1 for code, same in by_code.items() if code.startswith("css-"))
    for row in rows:
        assert row["where"] == "issues/issue-x.md:" + ", ".join(map(str, row["lines"]))
        assert row["severity"] in ("error", "warning") and row["message"]
    vague = [row for row in rows if row["code"] == "vague-link" and row["line"] == 25]
    assert vague and vague[0]["source"].startswith("A recent paper from Google AI")
    assert notices[0]["level"] == "warning"  # with a secret set, nothing refuses the send


# -- the page in a browser: frames, badge, lint rows ---------------------------------------------


@needs_chromium
@pytest.mark.parametrize("size", [(1280, 900), (2000, 1100)])
def test_frames_use_the_window_and_the_badge_has_no_border(
    browser, project: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    from playwright.sync_api import expect

    settings = config.load(project, environ={"MAILER_SECRET": SECRET})
    index = write_static(settings, "issue-x", tmp_path / "site")[0]
    lint_rows = len([w for w in _state_of(index)["warnings"] if w["level"] == "lint"])
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    _offline(page)
    page.goto(index.as_uri())
    expect(page.frame_locator("#desktop iframe.live").locator("body")).to_contain_text(TITLE)

    boxes = page.evaluate(
        """() => Object.fromEntries(['phone', 'desktop'].map(id => {
            const r = document.getElementById(id).getBoundingClientRect();
            return [id, {width: r.width, bottom: r.bottom,
                         inner: document.querySelector('#' + id + ' iframe.live')
                                  .contentWindow.innerWidth}];
        }))"""
    )
    desktop = width - 2 * PADDING - PHONE_FRAME - GAP  # all the width beside the phone
    assert boxes["phone"]["inner"] == 375
    assert boxes["desktop"]["inner"] == desktop
    expect(page.locator("#desktop-px")).to_have_text(f"{desktop} px")
    for pane in ("phone", "desktop"):  # and all the height down to the window's bottom
        assert height - 60 < boxes[pane]["bottom"] <= height

    badge = page.locator("#warn-count")
    expect(badge).to_have_class("badge badge-warn")
    look = badge.evaluate(
        "b => { const s = getComputedStyle(b); return [s.borderTopWidth, s.borderLeftWidth,"
        " s.borderRightWidth, s.borderBottomWidth, s.boxShadow]; }"
    )
    assert look == ["0px", "0px", "0px", "0px", "none"]

    page.click("#tab-btn-warnings")
    warnings = page.locator("#warnings")
    expect(warnings.locator(".warn.lint")).to_have_count(lint_rows)
    expect(warnings).to_contain_text("Email clients and accessibility (mailer lint)")
    expect(badge).to_have_text(str(warnings.locator(".warn").count()))
    page.screenshot(path=str(REPO / "build" / f"preview-tools-{width}.png"))
    context.close()


# -- send a test to me ----------------------------------------------------------------------------


@pytest.fixture
def sending(project: Path, smtp_server: SMTPServer) -> Iterator[PreviewServer]:
    running = PreviewServer(project, "--to", ME, env=smtp_env(smtp_server))
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


@needs_chromium
def test_the_button_sends_one_test_copy(
    browser, sending: PreviewServer, smtp_server: SMTPServer
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _offline(page)
    page.goto(sending.url)
    button = page.locator("#send-test")
    expect(button).to_be_visible()
    expect(button).to_have_text(f"Send a test to {ME}")
    button.click()
    result = page.locator("#send-result")
    expect(result).to_contain_text(f"Test copy sent to {ME}", timeout=30_000)
    expect(result).to_have_class("send-result ok")
    context.close()

    [received] = smtp_server.received
    assert received.rcpt_tos == [ME]
    message = received.message()
    assert message["To"] == ME and message["Subject"] == TITLE
    sending.assert_clean_exit()


def test_only_the_preview_page_on_this_machine_can_ask(
    sending: PreviewServer, smtp_server: SMTPServer
) -> None:
    state = sending.state()
    token = state["send_test"]["token"]
    assert state["send_test"]["to"] == ME
    url = sending.url + "api/send-test"
    good = {"Content-Type": "application/json", "X-Mailer-Token": token}
    refused = [
        ({"Content-Type": "application/json"}, 403),  # no token: a form, another site
        ({**good, "X-Mailer-Token": token[:-1] + "x"}, 403),
        ({**good, "Origin": "http://attacker.example"}, 403),
        ({**good, "Sec-Fetch-Site": "cross-site"}, 403),
        ({**good, "Host": f"attacker.example:{sending.port}"}, 421),  # DNS rebinding
        ({**good, "Content-Type": "text/plain"}, 415),
    ]
    for headers, status in refused:
        assert _post(url, headers=headers)[0] == status, headers
    assert _post(url, body=b"", headers=good, method="GET")[0] == 405
    assert smtp_server.received == []

    status, body = _post(url, headers={**good, "Origin": sending.url.rstrip("/")})
    assert status == 200 and json.loads(body) == {
        "ok": True,
        "message": f"Test copy sent to {ME}: 250 accepted",
    }
    assert [r.rcpt_tos for r in smtp_server.received] == [[ME]]
    sending.assert_clean_exit()


def test_another_machine_cannot_ask(project: Path) -> None:
    preview = Preview(config.load(project, environ={}), "issue-x")
    copies = TestCopies(preview, ME)
    app = PreviewApp(preview, host_check=False, max_waiting=1, copies=copies)
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/send-test",
        "REMOTE_ADDR": "192.0.2.7",  # bound to all interfaces (--host 0.0.0.0), asked from afar
        "HTTP_HOST": "127.0.0.1:8025",
        "CONTENT_TYPE": "application/json",
        "HTTP_X_MAILER_TOKEN": copies.token,
        "wsgi.input": io.BytesIO(b"{}"),
        "CONTENT_LENGTH": "2",
        "wsgi.errors": sys.stderr,
    }
    body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["403 Forbidden"] and b"only when asked from this machine" in body


def test_without_to_there_is_no_button_and_nothing_to_post(
    project: Path, smtp_server: SMTPServer
) -> None:
    running = PreviewServer(project, env=smtp_env(smtp_server))
    try:
        assert "send_test" not in running.state()
        status, _ = _post(running.url + "api/send-test", headers={"X-Mailer-Token": "x"})
        assert status == 405
        assert smtp_server.received == []
        running.assert_clean_exit()
    finally:
        if running.proc.poll() is None:
            running.proc.kill()


@pytest.mark.parametrize(
    ("extra", "said"),
    [(["--to", "not-an-address"], "--to"), (["--to", ME, "--out", "site"], "--out")],
)
def test_a_bad_to_is_a_usage_error(project: Path, extra: list[str], said: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "-C", str(project), "preview", "issue-x", *extra],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
