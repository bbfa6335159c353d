"""Proof, on the rendered HTML, that the email meets what each client needs (issue 11).

Outlook desktop (Word): pixel image widths, font-family on every block it does not inherit
into, margins not padding, mso-line-height-rule. Apple Mail / iOS: metas, dark mode.
Outlook.com: [data-ogsc] rules in a style element of their own. Gmail: under 102 KB, no
block it would drop whole. Screen readers: one h1, the title; lang and dir.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CORPUS, SEED_FIXTURE, ZH
from lxml import html as lxml_html

from mailer import config
from mailer.compose.issue import read
from mailer.compose.render import LATIN_FONTS, font_stack, render

ALL = [SEED_FIXTURE, *CORPUS]
COLUMN = 552  # 600px minus the mj-text padding
CJK_FONTS = (
    "PingFang",
    "Hiragino",
    "YaHei",
    "JhengHei",
    "Noto Sans CJK",
    "Yu Gothic",
    "Meiryo",
    "Malgun",
    "Apple SD Gothic",
)
FILLER = "\u034f\u200c\u00a0" * 99 + "\u034f\u200c"  # mjml trims the last no-break space


def declarations(element) -> dict[str, str]:
    """An element's inline style as {property: value}, spaces around ':' and ';' dropped."""
    out = {}
    for decl in (element.get("style") or "").split(";"):
        if ":" in decl:
            name, value = decl.split(":", 1)
            out[name.strip().lower()] = value.strip()
    return out


def parsed(email):
    doc = lxml_html.fromstring(email.html)
    (content,) = doc.find_class("content")
    return doc, content


