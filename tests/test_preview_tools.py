"""The preview's tools: the lint's findings beside the warnings, frames sized to the window, the
warnings badge.

The browser tests drive Debian's chromium as tests/test_preview.py does.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import SECRET
from test_preview import IMAGES, SUBSCRIBERS, TITLE, _offline, needs_chromium

from mailer import config
from mailer.compose import load
from mailer.compose.render import render
from mailer.lint import OriginKind, lint
from mailer.preview import write_static

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
