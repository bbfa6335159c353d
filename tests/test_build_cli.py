"""`mailer build`: through click's CliRunner, and once through the installed script."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import CORPUS
from lxml import html as lxml_html

from mailer import config
from mailer.compose import images
from mailer.compose.issue import read
from mailer.compose.render import render

pytestmark = pytest.mark.slow  # a whole `mailer` command, issue rendered, in every test

PROJECT = Path(__file__).resolve().parents[1]
SEED = PROJECT / "issues" / "issue-2.md"
SCRIPT = Path(sys.executable).with_name("mailer")  # the script beside this Python
ABSOLUTE = re.compile(r"^(https?://|mailto:|#)")

BAD_FRONT_MATTER = "---\ntitle: Broken\nexcerpt: one: two\n---\n\nBody.\n"  # line 3


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A user's project: issues/issue-2.md and mailer.toml. `-C` chdirs: undo it afterwards."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MAILER_")]:
        monkeypatch.delenv(key)
    root = tmp_path / "project"
    (root / "issues").mkdir(parents=True)
    shutil.copy(SEED, root / "issues" / "issue-2.md")
    shutil.copy(PROJECT / "mailer.toml", root / "mailer.toml")
    return root


def summary(output: str) -> dict[str, str]:
    """The `  key   value` lines of the build report."""
    return dict(re.findall(r"^  (\w+) +(.*)$", output, re.M))


def urls(html: str) -> list[str]:
    doc = lxml_html.fromstring(html)
    return [a.get("href") for a in doc.iter("a")] + [i.get("src") for i in doc.iter("img")]


# -- the seed -------------------------------------------------------------------------------------


def test_build_seed(project, mailer_cli):
    result = mailer_cli(project, "build", "issue-2")
    assert result.exit_code == 0, result.output
    out = project / "build" / "issue-2"
    html = (out / "email.html").read_text(encoding="utf-8")
    text = (out / "email.txt").read_text(encoding="utf-8")
    issue = read(project / "issues" / "issue-2.md")
    email = render(issue, config.load(project, environ={}))

    assert re.match(
        rf"built {re.escape(str(out / 'email.html'))} and email.txt in \d+ ms\n", result.stdout
    )
    report = summary(result.stdout)
    assert report["subject"] == issue.subject
    assert report["preheader"] == issue.preheader
    assert re.fullmatch(r"\d+\.\d KB", report["html"])
    assert float(report["html"].split()[0]) == pytest.approx(email.html_bytes / 1024, abs=0.1)
    assert report["words"] == str(email.words)
    assert report["links"] == "57"
    assert report["images"] == "7"
    # mailer lint's one-line summary: what `mailer lint issue-2` prints, counted (7 images
    # without alt text; 16 vague link texts and one http:// link). The template's design and
    # partial support wait for `mailer lint --verbose`.
    assert "lint: 7 errors, 17 warnings — mailer lint issue-2 to see them\n" in result.stdout

    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert "warning: repaired 54 characters damaged by UTF-8 read as Mac Roman" in warnings
    assert sum("image without alt text" in w for w in warnings) == 7
    assert "warning: line 14: image without alt text: " in "\n".join(warnings)
    assert "warning: line 239: link is not https: http://aidemos.cs.toronto.edu/nds/" in warnings
    assert len(warnings) == 9
    assert "warning:" not in result.stdout  # the warnings themselves go to stderr

    # the files are what one example reader gets: slots filled, nothing relative
    assert "%%mailer:" not in html and "%%mailer:" not in text
    assert [u for u in urls(html) if not ABSOLUTE.match(u or "")] == []
    assert "https://newsletter.example.org/unsubscribe" in html
    assert re.search(r"^Unsubscribe: https://newsletter\.example\.org/unsubscribe\S*$", text, re.M)
    assert "reader@example.org" in text
    assert "👋" in html and "👋" in text
    assert "üëã" not in html + text


def test_build_twice_overwrites(project, mailer_cli):
    assert mailer_cli(project, "build", "issue-2").exit_code == 0
    target = project / "build" / "issue-2" / "email.txt"
    target.write_text("stale", encoding="utf-8")
    assert mailer_cli(project, "build", "issue-2.md").exit_code == 0
    assert target.read_text(encoding="utf-8").startswith("NLP Newsletter #2")


def test_build_out_folder(project, mailer_cli):
    result = mailer_cli(project, "build", "issue-2", "--out", str(project / "elsewhere"))
    assert result.exit_code == 0, result.output
    assert (project / "elsewhere" / "email.html").is_file()
    assert not (project / "build").exists()


# -- every corpus file, by path, never copied into the project ------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_build_corpus_file_by_path(project, path, mailer_cli):
    result = mailer_cli(project, "build", str(path))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    out = project / "build" / path.stem
    html = (out / "email.html").read_text(encoding="utf-8")
    text = (out / "email.txt").read_text(encoding="utf-8")
    issue = read(path)
    report = summary(result.stdout)
    assert report["subject"] == issue.subject
    assert report["links"] == str(len(issue.links))
    assert report["images"] == str(len(issue.images))
    assert "mojibake" not in result.stderr and "repaired" not in result.stderr
    assert [u for u in urls(html) if not ABSOLUTE.match(u or "")] == []
    assert "%%mailer:" not in html + text
    assert not list((project / "issues").glob("nlp-*"))  # nothing copied in


def test_build_relative_path(project, mailer_cli):
    drafts = project / "drafts"
    drafts.mkdir()
    (drafts / "x.md").write_text(
        "---\ntitle: A draft\n---\n\nHello there.\n\nSee [this](https://example.org).\n",
        encoding="utf-8",
    )
    result = mailer_cli(project, "build", "drafts/x.md")
    assert result.exit_code == 0, result.output
    assert summary(result.stdout)["subject"] == "A draft"
    assert summary(result.stdout)["preheader"] == "Hello there."
    text = (project / "build" / "x" / "email.txt").read_text(encoding="utf-8")
    assert "See this [1]." in text
    assert "[1] https://example.org" in text


@pytest.mark.parametrize(
    ("front", "slug"),
    [
        ("title: Café news", "cafe"),
        ("title: 你好", "hello-zh"),
        ("title: نشرة\nlang: ar", "ar"),
    ],
    ids=["latin", "chinese", "arabic-rtl"],
)
def test_build_short_non_ascii_subject(project, front, slug, mailer_cli):
    (project / "issues" / f"{slug}.md").write_text(
        f"---\n{front}\n---\n\nBody.\n", encoding="utf-8"
    )
    result = mailer_cli(project, "build", slug)
    assert result.exit_code == 0, result.output
    html = (project / "build" / slug / "email.html").read_text(encoding="utf-8")
    if slug == "ar":
        assert '<html lang="ar" dir="rtl"' in html


def test_build_non_ascii_from_name(project, mailer_cli):
    toml = (project / "mailer.toml").read_text(encoding="utf-8")
    toml = toml.replace('from = "NLP Newsletter <', 'from = "Café NLP <')
    (project / "mailer.toml").write_text(toml, encoding="utf-8")
    result = mailer_cli(project, "build", "issue-2")
    assert result.exit_code == 0, result.output


# -- errors: one clean message and an exit code ------------------------------------------------


def test_missing_issue(project, mailer_cli):
    result = mailer_cli(project, "build", "issue-99")
    assert result.exit_code == 65
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[0] == "Error: no issue 'issue-99'"
    assert all(line.startswith("  hint: ") for line in lines[1:])
    assert "issue-2" in result.output  # the hint lists what exists
    assert not (project / "build").exists()


def test_broken_front_matter_names_the_line(project, mailer_cli):
    (project / "issues" / "bad.md").write_text(BAD_FRONT_MATTER, encoding="utf-8")
    result = mailer_cli(project, "build", "bad")
    assert result.exit_code == 65
    assert "Traceback" not in result.output
    first = result.output.strip().splitlines()[0]
    assert first.startswith("Error: ")
    assert "bad.md:3:" in first
    assert "YAML" in first


def test_not_utf8_names_the_line(project, mailer_cli):
    (project / "issues" / "latin.md").write_bytes(b"---\ntitle: T\n---\n\nCaf\xe9\n")
    result = mailer_cli(project, "build", "latin")
    assert result.exit_code == 65
    assert "latin.md:5:" in result.output
    assert "Traceback" not in result.output


def test_naive_send_at(project, mailer_cli):
    (project / "issues" / "late.md").write_text(
        "---\ntitle: T\nsend_at: 2026-12-01 09:00\n---\n\nBody.\n", encoding="utf-8"
    )
    result = mailer_cli(project, "build", "late")
    assert result.exit_code == 65
    assert "send_at" in result.output


def test_bad_config_exits_2(project, mailer_cli):
    (project / "mailer.toml").write_text('smtp_port = "x"\n', encoding="utf-8")
    result = mailer_cli(project, "build", "issue-2")
    assert result.exit_code == 2
    assert "smtp_port" in result.output
    assert "Traceback" not in result.output


# -- templates through the command line -----------------------------------------------------------

MARKED = (
    "<mjml><mj-body><mj-section><mj-column><mj-text>CLI-TEMPLATE-MARKER {{ content }}"
    ' <a href="{{ unsubscribe_url }}">unsubscribe</a></mj-text></mj-column></mj-section>'
    "</mj-body></mjml>\n"
)


def test_templates_flag(project, tmp_path, mailer_cli):
    folder = tmp_path / "my-templates"
    folder.mkdir()
    (folder / "newsletter.mjml.j2").write_text(MARKED, encoding="utf-8")
    result = mailer_cli(project, "--templates", str(folder), "build", "issue-2")
    assert result.exit_code == 0, result.output
    html = (project / "build" / "issue-2" / "email.html").read_text(encoding="utf-8")
    assert "CLI-TEMPLATE-MARKER" in html
    # the text template falls back to the built-in one
    text = (project / "build" / "issue-2" / "email.txt").read_text(encoding="utf-8")
    assert text.startswith("NLP Newsletter #2")


def test_templates_flag_strict_undefined(project, tmp_path, mailer_cli):
    folder = tmp_path / "bad-templates"
    folder.mkdir()
    (folder / "newsletter.mjml.j2").write_text(
        MARKED.replace("{{ content }}", "{{ nope }}"), encoding="utf-8"
    )
    result = mailer_cli(project, "--templates", str(folder), "build", "issue-2")
    assert result.exit_code == 65
    assert "nope" in result.output
    assert "Traceback" not in result.output


def test_templates_flag_unknown_mjml_tag(project, tmp_path, mailer_cli):
    folder = tmp_path / "bad-mjml"
    folder.mkdir()
    (folder / "newsletter.mjml.j2").write_text(
        MARKED.replace("<mj-text>", "<mj-wat /><mj-text>"), encoding="utf-8"
    )
    result = mailer_cli(project, "--templates", str(folder), "build", "issue-2")
    assert result.exit_code == 65
    assert "mj-wat" in result.output
    assert "Traceback" not in result.output


def test_project_templates_folder(project, mailer_cli):
    (project / "templates").mkdir()
    (project / "templates" / "newsletter.mjml.j2").write_text(MARKED, encoding="utf-8")
    assert mailer_cli(project, "build", "issue-2").exit_code == 0
    html = (project / "build" / "issue-2" / "email.html").read_text(encoding="utf-8")
    assert "CLI-TEMPLATE-MARKER" in html


# -- no network -----------------------------------------------------------------------------------


def test_build_needs_no_network(project, monkeypatch, mailer_cli):
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network during a build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = mailer_cli(project, "build", "issue-2")
    assert result.exit_code == 0, result.output
    result = mailer_cli(project, "build", str(CORPUS[0]))
    assert result.exit_code == 0, result.output
    assert attempts == []


# -- the installed script --------------------------------------------------------------------------


def run_script(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return subprocess.run(
        [str(SCRIPT), "-C", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not SCRIPT.exists(), reason=f"{SCRIPT} is not installed")
def test_installed_script_exit_codes(project):
    (project / "issues" / "bad.md").write_text(BAD_FRONT_MATTER, encoding="utf-8")

    ok = run_script(project, "build", "issue-2")
    assert ok.returncode == 0, ok.stderr
    assert (project / "build" / "issue-2" / "email.html").is_file()
    assert "links      57" in ok.stdout

    missing = run_script(project, "build", "issue-99")
    assert missing.returncode == 65
    assert missing.stderr.startswith("Error: no issue 'issue-99'")
    assert "Traceback" not in missing.stderr

    broken = run_script(project, "build", "bad")
    assert broken.returncode == 65
    assert "bad.md:3:" in broken.stderr
    assert "Traceback" not in broken.stderr

    (project / "mailer.toml").write_text('smtp_security = "tls"\n', encoding="utf-8")
    bad_config = run_script(project, "build", "issue-2")
    assert bad_config.returncode == 2
    assert "smtp_security" in bad_config.stderr


# -- --fetch-images: real image bytes from a server on 127.0.0.1 ----------------------------------


def png(width: int, height: int) -> bytes:
    """A real (striped, RGB) PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + b"\x3b\x6e\xa8" * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int, padding: int = 0) -> bytes:
    """A baseline JPEG's markers: JFIF, `padding` bytes of APP1 (EXIF-like), then the SOF0."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b""
    while padding > 0:
        n = min(padding, 65000)
        app1 += b"\xff\xe1" + struct.pack(">H", n + 2) + b"\x00" * n
        padding -= n
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8" + app0 + app1 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00" + bytes(6) + b";"


class ImageServer:
    """Files by path, served on 127.0.0.1 with Range support; every request's Range recorded."""

    def __init__(self, files: dict[str, tuple[str, bytes]], *, ranges: bool = True) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                kind, body = server.files[self.path]
                match = re.fullmatch(r"bytes=0-(\d+)", self.headers.get("Range") or "")
                if match and ranges and self.path != "/no-range.png":
                    part = body[: int(match.group(1)) + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(part) - 1}/{len(body)}")
                else:
                    part = body
                    self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                # the client may read what it needs and hang up
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self) -> list[str]:
        return sorted(path for path, _ in self.requests)


