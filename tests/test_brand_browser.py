"""The branded email in Debian's chromium: 375 and 1024 px, light and dark, images on and blocked.

The demo issue is built with a logo, the repository's accent colour and a subscribe URL, and
`mailer init`'s example as a new user gets it. Only 127.0.0.1 is reachable: "images on" points
every image at a PNG served there; "images blocked" aborts every image request, as a mail client
that blocks remote images does. The screenshots land in build/brand-*.png to be looked at.
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
    pytest.skip(f"{CHROMIUM} is not installed (make system)", allow_module_level=True)

from test_email_browser import contrast, png  # noqa: E402

from mailer.cli import main  # noqa: E402
from mailer.config import DARK_BACKGROUND  # noqa: E402
from mailer.values import readable_shade  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SCREENSHOTS = PROJECT / "build"
ACCENT = "#6d28d9"  # the repository's mailer.toml
ACCENT_DARK = readable_shade(ACCENT, DARK_BACKGROUND)
NAME = "The NLP Letter"
LOGO = (320, 80)
WIDTHS = {375: 812, 1024: 768}
VARIANTS = [
    (width, scheme, images)
    for width in WIDTHS
    for scheme in ("light", "dark")
    for images in ("on", "blocked")
]


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[str]:
    """The demo issue (with a logo) and init's example, built by the CLI, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("brand")
    demo = root / "demo"
    (demo / "issues").mkdir(parents=True)
    shutil.copy(PROJECT / "issues" / "sampling.md", demo / "issues")
    toml = (PROJECT / "mailer.toml").read_text(encoding="utf-8")
    extra = f'name = "{NAME}"\nlogo = "https://newsletter.example.org/logo.png"\n'
    (demo / "mailer.toml").write_text(toml + extra, encoding="utf-8")
    runner = CliRunner()
    env = {k: None for k in os.environ if k.startswith("MAILER_")}
    cwd = os.getcwd()
    try:
        built = runner.invoke(main, ["-C", str(demo), "build", "sampling"], env=env)
        assert built.exit_code == 0 and built.stderr == "", built.output
        started = runner.invoke(
            main,
            [
                "init",
                str(root / "new"),
                "--name",
                "Field Notes",
                "--from",
                "Field Notes <hello@fieldnotes.example>",
                "--url",
                "https://news.fieldnotes.example",
            ],
            env=env,
        )
        assert started.exit_code == 0, started.output
        built = runner.invoke(
            main, ["-C", str(root / "new"), "build", "welcome-to-field-notes"], env=env
        )
        assert built.exit_code == 0 and built.stderr == "", built.output
    finally:
        os.chdir(cwd)
    served = root / "served"
    served.mkdir()
    (served / "logo.png").write_bytes(png(*LOGO))
    (served / "placeholder.png").write_bytes(png(1200, 600))
    for name, html in [
        ("demo", demo / "build" / "sampling" / "email.html"),
        ("new", root / "new" / "build" / "welcome-to-field-notes" / "email.html"),
    ]:
        text = html.read_text(encoding="utf-8")
        (served / f"{name}-blocked.html").write_text(text, encoding="utf-8")
        local = re.sub(
            r'(<img\b[^>]*\bsrc=")https://newsletter\.example\.org/logo\.png', r"\1/logo.png", text
        )
        local = re.sub(r'(<img\b[^>]*\bsrc=")https?://[^"]+', r"\1/placeholder.png", local)
        (served / f"{name}-on.html").write_text(local, encoding="utf-8")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def open_page(browser):
    contexts = []

    def make(url: str, width: int, scheme: str):
        context = browser.new_context(
            viewport={"width": width, "height": WIDTHS[width]},
            device_scale_factor=1,
            color_scheme=scheme,
        )
        contexts.append(context)
        page = context.new_page()
        # Only the page and images on 127.0.0.1: a blocked variant's images are all remote.
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if urlsplit(route.request.url).hostname == "127.0.0.1"
                else route.abort()
            ),
        )
        page.goto(url, wait_until="load")
        return page

    yield make
    for context in contexts:
        context.close()


