"""The newsletter's look: the branding settings, the masthead, the accent colour, the demo."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import html as lxml_html

from mailer import config
from mailer.cli import main
from mailer.compose.brand import date_text, number_text
from mailer.compose.issue import read
from mailer.compose.render import render
from mailer.config import DARK_BACKGROUND, LIGHT_BACKGROUND
from mailer.errors import ConfigError
from mailer.values import contrast, readable_shade, text_on

PROJECT = Path(__file__).resolve().parents[1]
DEMO = PROJECT / "issues" / "sampling.md"
LOGO = "https://newsletter.example.org/logo.png"


def project(root: Path, toml_extra: str = "") -> Path:
    """The repository's mailer.toml (with `toml_extra` after it) and the demo issue."""
    (root / "issues").mkdir(parents=True)
    shutil.copy(DEMO, root / "issues" / DEMO.name)
    toml = (PROJECT / "mailer.toml").read_text(encoding="utf-8")
    (root / "mailer.toml").write_text(toml + toml_extra, encoding="utf-8")
    return root


def without(toml: str, *keys: str) -> str:
    """mailer.toml with some of its settings left out."""
    return "".join(
        line for line in toml.splitlines(keepends=True) if line.split(" = ")[0] not in keys
    )


def mailer(*args: str, **environ: str) -> tuple[int, str, str]:
    """A command, with only the MAILER_* variables given."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MAILER_")}
    result = CliRunner().invoke(main, list(args), env={**env, **environ})
    return result.exit_code, result.stdout, result.stderr


def issue_file(tmp_path: Path, front: str, lang: str = "en") -> Path:
    path = tmp_path / "post.md"
    path.write_text(f"---\ntitle: T\nlang: {lang}\n{front}---\n\nText.\n", encoding="utf-8")
    return path


# -- settings -------------------------------------------------------------------------------------


def test_branding_settings_from_the_file_and_the_environment(tmp_path):
    root = project(tmp_path, f'name = "The NLP Letter"\nlogo = "{LOGO}"\n')
    settings = config.load(root, environ={"MAILER_ACCENT_COLOR": "#0F766E"})
    assert (settings.name, settings.logo) == ("The NLP Letter", LOGO)
    assert settings.accent_color == "#0F766E"
    assert settings.subscribe_url == "https://newsletter.example.org/subscribe"
    assert settings.list_name == "The NLP Letter"  # the footer, List-Id's phrase
    assert settings.sources["accent_color"] == "environment"


def test_the_name_defaults_to_the_from_display_name(tmp_path):
    settings = config.load(project(tmp_path), environ={})
    assert settings.name == ""
    assert settings.list_name == "NLP Newsletter"


@pytest.mark.parametrize(
    "logo", ["http://newsletter.example.org/logo.png", "logo.png", "https://", "data:image/png,x"]
)
def test_the_logo_must_be_an_https_url(tmp_path, logo):
    root = project(tmp_path)
    with pytest.raises(ConfigError) as err:
        config.load(root, environ={"MAILER_LOGO": logo})
    assert str(err.value) == f"logo must be an https:// image URL, got {logo!r}"
    code, out, err_text = mailer("-C", str(root), "config", MAILER_LOGO=logo)
    assert (code, out) == (2, "")
    assert err_text == f"Error: logo must be an https:// image URL, got {logo!r}\n"


@pytest.mark.parametrize("colour", ["blue", "#abc", "#0b62d", "0b62d6", "#0b62dg", "#0b62d6ff"])
def test_the_accent_colour_must_be_hex(tmp_path, colour):
    root = project(tmp_path)
    toml = root / "mailer.toml"
    toml.write_text(
        without(toml.read_text(encoding="utf-8"), "accent_color") + f'accent_color = "{colour}"\n',
        encoding="utf-8",
    )
    code, out, err_text = mailer("-C", str(root), "build", "sampling")
    assert (code, out) == (2, "")
    assert err_text == f"Error: accent_color must be a colour like #1a7f64, got {colour!r}\n"


def test_the_subscribe_url_must_be_a_url(tmp_path):
    with pytest.raises(ConfigError, match="^subscribe_url must be an http"):
        config.load(project(tmp_path), environ={"MAILER_SUBSCRIBE_URL": "example.org/join"})


def test_a_hard_to_read_accent_is_a_warning(tmp_path):
    root = project(tmp_path)
    settings = config.load(root, environ={"MAILER_ACCENT_COLOR": "#f5a623"})
    assert settings.warnings == (
        "accent_color #f5a623 on #ffffff has contrast 2.0:1, WCAG AA needs 4.5:1: links will be"
        " hard to read (the nearest readable shade is #a56a08)",
    )
    assert contrast("#a56a08", LIGHT_BACKGROUND) >= 4.5
    assert config.load(root, environ={}).warnings == ()  # #6d28d9: 7.1:1


@pytest.mark.parametrize(
    "colour", ["#6d28d9", "#0b62d6", "#0f766e", "#e11d48", "#000000", "#111111", "#f5a623"]
)
def test_dark_mode_shows_a_readable_shade(colour):
    dark = readable_shade(colour, DARK_BACKGROUND)
    assert contrast(dark, DARK_BACKGROUND) >= 4.5
    if contrast(colour, DARK_BACKGROUND) >= 4.5:
        assert dark == colour  # readable as it is: kept
    # A button's label reads on both.
    for background in (colour, dark):
        assert contrast(text_on(background), background) >= 4.5


def test_no_colour_reads_on_both_cards():
    """Why dark mode gets its own shade: AA on white and AA on the dark card exclude each other."""
    greys = [f"#{v:02x}{v:02x}{v:02x}" for v in range(256)]
    both = [
        c
        for c in greys
        if contrast(c, LIGHT_BACKGROUND) >= 4.5 and contrast(c, DARK_BACKGROUND) >= 4.5
    ]
    assert both == []


# -- the dateline ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("front", "lang", "number", "date"),
    [
        ("number: 3\ndate: 2026-03-12\n", "en", "Issue #3", "March 12, 2026"),
        ("issue: 12\ndate: 2026-03-12\n", "en-GB", "Issue #12", "12 March 2026"),
        ("number: 3\ndate: 2026-03-12\n", "de", "#3", "2026-03-12"),
        ('number: "Vol. 2, No. 3"\ndate: "Spring 2026"\n', "en", "Vol. 2, No. 3", "Spring 2026"),
        ("date: 2026-03-12 09:30:00\n", "en", "", "March 12, 2026"),
        ('date: "2026-03-12 09:30:00 +0100"\n', "pt-BR", "", "2026-03-12"),
        ("send_at: 2026-12-01 09:00 Europe/Berlin\n", "en", "", "December 1, 2026"),
    ],
)
def test_dateline(tmp_path, front, lang, number, date):
    issue = read(issue_file(tmp_path, front, lang))
    assert (number_text(issue), date_text(issue)) == (number, date)


def test_without_a_date_the_dateline_says_today(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILER_NOW", "2026-05-04T12:00:00+00:00")
    assert date_text(read(issue_file(tmp_path, ""))) == "May 4, 2026"


# -- the rendered email ---------------------------------------------------------------------------


def rendered(root: Path, environ: dict[str, str] | None = None):
    settings = config.load(root, environ=environ or {})
    email = render(read(root / "issues" / "sampling.md"), settings)
    return email, lxml_html.fromstring(email.html)


def style(element) -> str:
    return (element.get("style") or "").replace(" ", "")


def test_the_masthead(tmp_path):
    email, doc = rendered(project(tmp_path))
    (masthead,) = doc.find_class("masthead")
    assert "border-top:6pxsolid#6d28d9" in style(masthead.xpath(".//td")[0])
    (brand,) = doc.find_class("brand")
    assert brand.text_content().strip() == "NLP Newsletter"
    assert "color:#6d28d9" in style(brand.xpath("./div")[0])
    (dateline,) = doc.find_class("dateline")
    assert dateline.text_content().strip() == "ISSUE #3 · MARCH 12, 2026"
    # Not a heading: the title stays the first heading and the only h1.
    assert masthead.xpath(".//h1|.//h2|.//h3") == []
    order = [e for e in doc.iter() if e is masthead or e.tag == "h1"]
    assert [e.tag for e in order] == ["div", "h1"]
    text = email.text.split("\n\n")
    assert text[1] == "NLP Newsletter · Issue #3 · March 12, 2026"


def test_the_logo_stands_in_for_the_name(tmp_path):
    _, doc = rendered(project(tmp_path, f'name = "The NLP Letter"\nlogo = "{LOGO}"\n'))
    (brand,) = doc.find_class("brand")
    (logo,) = brand.iter("img")
    assert (logo.get("src"), logo.get("alt"), logo.get("height")) == (LOGO, "The NLP Letter", "40")
    assert brand.text_content().strip() == ""  # the alt text alone says the name
    # With images blocked the alt text takes the image's font, like the name would.
    assert "font-size:20px" in style(logo) and "font-weight:700" in style(logo)


def test_the_accent_on_links_rules_and_buttons(tmp_path):
    _, doc = rendered(project(tmp_path))
    (content,) = doc.find_class("content")
    assert {style(a) for a in content.iter("a")} == {"color:#6d28d9;text-decoration:underline"}
    assert "border-left:4pxsolid#6d28d9" in style(next(content.iter("blockquote")))
    (button,) = doc.find_class("button")
    label = next(button.iter("a"))
    assert label.text_content().strip() == "Subscribe to NLP Newsletter"
    assert label.get("href") == "https://newsletter.example.org/subscribe"
    assert "background:#6d28d9" in style(label) and "color:#ffffff" in style(label)
    media, outlook_com = [s.text_content() for s in doc.iter("style")][-2:]
    assert "prefers-color-scheme: dark" in media and "[data-ogsc]" in outlook_com
    dark = readable_shade("#6d28d9", DARK_BACKGROUND)
    for selectors, declaration in (
        (".content a", f"color: {dark}"),
        (".masthead td", f"border-top-color: {dark}"),
        (".brand div, .brand a", f"color: {dark}"),
        (".button a", f"color: {text_on(dark)}"),
        (".content blockquote", f"color: #9198a1 !important; border-color: {dark}"),
    ):
        assert f"{selectors} {{ {declaration} !important; }}" in media
        prefixed = ", ".join(f"[data-ogsc] {s}" for s in selectors.split(", "))
        assert f"{prefixed} {{ {declaration} !important; }}" in outlook_com
    # Images blocked: alt text dark on the image's own white box, in either mode.
    for img in content.iter("img"):
        assert re.search(r"background:#f{3}(f{3})?;", style(img)) and "color:#1f2328" in style(img)
    for css in (media, outlook_com):
        assert ".content img { background: #ffffff !important; color: #1f2328 !important;" in css


def test_without_an_accent_colour_links_are_blue(tmp_path):
    root = project(tmp_path)
    toml = root / "mailer.toml"
    toml.write_text(without(toml.read_text(encoding="utf-8"), "accent_color"), encoding="utf-8")
    _, doc = rendered(root)
    (content,) = doc.find_class("content")
    assert "color:#0b62d6" in style(next(content.iter("a")))
    css = "\n".join(s.text_content() for s in doc.iter("style"))
    assert css.count(".content a { color: #2a81f4 !important; }") == 2


def test_no_subscribe_button_without_a_subscribe_url(tmp_path):
    root = project(tmp_path)
    toml = root / "mailer.toml"
    toml.write_text(without(toml.read_text(encoding="utf-8"), "subscribe_url"), encoding="utf-8")
    email, doc = rendered(root)
    assert doc.find_class("button") == [] and doc.find_class("cta") == []
    assert "Subscribe:" not in email.text
    with_url, _ = rendered(project(tmp_path / "with"))
    assert with_url.text.splitlines()[-2] == (
        "Forwarded to you? Subscribe: https://newsletter.example.org/subscribe"
    )


# -- the demo issue -------------------------------------------------------------------------------


def test_the_demo_issue_builds_without_a_warning(tmp_path):
    root = project(tmp_path)
    code, out, err = mailer("-C", str(root), "build", "sampling")
    assert code == 0, out + err
    assert err == ""  # not one warning
    assert out.endswith("lint: nothing to fix for 13 email clients\n")
    email, doc = rendered(root)
    assert email.notices == ()
    (content,) = doc.find_class("content")
    # What it shows off: headings, a table, code in a named language, an image, a quote.
    assert [len(content.xpath(f".//{tag}")) > 0 for tag in ("h2", "table", "pre", "img")] == [
        True
    ] * 4
    assert content.xpath(".//pre/code")[0].get("class") == "language-python"
    assert content.xpath(".//img")[0].get("alt")
    assert content.xpath(".//blockquote")


def test_make_demo_opens_with_the_demo_issue():
    makefile = (PROJECT / "Makefile").read_text(encoding="utf-8")
    demo = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert demo is not None
    commands = demo.group(1).splitlines()
    assert "send --dry-run sampling" in commands[0]
    repair = re.search(r"^demo-repair:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert repair is not None and "issue-2" in repair.group(1)