BIG_NOISE = bytes(range(256)) * 4096  # 1 MB after the PNG's header: far more than 64 KB
IMAGE_FILES = {
    "/big.png": ("image/png", png(2400, 1200)),
    "/badge.png": ("image/png", png(32, 32)),
    "/photo.jpg": ("image/jpeg", jpeg(800, 600)),
    "/anim.gif": ("image/gif", gif(300, 150)),
    "/page.html": ("text/html; charset=utf-8", b"<!doctype html><p>not an image</p>"),
    "/late-size.jpg": ("image/jpeg", jpeg(640, 480, padding=70_000)),  # SOF after 70 KB
    "/no-range.png": ("image/png", png(120, 60)[:-12] + BIG_NOISE),  # 200, the whole 1 MB
}

SIZED_ISSUE = """---
title: Sizes
---

Hello, readers.

![a big diagram]({url}/big.png)

![a badge]({url}/badge.png) ![a photo]({url}/photo.jpg)

<p><img src="{url}/anim.gif" alt="an animation" width="1000"></p>

![gone]({url}/missing.png)

![a page]({url}/page.html)

![late]({url}/late-size.jpg)

![no range]({url}/no-range.png)
"""


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    with ImageServer(IMAGE_FILES) as server:
        yield server


def sized_project(project: Path, server: ImageServer) -> Path:
    (project / "issues" / "sizes.md").write_text(
        SIZED_ISSUE.format(url=server.url), encoding="utf-8"
    )
    return project