# What the page shows: computed colours, the background behind each element, boxes.
SEEN_JS = """() => {
  const css = (el, prop) => getComputedStyle(el)[prop];
  const behind = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const bg = css(node, 'backgroundColor');
      if (bg !== 'rgba(0, 0, 0, 0)' && bg !== 'transparent') return bg;
    }
    return 'rgb(255, 255, 255)';
  };
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; };
  const logo = document.querySelector('.brand img');
  const link = document.querySelector('.content a');
  const label = document.querySelector('.button a');
  const images = Array.from(document.querySelectorAll('.content img'));
  return {
    scroll: document.documentElement.scrollWidth,
    masthead: box(document.querySelector('.masthead')),
    brand: document.querySelector('.brand').innerText.trim(),
    dateline: document.querySelector('.dateline').innerText.trim(),
    masthead_before_title: !!(document.querySelector('.masthead').compareDocumentPosition(
      document.querySelector('h1')) & Node.DOCUMENT_POSITION_FOLLOWING),
    logo: logo && {alt: logo.alt, loaded: logo.naturalWidth, colour: css(logo, 'color'),
                   behind: behind(logo), box: box(logo)},
    link: {colour: css(link, 'color'), behind: behind(link)},
    button: label && {colour: css(label, 'color'), behind: behind(label)},
    images: images.map((img) => ({alt: img.alt, loaded: img.naturalWidth,
      colour: css(img, 'color'), behind: behind(img), box: box(img)})),
  };
}"""


def decoded(data: bytes) -> tuple[int, int, list[bytes]]:
    """A screenshot PNG (8-bit RGB or RGBA, not interlaced) -> width, height, RGB rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, width, height, channels = 8, b"", 0, 0, 3
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
            channels = 4 if colour_type == 6 else 3
        elif kind == b"IDAT":
            idat += body
        at += length + 12
    raw, stride, rows, previous = (
        zlib.decompress(idat),
        width * channels,
        [],
        bytes(width * channels),
    )
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 255
        previous = bytes(line)
        rows.append(bytes(v for i, v in enumerate(line) if i % channels < 3))
    return width, height, rows


def ink(element, background: str) -> int:
    """How many pixels of `element` differ clearly from `background`: something is drawn."""
    _, _, rows = decoded(element.screenshot())
    bg = [int(v) for v in re.findall(r"\d+", background)[:3]]
    return sum(
        1
        for row in rows
        for i in range(0, len(row), 3)
        if max(abs(row[i + c] - bg[c]) for c in range(3)) > 60
    )


@pytest.mark.parametrize(("width", "scheme", "images"), VARIANTS)
def test_the_branded_demo(site, open_page, width, scheme, images):
    page = open_page(f"{site}/demo-{images}.html", width, scheme)
    seen = page.evaluate(SEEN_JS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"brand-{width}-{scheme}-images-{images}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[1:4] == b"PNG"

    assert seen["scroll"] <= width
    assert seen["masthead"]["height"] > 60 and seen["masthead_before_title"]
    assert seen["dateline"] == "ISSUE #3 · MARCH 12, 2026"
    logo = seen["logo"]
    assert logo["alt"] == NAME
    if images == "on":
        assert logo["loaded"] == LOGO[0] and logo["box"]["height"] >= 40
    else:
        assert logo["loaded"] == 0
        # The name still shows where the logo would be: readable, and really drawn.
        assert contrast(logo["colour"], logo["behind"]) >= 4.5, logo
        assert logo["box"]["width"] > 60, logo
        assert ink(page.locator(".brand img"), logo["behind"]) > 40
        for number, image in enumerate(seen["images"]):
            assert image["loaded"] == 0 and image["alt"]
            assert contrast(image["colour"], image["behind"]) >= 4.5, image
            assert ink(page.locator(".content img").nth(number), image["behind"]) > 40

    accent = ACCENT if scheme == "light" else ACCENT_DARK
    assert seen["link"]["colour"] == rgb(accent)
    assert contrast(seen["link"]["colour"], seen["link"]["behind"]) >= 4.5
    assert contrast(seen["button"]["colour"], seen["button"]["behind"]) >= 4.5
    assert seen["button"]["behind"] == rgb(accent)


@pytest.mark.parametrize("width", WIDTHS)
def test_init_example_at_both_widths(site, open_page, width):
    for scheme in ("light", "dark"):
        page = open_page(f"{site}/new-blocked.html", width, scheme)
        seen = page.evaluate(SEEN_JS)
        page.screenshot(path=str(SCREENSHOTS / f"brand-init-{width}-{scheme}.png"), full_page=True)
        assert seen["scroll"] <= width
        assert seen["brand"] == "Field Notes" and seen["logo"] is None
        assert seen["dateline"].startswith("ISSUE #1 · ")
        assert seen["button"] is None  # init leaves subscribe_url commented out
        assert contrast(seen["link"]["colour"], seen["link"]["behind"]) >= 4.5
