"""The built email in a real browser (Debian's chromium, headless): phone and desktop widths.

Only 127.0.0.1 is reachable: every other request is aborted, so remote images never load.
The `local-images` variant points the images at a 1200x600 placeholder served on 127.0.0.1,
so their sizes are real when we measure whether they fit; the `big-images` variant at a
2400x1200 PNG, to see that the width attributes keep Outlook-like rendering in the column.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is not installed (make system / tests/install-system.sh)",
        allow_module_level=True,
    )


from conftest import CORPUS  # noqa: E402

from mailer.cli import main  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SEED = PROJECT / "issues" / "issue-2.md"
SCREENSHOTS = PROJECT / "build"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1024, "height": 768}
PLACEHOLDER = (1200, 600)
BIG = (2400, 1200)
# Outlook desktop ignores max-width on images: this is what it would do to the page.
NO_MAX_WIDTH = "img { max-width: none !important; }"


def png(width: int, height: int) -> bytes:
    """A striped RGB PNG, made by hand (no image library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(
        b"\x00" + (b"\x9f\xc5\xe8" if (y // 40) % 2 else b"\x3b\x6e\xa8") * width
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[str]:
    """Build the seed and the corpus with the CLI, serve build/ on 127.0.0.1."""
    root = tmp_path_factory.mktemp("browser") / "project"
    (root / "issues").mkdir(parents=True)
    shutil.copy(SEED, root / "issues" / "issue-2.md")
    shutil.copy(PROJECT / "mailer.toml", root / "mailer.toml")
    cwd = os.getcwd()
    try:
        for name in ["issue-2", *map(str, CORPUS)]:
            result = CliRunner().invoke(main, ["-C", str(root), "build", name])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    build = root / "build"
    (build / "placeholder.png").write_bytes(png(*PLACEHOLDER))
    (build / "big.png").write_bytes(png(*BIG))
    for html in build.glob("*/email.html"):
        text = html.read_text(encoding="utf-8")
        local = re.sub(r'(<img\b[^>]*\bsrc=")https?://[^"]+', r"\1/placeholder.png", text)
        (html.parent / "email-local-images.html").write_text(local, encoding="utf-8")
        big = re.sub(r'(<img\b[^>]*\bsrc=")https?://[^"]+', r"\1/big.png", text)
        (html.parent / "email-big-images.html").write_text(big, encoding="utf-8")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(build)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Visit:
    """A page of one width, with every request off 127.0.0.1 aborted and recorded."""

    def __init__(self, browser, viewport: dict[str, int], color_scheme: str = "light") -> None:
        self.context = browser.new_context(
            viewport=viewport, device_scale_factor=1, color_scheme=color_scheme
        )
        self.page = self.context.new_page()
        self.aborted: list[str] = []
        self.allowed: list[str] = []
        self.page.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            self.allowed.append(url)
            route.continue_()
        else:
            self.aborted.append(url)
            route.abort()

    def open(self, url: str) -> Visit:
        self.page.goto(url, wait_until="load")
        return self

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser):
    opened: list[Visit] = []

    def make(url: str, viewport: dict[str, int], color_scheme: str = "light") -> Visit:
        v = Visit(browser, viewport, color_scheme)
        opened.append(v)
        return v.open(url)

    yield make
    for v in opened:
        v.close()


COLUMN_JS = """() => {
  const content = document.querySelector('.content');
  const column = content.closest('div[style*="max-width:600px"]');
  const box = (el) => { const r = el.getBoundingClientRect();
                        return {left: r.left, right: r.right, width: r.width}; };
  return {column: box(column), content: box(content)};
}"""

IMAGES_JS = """() => Array.from(document.images).map((img) => {
  const r = img.getBoundingClientRect();
  return {src: img.src, left: r.left, right: r.right, width: r.width,
          natural: img.naturalWidth};
})"""

SLUGS = ["issue-2", *(p.stem for p in CORPUS)]


# -- phone ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page_name", ["email.html", "email-local-images.html"])
@pytest.mark.parametrize("slug", SLUGS)
def test_no_horizontal_scrolling_at_375(site, visit, slug, page_name):
    v = visit(f"{site}/{slug}/{page_name}", PHONE)
    width = v.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375
    body = v.page.evaluate("() => document.body.scrollWidth")
    assert body <= 375


@pytest.mark.parametrize("slug", SLUGS)
def test_images_fit_at_375(site, visit, slug):
    v = visit(f"{site}/{slug}/email-local-images.html", PHONE)
    images = v.page.evaluate(IMAGES_JS)
    assert images
    for image in images:
        assert image["natural"] == PLACEHOLDER[0], image  # the placeholder did load
        assert image["left"] >= 0, image
        assert image["right"] <= 375, image
        assert image["width"] > 250, image  # scaled down to the column, not to nothing


def test_column_fills_the_phone(site, visit):
    v = visit(f"{site}/issue-2/email-local-images.html", PHONE)
    box = v.page.evaluate(COLUMN_JS)
    assert box["column"]["width"] == 375
    assert box["content"]["width"] == 375
    size = v.page.evaluate("() => getComputedStyle(document.querySelector('.content p')).fontSize")
    assert size == "16px"


# -- desktop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", SLUGS)
def test_column_is_600_at_1024(site, visit, slug):
    v = visit(f"{site}/{slug}/email-local-images.html", DESKTOP)
    box = v.page.evaluate(COLUMN_JS)
    assert box["column"]["width"] == 600
    assert box["column"]["left"] == (1024 - 600) / 2  # centred
    assert box["content"]["width"] == 600
    for image in v.page.evaluate(IMAGES_JS):
        assert box["column"]["left"] <= image["left"] and image["right"] <= box["column"]["right"]
    assert v.page.evaluate("() => document.documentElement.scrollWidth") == 1024


# -- network --------------------------------------------------------------------------------


def test_only_loopback_is_requested(site, visit):
    v = visit(f"{site}/issue-2/email.html", DESKTOP)
    assert v.allowed == [f"{site}/issue-2/email.html"]
    hosts = {urlsplit(u).hostname for u in v.aborted}
    assert hosts == {"cdn-images-1.medium.com"}  # the seed's images, and nothing else
    assert len(set(v.aborted)) == 7


# -- screenshots ----------------------------------------------------------------------------


def test_screenshots(site, visit):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for viewport, name in [(PHONE, "email-375.png"), (DESKTOP, "email-1024.png")]:
        v = visit(f"{site}/issue-2/email-local-images.html", viewport)
        target = SCREENSHOTS / name
        v.page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000
        assert target.read_bytes()[1:4] == b"PNG"


# -- Outlook's image sizing: max-width ignored, the width attribute rules -------------------------

WIDTHS_JS = """() => ({
  scroll: document.scrollingElement.scrollWidth,
  widest: Math.max(...Array.from(document.querySelectorAll('.page *'))
                    .map((e) => e.getBoundingClientRect().width)),
  images: Array.from(document.images).map((img) => ({
    src: img.src, width: img.getBoundingClientRect().width, natural: img.naturalWidth,
    attribute: img.getAttribute('width'), complete: img.complete})),
})"""


def open_big(visit, site: str, slug: str, viewport: dict[str, int]) -> dict:
    v = visit(f"{site}/{slug}/email-big-images.html", viewport)
    v.page.add_style_tag(content=NO_MAX_WIDTH)
    v.page.wait_for_function("() => Array.from(document.images).every((i) => i.complete)")
    return v.page.evaluate(WIDTHS_JS)


@pytest.mark.parametrize("slug", SLUGS)
def test_big_images_without_max_width_stay_in_the_column_at_1024(site, visit, slug):
    seen = open_big(visit, site, slug, DESKTOP)
    assert seen["images"]
    for image in seen["images"]:
        assert image["natural"] == BIG[0], image  # the 2400px image did load
        assert image["width"] <= 600, image
        assert image["width"] == int(image["attribute"]) == 552, image
    assert seen["scroll"] == 1024  # no sideways scrolling
    assert seen["widest"] <= 600  # nothing inside the email is wider than its column


@pytest.mark.parametrize("slug", SLUGS)
def test_big_images_without_max_width_do_not_scroll_at_375(site, visit, slug):
    seen = open_big(visit, site, slug, PHONE)
    assert seen["scroll"] <= 375
    assert seen["widest"] <= 375
    for image in seen["images"]:
        assert image["width"] <= 375 - 2 * 24, image


def test_outlook_sizes_images_by_their_width_attribute(site, visit):
    """Word: no max-width, no width:100% either: the width attribute alone sizes the image."""
    v = visit(f"{site}/issue-2/email-big-images.html", DESKTOP)
    v.page.evaluate(
        """() => Array.from(document.images).forEach((img) => {
             img.style.removeProperty('width'); img.style.removeProperty('max-width'); })"""
    )
    seen = v.page.evaluate(WIDTHS_JS)
    for image in seen["images"]:
        assert image["width"] == 552, image
    assert seen["scroll"] == 1024


def test_footer_links_are_24px_tap_targets(site, visit):
    v = visit(f"{site}/issue-2/email-local-images.html", PHONE)
    heights = v.page.evaluate(
        """() => Array.from(document.querySelectorAll('.footer a, .browser a'))
                 .map((a) => [a.textContent, a.getBoundingClientRect().height])"""
    )
    assert [text for text, _ in heights] == [
        "View this email in your browser",
        "Unsubscribe",
        "View online",
    ]
    assert all(height >= 24 for _, height in heights), heights


# -- dark mode ------------------------------------------------------------------------------------

COLOURS_JS = """() => {
  const colour = (el, prop) => getComputedStyle(el)[prop];
  return {
    body: colour(document.body, 'backgroundColor'),
    page: colour(document.querySelector('.page'), 'backgroundColor'),
    card: colour(document.querySelector('.card'), 'backgroundColor'),
    text: colour(document.querySelector('.content p'), 'color'),
    title: colour(document.querySelector('.title h1'), 'color'),
    link: colour(document.querySelector('.content a'), 'color'),
    image: colour(document.querySelector('.content img'), 'backgroundColor'),
  };
}"""


def luminance(css: str) -> float:
    """Relative luminance (WCAG) of an rgb()/rgba() colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_dark_mode(site, visit):
    v = visit(f"{site}/issue-2/email-local-images.html", DESKTOP, color_scheme="dark")
    colours = v.page.evaluate(COLOURS_JS)
    assert luminance(colours["body"]) < 0.05, colours
    assert luminance(colours["page"]) < 0.05, colours
    assert luminance(colours["card"]) < 0.05, colours
    assert luminance(colours["text"]) > 0.7, colours
    assert luminance(colours["title"]) > 0.7, colours
    assert contrast(colours["link"], colours["card"]) >= 4.5, colours
    assert colours["image"] == "rgb(255, 255, 255)"  # transparent images stay readable
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / "dark-issue-2.png"
    v.page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[1:4] == b"PNG"


def test_light_mode_is_light(site, visit):
    colours = visit(f"{site}/issue-2/email-local-images.html", DESKTOP).page.evaluate(COLOURS_JS)
    assert luminance(colours["card"]) == 1.0
    assert luminance(colours["text"]) < 0.05