def boxes(html: str) -> dict[str, tuple[str | None, str | None]]:
    """img src (path only) -> (width, height) attributes."""
    doc = lxml_html.fromstring(html)
    return {
        re.sub(r"^https?://[^/]+", "", i.get("src")): (i.get("width"), i.get("height"))
        for i in doc.iter("img")
    }


def test_fetch_images_sizes_caches_and_builds(project, image_server, mailer_cli):
    sized_project(project, image_server)
    result = mailer_cli(project, "build", "sizes", "--fetch-images")
    assert result.exit_code == 0, result.output
    today = date.today().isoformat()
    url = image_server.url

    # the cache: sizes for the images, a dated marker for each failure
    cache = json.loads((project / ".mailer" / "images.json").read_text(encoding="utf-8"))
    assert cache == {
        f"{url}/big.png": [2400, 1200],
        f"{url}/badge.png": [32, 32],
        f"{url}/photo.jpg": [800, 600],
        f"{url}/anim.gif": [300, 150],
        f"{url}/no-range.png": [120, 60],
        f"{url}/missing.png": {"failed": today, "reason": "HTTP 404"},
        f"{url}/page.html": {"failed": today, "reason": "not an image (text/html)"},
        f"{url}/late-size.jpg": {
            "failed": today,
            "reason": "no size in the first 64 KB (image/jpeg)",
        },
    }
    # only the first 64 KB was asked for, once per image
    assert image_server.paths() == sorted(p for p in [*IMAGE_FILES, "/missing.png"])
    assert {r for _, r in image_server.requests} == {"bytes=0-65535"}

    # the report: one line for the fetch, one warning per failure, and the build as always
    lines = result.stdout.splitlines()
    assert lines[0] == "images: 5 sized, 3 failed (cache .mailer/images.json)"
    assert lines[1].startswith(f"built {project / 'build' / 'sizes' / 'email.html'} and email.txt")
    warnings = [w for w in result.stderr.splitlines() if "image size unknown" in w]
    assert warnings == [
        f"warning: image size unknown: {url}/missing.png: HTTP 404",
        f"warning: image size unknown: {url}/page.html: not an image (text/html)",
        f"warning: image size unknown: {url}/late-size.jpg: "
        "no size in the first 64 KB (image/jpeg)",
    ]

    # the built HTML: capped at the column, the badge its own size, heights only when known
    html = (project / "build" / "sizes" / "email.html").read_text(encoding="utf-8")
    assert boxes(html) == {
        "/big.png": ("552", "276"),
        "/badge.png": ("32", "32"),
        "/photo.jpg": ("552", "414"),
        "/anim.gif": ("552", "276"),  # the author's 1000, capped; its shape from the cache
        "/missing.png": ("552", None),
        "/page.html": ("552", None),
        "/late-size.jpg": ("552", None),
        "/no-range.png": ("120", "60"),
    }
    badge = lxml_html.fromstring(html).xpath("//img[contains(@src, 'badge')]")[0]
    assert "max-width:32px" in badge.get("style").replace(" ", "")