def styles(doc) -> list[str]:
    return [s.text_content() for s in doc.iter("style")]


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> config.Settings:
    root = tmp_path_factory.mktemp("clients")
    (root / "issues").mkdir()
    (root / "mailer.toml").write_text(
        (Path(__file__).resolve().parents[1] / "mailer.toml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    return config.load(root, environ={})


def issue_file(tmp_path: Path, text: str, name: str = "post.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- every real issue -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
class TestEveryIssue:
    def test_images_have_pixel_widths_within_the_column(self, path, built):
        issue, email = built(path)
        _, content = parsed(email)
        found = list(content.iter("img"))
        assert len(found) == len(issue.images) > 0
        for img in found:
            width = img.get("width")
            assert width and width.isdigit() and 0 < int(width) <= COLUMN, img.get("src")
            style = declarations(img)
            assert style["width"] == "100%"
            assert style["max-width"] == f"{width}px"
            assert style["height"] == "auto"
            assert style["background"] in ("#fff", "#ffffff")  # readable in dark mode
            assert img.get("height") is None or img.get("height").isdigit()

    def test_the_title_is_the_h1(self, path, built):
        issue, email = built(path)
        doc, content = parsed(email)
        h1 = doc.xpath("//h1")
        outside = [h for h in h1 if h not in content.xpath(".//h1")]
        assert [" ".join(h.text_content().split()) for h in outside] == [issue.title]
        assert h1[0] is outside[0]  # the first heading a screen reader meets
        style = declarations(outside[0])
        assert style["font-size"] == "28px" and style["font-weight"] == "700"
        assert style["line-height"] == "35px" and style["margin"] == "0"
        assert style["font-family"].startswith("-apple-system")

    def test_the_title_is_the_only_h1(self, path, built):
        _, email = built(path)
        doc, content = parsed(email)
        assert content.xpath(".//h1") == []  # body headings start at h2
        assert len(doc.xpath("//h1")) == 1

    def test_body_headings_are_styled(self, path, built):
        _, email = built(path)
        _, content = parsed(email)
        sizes = {"h2": "22px", "h3": "18px", "h4": "16px"}
        headings = content.xpath(".//h1 | .//h2 | .//h3 | .//h4")
        assert headings
        for h in headings:
            style = declarations(h)
            assert style["font-size"] == sizes[h.tag]
            assert style["line-height"].endswith("px")
            assert style["font-family"].startswith("-apple-system")

    def test_no_bold_italic_font_size_hack(self, path, built):
        _, email = built(path)
        _, content = parsed(email)
        emphasis = content.xpath(".//strong | .//em | .//b | .//i")
        assert [e for e in emphasis if "font-size" in declarations(e)] == []

    def test_preheader_filler(self, path, built):
        issue, email = built(path)
        doc, _ = parsed(email)
        (hidden,) = [d for d in doc.iter("div") if declarations(d).get("display") == "none"]
        assert hidden.text_content().strip(" \n") == issue.preheader + FILLER
        assert declarations(hidden)["mso-hide"] == "all"

    def test_metas(self, path, built):
        _, email = built(path)
        doc, _ = parsed(email)
        metas = {m.get("name"): m.get("content") for m in doc.iter("meta") if m.get("name")}
        assert metas == {
            "viewport": "width=device-width, initial-scale=1",
            "x-apple-disable-message-reformatting": None,
            "format-detection": "telephone=no,date=no,address=no,email=no,url=no",
            "color-scheme": "light dark",
            "supported-color-schemes": "light dark",
        }

    def test_dark_mode_rules(self, path, built):
        _, email = built(path)
        doc, _ = parsed(email)
        css = styles(doc)
        (dark,) = [s for s in css if "prefers-color-scheme: dark" in s]
        assert ":root { color-scheme: light dark; supported-color-schemes: light dark; }" in dark
        assert "[data-ogsc]" not in dark  # Gmail would drop the whole block over it
        for rule in (
            "body { background: #0d1117 !important;",
            ".card, .card table { background: #161b22 !important;",
            # mailer.toml's accent_color #6d28d9, lightened to read on the dark card
            ".content a { color: #9969e4 !important; }",
            ".content code { background: #2d333b !important;",
            ".content th, .content td { border-color: #3d444d !important; }",
            # alt text, when images are blocked, dark on the image's white box
            ".content img { background: #ffffff !important; color: #1f2328 !important; }",
        ):
            assert rule in dark
        (outlook_com,) = [s for s in css if "[data-ogsc]" in s]
        assert "@media" not in outlook_com
        assert "[data-ogsc] .content a { color: #9969e4 !important; }" in outlook_com
        assert "[data-ogsb] .card, [data-ogsb] .card table {" in outlook_com
        # the classes those rules need survived the inliner
        assert doc.find_class("page") and len(doc.find_class("card")) == 3  # masthead too
        assert doc.find_class("footer") and doc.find_class("browser") and doc.find_class("title")

    def test_line_heights_are_exact_pixels_for_outlook(self, path, built):
        _, email = built(path)
        doc, _ = parsed(email)
        with_line_height = [e for e in doc.iter() if "line-height" in (e.get("style") or "")]
        assert len(with_line_height) > 10
        for element in with_line_height:
            style = element.get("style").replace(" ", "")
            assert "mso-line-height-rule:exactly;line-height:" in style, element.tag
            value = declarations(element)["line-height"]
            assert re.fullmatch(r"\d+(px|%)", value), (element.tag, value)  # never unitless

    def test_blocks_name_their_font(self, path, built):
        _, email = built(path)
        _, content = parsed(email)
        blocks = content.xpath(
            ".//h1|.//h2|.//h3|.//h4|.//li|.//th|.//td|.//pre|.//blockquote|.//code"
        )
        assert blocks
        for element in blocks:
            assert "font-family" in declarations(element), element.tag

    def test_lists_and_quotes_indent_by_margin(self, path, built):
        issue, email = built(path)
        _, content = parsed(email)
        start = "right" if issue.dir == "rtl" else "left"
        for element in content.xpath(".//ul | .//ol"):
            style = declarations(element)
            assert style["padding"] == "0"
            assert style["margin"] == ("0 24px 16px 0" if start == "right" else "0 0 16px 24px")

    def test_tables_code_and_footer(self, path, built):
        _, email = built(path)
        doc, content = parsed(email)
        for cell in content.xpath(".//th | .//td"):
            assert declarations(cell)["word-break"] == "normal"
        for code in content.xpath(".//pre/code"):
            assert declarations(code)["font-size"] == "13px"
        self.assert_footer(doc)

    @staticmethod
    def assert_footer(doc) -> None:
        for name in ("footer", "browser"):
            (cell,) = doc.find_class(name)
            (text,) = cell.xpath("./div")
            assert declarations(text)["font-size"] == "14px"
            assert declarations(text)["line-height"] == "24px"
            links = cell.xpath(".//a")
            assert links
            for link in links:  # a 24px tap target each
                assert declarations(link)["display"] == "inline-block"
                assert declarations(link)["line-height"] == "24px"

    def test_lang_and_dir(self, path, built):
        issue, email = built(path)
        doc, _ = parsed(email)
        assert (doc.get("lang"), doc.get("dir")) == (issue.lang, issue.dir)


# -- fonts by language ------------------------------------------------------------------------


def text_fonts(email) -> set[str]:
    """Every font-family written on the page's text (code's monospace stack aside)."""
    doc, _ = parsed(email)
    return {
        declarations(e)["font-family"]
        for e in doc.iter()
        if "font-family" in declarations(e) and "monospace" not in declarations(e)["font-family"]
    }


def test_the_english_seed_names_no_cjk_font(built):
    _, email = built(SEED_FIXTURE)
    fonts = text_fonts(email)
    assert fonts  # the mj-text divs and the blocks
    for family in fonts:
        assert family.replace('"', "'") == f"{LATIN_FONTS}, sans-serif"
        assert not [f for f in CJK_FONTS if f in family]


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("zh", "'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', 'Noto Sans CJK SC'"),
        ("zh-Hans", "'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', 'Noto Sans CJK SC'"),
        ("zh-TW", "'PingFang TC', 'Microsoft JhengHei', 'Noto Sans CJK TC'"),
        ("zh-Hant", "'PingFang TC', 'Microsoft JhengHei', 'Noto Sans CJK TC'"),
        (
            "ja",
            "'Hiragino Sans', 'Hiragino Kaku Gothic ProN', 'Yu Gothic', Meiryo, 'Noto Sans CJK JP'",
        ),
        ("ko", "'Apple SD Gothic Neo', 'Malgun Gothic', 'Noto Sans CJK KR'"),
        ("ar", "'Geeza Pro', Tahoma, 'Noto Sans Arabic'"),
        ("he", "'Arial Hebrew', 'Noto Sans Hebrew'"),
        ("hi", "'Kohinoor Devanagari', 'Nirmala UI', Mangal, 'Noto Sans Devanagari'"),
        ("ru", None),
        ("el", None),
        ("pt-BR", None),
    ],
)
def test_font_stack_per_language(tmp_path, settings, lang, expected):
    stack = f"{LATIN_FONTS}, {expected}, sans-serif" if expected else f"{LATIN_FONTS}, sans-serif"
    assert font_stack(lang) == stack
    email = render(
        read(issue_file(tmp_path, f"---\ntitle: T\nlang: {lang}\n---\n\nText.\n")), settings
    )
    assert {f.replace('"', "'") for f in text_fonts(email)} == {stack}


def test_the_zh_fixture_with_its_language_gets_chinese_fonts(tmp_path, settings):
    source = ZH.read_text(encoding="utf-8").replace("layout: post\n", "layout: post\nlang: zh\n", 1)
    email = render(read(issue_file(tmp_path, source, ZH.name)), settings)
    for family in text_fonts(email):
        assert "'PingFang SC'" in family.replace('"', "'")
        assert family.endswith("sans-serif")


def test_the_zh_fixture_as_it_is_gets_chinese_fonts(built):
    """No lang in its front matter: language detection must say zh."""
    _, email = built(ZH)
    for family in text_fonts(email):
        assert "PingFang SC" in family


# -- every element an issue can hold ------------------------------------------------------------

SAMPLER = """---
title: Everything
---

Intro with `inline` code.

## A section

### A subsection

#### A minor one

| Parameters | Description |
|------------|-------------|
| lr | the learning rate |

```
pre text
```

> Quoted **text**.
>
> - a quoted item

- one
- two

1. first
"""


@pytest.mark.slow
def test_sampler_meets_outlook(tmp_path, settings):
    email = render(read(issue_file(tmp_path, SAMPLER)), settings)
    _, content = parsed(email)

    def style(xpath: str) -> dict[str, str]:
        found = content.xpath(xpath)
        assert found, xpath
        return declarations(found[0])

    for tag, size, line in [("h2", "22px", "28px"), ("h3", "18px", "24px"), ("h4", "16px", "22px")]:
        assert (style(f".//{tag}")["font-size"], style(f".//{tag}")["line-height"]) == (size, line)
    assert style(".//th")["word-break"] == "normal" and style(".//td")["word-break"] == "normal"
    assert style(".//pre")["font-size"] == "13px" and style(".//pre/code")["font-size"] == "13px"
    assert style(".//p/code")["font-size"] == "14px"
    assert style(".//pre")["line-height"] == "19px"
    quote = style(".//blockquote")
    assert quote["padding"] == "4px 0" and quote["margin"] == "0 0 16px"
    assert style(".//blockquote/p")["margin"] == "0 0 8px 16px"
    assert style(".//blockquote/ul")["margin"] == "0 0 8px 40px"
    for xpath in (".//li", ".//th", ".//td", ".//blockquote", ".//h2", ".//h3", ".//h4"):
        assert style(xpath)["font-family"].startswith("-apple-system"), xpath
    assert "monospace" in style(".//pre")["font-family"]