def test_fetch_images_again_asks_only_for_what_is_unknown(project, image_server, mailer_cli):
    sized_project(project, image_server)
    assert mailer_cli(project, "build", "sizes", "--fetch-images").exit_code == 0
    image_server.requests.clear()

    # the same day: sizes are known, failures are not asked for again (but still reported)
    again = mailer_cli(project, "build", "sizes", "--fetch-images")
    assert again.exit_code == 0, again.output
    assert image_server.requests == []
    assert again.stdout.splitlines()[0] == (
        "images: 0 sized, 3 failed, 5 already known (cache .mailer/images.json)"
    )
    assert (
        f"warning: image size unknown: {image_server.url}/missing.png: HTTP 404 "
        f"(on {date.today().isoformat()}; tried again from tomorrow)"
    ) in again.stderr.splitlines()

    # a failure from yesterday is tried again; now the file is there
    cache_path = project / ".mailer" / "images.json"
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    cache[f"{image_server.url}/missing.png"]["failed"] = yesterday
    cache_path.write_text(json.dumps(cache), encoding="utf-8")
    image_server.files["/missing.png"] = ("image/png", png(64, 16))
    third = mailer_cli(project, "build", "sizes", "--fetch-images")
    assert third.exit_code == 0, third.output
    assert image_server.paths() == ["/missing.png"]
    assert third.stdout.splitlines()[0] == (
        "images: 1 sized, 2 failed, 5 already known (cache .mailer/images.json)"
    )
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    assert cache[f"{image_server.url}/missing.png"] == [64, 16]
    html = (project / "build" / "sizes" / "email.html").read_text(encoding="utf-8")
    assert boxes(html)["/missing.png"] == ("64", "16")


def test_build_without_the_flag_reads_the_cache_offline(
    project, image_server, monkeypatch, mailer_cli
):
    sized_project(project, image_server)
    assert mailer_cli(project, "build", "sizes", "--fetch-images").exit_code == 0
    image_server.requests.clear()

    def refuse(*args, **kwargs):
        raise OSError("no network during a build")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    result = mailer_cli(project, "build", "sizes")
    assert result.exit_code == 0, result.output
    assert not result.stdout.startswith("images:")
    assert image_server.requests == []
    html = (project / "build" / "sizes" / "email.html").read_text(encoding="utf-8")
    assert boxes(html)["/badge.png"] == ("32", "32")


def test_fetch_images_with_the_server_gone_still_builds(project, mailer_cli):
    with ImageServer({}) as server:
        url = server.url
    (project / "issues" / "gone.md").write_text(
        "---\ntitle: Gone\n---\n\nHello.\n\n"
        f"![x]({url}/x.png)\n\n![y](data:image/png;base64,AAAA)\n",
        encoding="utf-8",
    )
    result = mailer_cli(project, "build", "gone", "--fetch-images")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "images: 0 sized, 1 failed, 1 not http(s) (cache .mailer/images.json)"
    )
    assert f"warning: image size unknown: {url}/x.png: Connection refused" in result.stderr
    assert (project / "build" / "gone" / "email.html").is_file()


def test_probe_times_out(tmp_path):
    """A server that never answers: a failure after the timeout, not a hung build."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.png"
        settings = config.load(tmp_path, environ={})
        fetched = images.fetch_sizes(settings, [url], timeout=0.5)
    finally:
        listener.close()
    assert fetched.failed == {url: "timed out after 0.5 s"}
    cache = json.loads((tmp_path / ".mailer" / "images.json").read_text(encoding="utf-8"))
    assert cache == {url: {"failed": date.today().isoformat(), "reason": "timed out after 0.5 s"}}


def test_fetch_images_is_documented_in_help(project, mailer_cli):
    result = mailer_cli(project, "build", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--fetch-images" in text
    assert "first 64 KB" in text
    assert "only network access `build` ever makes" in text
    assert "images.json in the state directory" in text
