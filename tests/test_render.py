"""Issue -> Email HTML: the template, MJML, inlined CSS, and what reaches the reader."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest
from conftest import CORPUS, PT_BR, ZH
from lxml import html as lxml_html

import mailer.compose.render
from mailer import config
from mailer.compose.issue import read
from mailer.compose.render import BUILTIN_TEMPLATES, GMAIL_CLIP_BYTES, Email, compile_mjml, render
from mailer.errors import TemplateError

PROJECT = Path(__file__).resolve().parents[1]
SEED = PROJECT / "issues" / "issue-2.md"
ALL_ISSUES = [SEED, *CORPUS]
SLOT = re.compile(r"^%%mailer:\d+%%$")
ABSOLUTE = re.compile(r"^(https?://|mailto:|#)")

MINIMAL_MJML = (
    "<mjml><mj-body><mj-section><mj-column><mj-text>{body}</mj-text>"
    "</mj-column></mj-section></mj-body></mjml>\n"
)


def make_project(root: Path) -> Path:
    """A project folder like a user's: mailer.toml (the real one) and issues/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "issues").mkdir(exist_ok=True)
    shutil.copy(PROJECT / "mailer.toml", root / "mailer.toml")
    return root


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> config.Settings:
    return config.load(make_project(tmp_path_factory.mktemp("project")), environ={})


def content_of(email: Email):
    doc = lxml_html.fromstring(email.html)
    found = doc.find_class("content")
    assert len(found) == 1, "the template marks exactly one element class=content"
    return doc, found[0]


def words(text: str) -> str:
    return " ".join(text.split())


# After the preheader: combining grapheme joiner, zero-width non-joiner, no-break space, 100
# times (mjml-python strips the very last no-break space off the preview).
FILLER = ("\u034f\u200c\u00a0" * 100)[:-1]


def preview_text(doc) -> str:
    """The hidden preview div's text, filler included (only ASCII layout whitespace trimmed)."""
    hidden = [
        d for d in doc.iter("div") if "display:none" in (d.get("style") or "").replace(" ", "")
    ]
    assert len(hidden) == 1
    return hidden[0].text_content().strip(" \n")


def write(tmp_path: Path, text: str, name: str = "post.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the seed and the corpus, one by one ---------------------------------------------------------


@pytest.mark.parametrize("path", ALL_ISSUES, ids=lambda p: p.stem)
class TestEveryIssue:
    def test_no_remote_css(self, path, built):
        _, email = built(path)
        assert not re.search(r"<link\b[^>]*stylesheet", email.html, re.I)
        assert "@import" not in email.html
        assert "fonts.googleapis" not in email.html
        assert not [n for n in email.notices if n.code == "stylesheet"]

    def test_media_query_survives_inlining(self, path, built):
        _, email = built(path)
        doc, _ = content_of(email)
        styles = [s.text_content() for s in doc.iter("style")]
        assert any("@media" in s for s in styles)

    def test_every_image_has_alt(self, path, built):
        _, email = built(path)
        doc, _ = content_of(email)
        images = list(doc.iter("img"))
        assert images
        assert [i.get("src") for i in images if i.get("alt") is None] == []

    def test_every_url_is_absolute(self, path, built):
        _, email = built(path)
        doc, _ = content_of(email)
        urls = [a.get("href") for a in doc.iter("a")] + [i.get("src") for i in doc.iter("img")]
        # Per-reader values (the unsubscribe link) are slots until the send fills them.
        relative = [u for u in urls if not (ABSOLUTE.match(u or "") or SLOT.match(u or ""))]
        assert relative == []

    def test_hidden_preheader(self, path, built):
        issue, email = built(path)
        assert issue.preheader
        doc, _ = content_of(email)
        # the preheader, then the filler that keeps the template's text out of the inbox preview
        assert preview_text(doc) == issue.preheader + FILLER
        # it comes before everything a reader sees
        body_text = words(doc.body.text_content())
        assert body_text.startswith(issue.preheader)

    def test_links_in_content_match_the_markdown(self, path, built):
        issue, email = built(path)
        _, content = content_of(email)
        hrefs = [a.get("href") for a in content.iter("a") if a.get("href") is not None]
        assert len(hrefs) == len(issue.links) == email.links
        assert hrefs == issue.links  # same targets, same order (no raw <a> in these files)

    def test_images_in_content_match_the_markdown(self, path, built):
        issue, email = built(path)
        _, content = content_of(email)
        srcs = [i.get("src") for i in content.iter("img")]
        assert len(srcs) == len(issue.images) == email.images
        assert srcs == issue.images

    def test_template_links_outside_content(self, path, built):
        _, email = built(path)
        doc, content = content_of(email)
        everywhere = len(doc.xpath("//a[@href]"))
        inside = len(content.xpath(".//a[@href]"))
        # view in browser, subscribe, unsubscribe, view online (mailer.toml sets archive_url
        # and subscribe_url)
        assert everywhere - inside == 4

    def test_lang_and_dir_on_html(self, path, built):
        issue, email = built(path)
        assert f'<html lang="{issue.lang}" dir="ltr"' in email.html

    def test_nothing_unfilled_and_under_gmail_clip(self, path, built):
        _, email = built(path)
        assert email.unfilled() == []
        assert email.html_bytes < 102 * 1024
        assert not [n for n in email.notices if n.code in ("size", "unsubscribe")]
        assert {"unsubscribe_url", "email"} <= email.fields()


# -- the seed -------------------------------------------------------------------------------------


def test_seed_email_summary(built):
    issue, email = built(SEED)
    assert email.subject == issue.subject
    assert email.subject.endswith("Open-Sourcing ML,…")
    assert email.preheader.startswith("This second issue covers topics")
    assert (email.links, email.images) == (57, 7)
    assert 1500 < email.words < 3000
    assert [n.code for n in email.notices].count("mojibake") == 1


def test_seed_html_has_no_mojibake_and_no_spacers(built):
    _, email = built(SEED)
    for junk in ("‚Ä", "üë", "Ã©", "\uf8ff"):
        assert junk not in email.html
    assert "👋" in email.html
    assert "—" in email.html
    assert "\\" not in email.html


def test_seed_bold_italic_headings(built):
    """The seed's `***Heading***` paragraphs are <h3>s (25 of them), with no 18px font-size hack."""
    _, email = built(SEED)
    _, content = content_of(email)
    found = content.xpath(".//h3")
    assert len(found) == 25
    assert "On trusting model’s uncertainty" in [words(s.text_content()) for s in found]
    assert content.xpath(".//p[em/strong and count(*) = 1 and not(normalize-space(text()))]") == []
    styled = content.xpath(".//em/strong | .//strong/em | .//strong | .//em")
    assert [s.get("style") for s in styled if "font-size" in (s.get("style") or "")] == []
    h3 = content.xpath(".//h3")
    assert all("font-size:18px" in (h.get("style") or "").replace(" ", "") for h in h3)


# -- Markdown in the HTML --------------------------------------------------------------------------

SAMPLER = """---
title: Markdown sampler
---

| Model | Params |
|-------|-------:|
| BERT  | 110M   |

This is ~~old~~ new. See https://example.org/page for more, and `inline code`.

```python
print("a < b")
```

> A quote with **bold**.

- one
- two

1. first
2. second

***bold italic***

<div class="raw-block"><b>raw block</b> <img src="https://example.org/x.png"></div>

<!-- a hidden block note -->

Text <!-- an inline hidden note --> after.
"""


@pytest.fixture(scope="module")
def sampler(tmp_path_factory, settings):
    issue = read(write(tmp_path_factory.mktemp("sampler"), SAMPLER))
    email = render(issue, settings)
    return issue, email, *content_of(email)


def test_sampler_is_styled(sampler):
    _, _, _, content = sampler

    def style(xpath: str) -> str:
        found = content.xpath(xpath)
        assert found, xpath
        return (found[0].get("style") or "").replace(" ", "")

    assert "border-collapse:collapse" in style(".//table")
    assert "border:1pxsolid#d0d7de" in style(".//th")
    assert "border:1pxsolid#d0d7de" in style(".//td")
    assert "text-align:right" in style(".//th[2]")  # the column's own alignment wins
    assert "color:#6d28d9" in style(".//a[@href='https://example.org/page']")  # accent_color
    assert "font-family:Menlo" in style(".//p/code")
    assert "background:#0d1117" in style(".//pre")  # highlighted python: its own background
    assert "border-left:4pxsolid" in style(".//blockquote")
    # indents by margin: Outlook drops padding outside table cells
    assert "margin:0016px24px" in style(".//ul") and "padding:0" in style(".//ul")
    assert "margin:0016px24px" in style(".//ol") and "padding:0" in style(".//ol")
    assert "margin:008px16px" in style(".//blockquote/p")
    assert "padding:4px0" in style(".//blockquote")  # top and bottom only
    assert "margin:006px" in style(".//li")
    assert "margin:0016px" in style(".//p")
    assert "font-size" not in style(".//strong")  # the old 18px bold-italic hack is gone
    assert "font-size:13px" in style(".//pre") and "font-size:13px" in style(".//pre/code")
    assert "font-size:14px" in style(".//p/code")
    assert "word-break:normal" in style(".//th") and "word-break:normal" in style(".//td")
    assert [s.text_content() for s in content.xpath(".//s")] == ["old"]
    assert content.xpath(".//pre/code")[0].text_content() == 'print("a < b")\n'


def test_sampler_linkify_table_and_lists(sampler):
    issue, email, _, content = sampler
    assert issue.links == ["https://example.org/page"]
    assert [words(c.text_content()) for c in content.xpath(".//td")] == ["BERT", "110M"]
    assert [words(li.text_content()) for li in content.xpath(".//ol/li")] == ["first", "second"]
    assert email.links == 1


def test_raw_html_passes_through_with_alt_added(sampler):
    _, email, _, content = sampler
    block = content.find_class("raw-block")
    assert len(block) == 1
    assert block[0].xpath("./b")[0].text == "raw block"
    img = block[0].xpath(".//img")[0]
    assert img.get("alt") == ""
    assert [n.code for n in email.notices].count("alt") == 1


def test_html_comments_never_reach_the_html(sampler):
    _, email, _, content = sampler
    assert "hidden block note" not in email.html
    assert "inline hidden note" not in email.html
    assert words(content.xpath(".//p")[-1].text_content()) == "Text after."


def test_pt_br_comments_stay_out_of_the_html(built):
    source = PT_BR.read_text(encoding="utf-8")
    comments = re.findall(r"<!--(.*?)-->", source, re.S)
    assert len(comments) == 39
    outside = words(re.sub(r"<!--.*?-->", "", source, flags=re.S))
    _, email = built(PT_BR)
    doc, content = content_of(email)
    shown = words(doc.text_content())
    checked = 0
    for comment in comments:
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", comment).replace("*", "")
        fragment = " ".join(plain.split()[:6])
        if fragment in outside:
            continue
        checked += 1
        assert fragment not in shown
        assert fragment not in email.html
    assert checked == 39
    # One sentence from inside a comment, spelled out:
    sentence = "Turing Natural Language Generation (T-NLG) is a 17-billion-parameter language model"
    assert sentence in source
    assert sentence not in shown
    assert "<!--" not in lxml_html.tostring(content, encoding="unicode")


def test_zh_bare_angle_text_is_escaped_not_swallowed(built):
    _, email = built(ZH)
    bare = "Systematic Generalization: What Is Required and Can It Be Learned?[3]"
    assert f"&lt;{bare}&gt;" in email.html
    _, content = content_of(email)
    assert f"<{bare}>" in content.text_content()


# -- direction ----------------------------------------------------------------------------------

RTL = "---\ntitle: نشرة\nlang: ar\n---\n\nمرحبا بكم في النشرة.\n\n> اقتباس\n\n- بند\n"


def test_rtl_lang_sets_dir(tmp_path, settings):
    email = render(read(write(tmp_path, RTL)), settings)
    assert '<html lang="ar" dir="rtl"' in email.html


def test_rtl_content_is_not_forced_left(tmp_path, settings):
    email = render(read(write(tmp_path, RTL)), settings)
    _, content = content_of(email)
    styles = [content.get("align") or ""] + [
        (el.get("style") or "").replace(" ", "") for el in content.iter()
    ]
    assert not [s for s in styles if s == "left" or "text-align:left" in s]
    quote = content.xpath(".//blockquote")[0].get("style").replace(" ", "")
    assert "border-left" not in quote
    assert "border-right:4pxsolid" in quote
    # indents on the reading side, by margin
    assert "margin:016px8px0" in content.xpath(".//blockquote/p")[0].get("style").replace(" ", "")
    assert "margin:024px16px0" in content.xpath(".//ul")[0].get("style").replace(" ", "")


# -- titles and preheaders with markup characters -------------------------------------------------


def test_title_with_ampersand_and_angle_brackets_is_escaped_once(tmp_path, settings):
    text = "---\ntitle: 'Q&A <b>time</b>'\nexcerpt: Tom & Jerry <3\n---\n\nBody.\n"
    email = render(read(write(tmp_path, text)), settings)
    doc = lxml_html.fromstring(email.html)
    assert words(doc.findtext(".//title")) == "Q&A <b>time</b>"
    assert "&amp;amp;" not in email.html
    assert "<b>time</b>" not in email.html
    assert preview_text(doc) == "Tom & Jerry <3" + FILLER


def test_title_with_double_quotes_keeps_html_valid(tmp_path, settings):
    email = render(read(write(tmp_path, "---\ntitle: 'Say \"hi\" & bye'\n---\n\nB.\n")), settings)
    doc = lxml_html.fromstring(email.html)
    wrapper = doc.xpath("//div[@role='article']")[0]
    assert wrapper.get("aria-label") == 'Say "hi" & bye'
    assert set(wrapper.attrib) == {
        "aria-roledescription",
        "style",
        "role",
        "lang",
        "dir",
        "aria-label",
        "class",  # "page": the dark-mode rules find the page by it
    }


# -- templates ----------------------------------------------------------------------------------


def template_dir(root: Path, name: str, **files: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (folder / filename.replace("_", ".")).write_text(text, encoding="utf-8")
    return folder


def test_strict_undefined_in_html_template(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(project, "mytpl", newsletter_mjml_j2=MINIMAL_MJML.format(body="{{ nope }}"))
    settings = config.load(project, overrides={"templates": "mytpl"}, environ={})
    with pytest.raises(TemplateError) as err:
        render(read(SEED), settings)
    assert "nope" in str(err.value)
    assert "newsletter.mjml.j2" in str(err.value)
    assert err.value.exit_code == 65


def test_strict_undefined_in_text_template(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(project, "mytpl", newsletter_txt_j2="{{ content }}\n{{ meta.no_such_key }}\n")
    settings = config.load(project, overrides={"templates": "mytpl"}, environ={})
    with pytest.raises(TemplateError) as err:
        render(read(SEED), settings)
    assert "no_such_key" in str(err.value)


def test_template_syntax_error_names_file_and_line(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(project, "mytpl", newsletter_txt_j2="line one\n{% if %}\n")
    settings = config.load(project, overrides={"templates": "mytpl"}, environ={})
    with pytest.raises(TemplateError) as err:
        render(read(SEED), settings)
    assert "newsletter.txt.j2:2:" in str(err.value)


def test_meta_reaches_the_templates(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(
        project,
        "mytpl",
        newsletter_txt_j2="{{ meta.author }}|{{ meta.tags | join(',') }}|{{ meta.image.thumb }}"
        "|{{ issue.slug }}\n{{ content }}{{ unsubscribe_url }}\n",
    )
    settings = config.load(project, overrides={"templates": "mytpl"}, environ={})
    email = render(read(SEED), settings)
    assert email.text.startswith("billy_rick|nlp_newsletter|nlp_newsletter_2.png|issue-2\n")


@pytest.mark.parametrize(
    "mjml",
    [
        MINIMAL_MJML.format(body="{{ content }}").replace(
            "<mj-text>", "<mj-bogus>x</mj-bogus><mj-text>"
        ),
        "<mjml><mj-head><mj-nonsense /></mj-head><mj-body></mj-body></mjml>",
        "<html><body>not mjml at all</body></html>",
        "",
    ],
    ids=["unknown-body-tag", "unknown-head-tag", "not-mjml", "empty"],
)
def test_broken_mjml_is_a_template_error(tmp_path, mjml):
    project = make_project(tmp_path / "p")
    template_dir(project, "mytpl", newsletter_mjml_j2=mjml)
    settings = config.load(project, overrides={"templates": "mytpl"}, environ={})
    with pytest.raises(TemplateError) as err:
        render(read(SEED), settings)
    assert "MJML" in str(err.value)


def test_unknown_mjml_tag_is_named():
    with pytest.raises(TemplateError, match="mj-bogus"):
        compile_mjml(MINIMAL_MJML.format(body="x").replace("<mj-text>", "<mj-bogus/><mj-text>"))


def test_missing_template_folder(tmp_path):
    project = make_project(tmp_path / "p")
    settings = config.load(project, overrides={"templates": "nowhere"}, environ={})
    with pytest.raises(TemplateError, match="nowhere"):
        render(read(SEED), settings)


def builtin_with_marker(marker: str) -> str:
    source = (BUILTIN_TEMPLATES / "newsletter.mjml.j2").read_text(encoding="utf-8")
    changed = source.replace("{{ issue.title }}</h1>", f"{marker} {{{{ issue.title }}}}</h1>")
    assert changed != source
    return changed


def test_project_templates_override_builtin(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(project, "templates", newsletter_mjml_j2=builtin_with_marker("PROJECT-MARKER"))
    email = render(read(SEED), config.load(project, environ={}))
    assert "PROJECT-MARKER" in email.html
    # the text template was not overridden: the built-in one is used
    title = read(SEED).title
    assert " ".join(email.text.split("\n\n", 1)[0].split("\n")[:-1]) == title


def test_configured_templates_beat_project_templates(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(project, "templates", newsletter_mjml_j2=builtin_with_marker("PROJECT-MARKER"))
    template_dir(project, "custom", newsletter_mjml_j2=builtin_with_marker("CONFIGURED-MARKER"))
    email = render(read(SEED), config.load(project, overrides={"templates": "custom"}, environ={}))
    assert "CONFIGURED-MARKER" in email.html
    assert "PROJECT-MARKER" not in email.html


def test_template_without_unsubscribe_is_noticed(tmp_path):
    project = make_project(tmp_path / "p")
    template_dir(
        project,
        "mytpl",
        newsletter_mjml_j2=MINIMAL_MJML.format(body="{{ content }}"),
        newsletter_txt_j2="{{ content }}\n",
    )
    email = render(read(SEED), config.load(project, overrides={"templates": "mytpl"}, environ={}))
    assert "%%mailer:" not in email.html + email.text
    assert "unsubscribe_url" not in email.fields()
    assert [n for n in email.notices if n.code == "unsubscribe"]


# -- no network ---------------------------------------------------------------------------------


def test_render_needs_no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network access during a build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    settings = config.load(make_project(tmp_path / "p"), environ={})
    for path in (SEED, ZH):
        email = render(read(path), settings)
        assert email.html_bytes > 10_000


# -- content images: a pixel width for Outlook -------------------------------------------------

IMAGES = """---
title: Images
---

Hello.

![big](https://img.example.org/big.png)

![badge](https://img.example.org/badge.png) ![unknown](https://img.example.org/unknown.png)

![authored](https://img.example.org/photo.jpg)

<p><img src="https://img.example.org/raw-wide.png" alt="raw" width="900" height="300"></p>

<div><img alt="icon" src='https://img.example.org/icon.png?a=1&amp;b=2' width="20"
 style="border-radius: 4px; width: 20px"/></div>

<p><img alt="styled" src="https://img.example.org/styled.png" style="width:300px;height:100px"></p>
"""

SIZES = {
    "https://img.example.org/big.png": [2400, 1200],
    "https://img.example.org/badge.png": [32, 32],
    "https://img.example.org/photo.jpg": [800, 600],
    "https://img.example.org/raw-wide.png": [1800, 600],
    "https://img.example.org/icon.png?a=1&b=2": [64, 64],
    "https://img.example.org/unknown.png": {"failed": "2025-01-01", "reason": "HTTP 404"},
}


def image_boxes(email: Email) -> dict[str, tuple[str | None, str | None, str]]:
    _, content = content_of(email)
    return {
        i.get("alt"): (i.get("width"), i.get("height"), (i.get("style") or "").replace(" ", ""))
        for i in content.iter("img")
    }


@pytest.fixture
def sized_project(tmp_path):
    project = make_project(tmp_path / "p")
    (project / ".mailer").mkdir()
    (project / ".mailer" / "images.json").write_text(json.dumps(SIZES), encoding="utf-8")
    return project


def test_image_widths_from_the_cache_and_the_author(sized_project):
    settings = config.load(sized_project, environ={})
    issue = read(write(sized_project / "issues", IMAGES, "images.md"))
    # The parser change reads `![authored](...){width=200}` into the token's attrs; the render
    # takes it from there whichever parser made the tokens.
    authored = next(t for b in issue.tokens for t in (b.children or []) if t.content == "authored")
    authored.attrs["width"] = "200"
    boxes = image_boxes(render(issue, settings))
    assert {alt: (w, h) for alt, (w, h, _) in boxes.items()} == {
        "big": ("552", "276"),  # the real 2400x1200, capped at the column
        "badge": ("32", "32"),  # its own size: a badge stays small
        "unknown": ("552", None),  # a failed fetch: the column, no height
        "authored": ("200", "150"),  # the author's width, the real shape
        "raw": ("552", "184"),  # <img width=900 height=300>: capped, the cached shape kept
        "icon": ("20", "20"),  # entities in src decoded for the cache look-up
        "styled": ("300", "100"),  # a pixel width in the author's style, no cache entry
    }
    for alt, (width, _, style) in boxes.items():
        declared = dict(d.split(":", 1) for d in style.split(";") if d)
        assert declared["width"] == "100%", alt  # as mj-image: the column on a phone...
        assert declared["max-width"] == f"{width}px", alt  # ...and never wider than its width
        assert declared["height"] == "auto", alt
        assert declared["background"] == "#fff", alt  # light behind transparent images
    assert "border-radius:4px" in boxes["icon"][2]  # the author's other styles stay
    assert ";width:20px" not in boxes["icon"][2] and "height:100px" not in boxes["styled"][2]


def test_image_widths_without_a_cache_are_the_column(tmp_path):
    settings = config.load(make_project(tmp_path / "p"), environ={})
    boxes = image_boxes(render(read(write(tmp_path, IMAGES)), settings))
    assert {alt: (w, h) for alt, (w, h, _) in boxes.items()} == {
        "big": ("552", None),
        "badge": ("552", None),
        "unknown": ("552", None),
        "authored": ("552", None),
        "raw": ("552", "184"),  # the author gave both: their shape, scaled to the column
        "icon": ("20", None),
        "styled": ("300", "100"),  # the author's style gave both
    }


def test_a_broken_cache_is_no_cache(sized_project):
    (sized_project / ".mailer" / "images.json").write_text("{not json", encoding="utf-8")
    settings = config.load(sized_project, environ={})
    boxes = image_boxes(render(read(write(sized_project / "issues", IMAGES, "i.md")), settings))
    assert boxes["big"][:2] == ("552", None)


def test_rendering_leaves_the_parsed_issue_and_the_shared_parser_alone(sized_project):
    from markdown_it.renderer import RendererHTML

    from mailer.compose.markdown import parser

    settings = config.load(sized_project, environ={})
    issue = read(write(sized_project / "issues", IMAGES, "i.md"))
    before = [
        (t.type, dict(t.attrs), t.content) for b in issue.tokens for t in [b, *(b.children or [])]
    ]
    first = render(issue, settings)
    after = [
        (t.type, dict(t.attrs), t.content) for b in issue.tokens for t in [b, *(b.children or [])]
    ]
    assert after == before
    assert render(issue, settings).html == first.html
    rules = parser().renderer.rules
    assert rules["image"].__func__ is RendererHTML.image  # type: ignore[attr-defined]
    assert rules["html_block"].__func__ is RendererHTML.html_block  # type: ignore[attr-defined]
    plain = parser().render("![x](https://img.example.org/big.png)")
    assert plain == '<p><img src="https://img.example.org/big.png" alt="x" /></p>\n'


def test_fit():
    from mailer.compose.images import fit

    assert fit() == (552, None)
    assert fit(real=(2400, 1200)) == (552, 276)
    assert fit(real=(32, 32)) == (32, 32)
    assert fit("200", real=(800, 600)) == (200, 150)
    assert fit("200px") == (200, None)
    assert fit("50%") == (276, None)
    assert fit("1000", "500") == (552, 276)
    assert fit(None, "20", real=(64, 32)) == (40, 20)  # a height alone: the real shape
    assert fit(None, "20") == (552, None)  # a height alone, shape unknown: no height
    assert fit("auto", real=(100, 50)) == (100, 50)
    assert fit("0") == (552, None)


# -- the hidden preheader, Outlook's line heights ------------------------------------------------


def test_preheader_filler_and_outlook_hides_it(built):
    issue, email = built(SEED)
    assert f"{issue.preheader}{FILLER}" in email.html  # the characters, as lxml writes them
    doc = lxml_html.fromstring(email.html)
    hidden = [d for d in doc.iter("div") if "display:none" in (d.get("style") or "")]
    assert "mso-hide:all" in hidden[0].get("style")


def test_no_filler_without_a_preheader(tmp_path, settings):
    email = render(read(write(tmp_path, "---\ntitle: T\n---\n\n# Only a heading\n")), settings)
    assert email.preheader == ""
    assert "\u034f" not in email.html


def test_line_height_rule_is_added_inside_tags_only(tmp_path, settings):
    text = (
        "---\ntitle: T\n---\n\nBody.\n\n"
        '```html\n<p style="line-height:2">code</p>\n```\n\n'
        '<p style="color:red; line-height: 30px">raw</p>\n'
    )
    email = render(read(write(tmp_path, text)), settings)
    _, content = content_of(email)
    assert content.xpath(".//pre/code")[0].text_content() == '<p style="line-height:2">code</p>\n'
    raw = [p for p in content.iter("p") if p.text_content() == "raw"][0]
    assert "color:red; mso-line-height-rule:exactly;line-height:30px" in raw.get("style")


# -- Gmail's clip: minified when that brings it under ---------------------------------------------

BLOCK = (
    "- item {i} with [a link](https://example.org/{i}) and `code`\n"
    "- another item {i}\n\n| a | b |\n|---|---|\n| {i} | x |\n\n"
)
MINIFY_FOOTER = (
    '<span class="greeting" title="For {{ subscriber.name }}">{{ subscriber.name }}</span>'
)


def many(tmp_path: Path, blocks: int, name: str = "big.md", words: int = 0) -> Path:
    body = "".join(BLOCK.format(i=i) for i in range(blocks)) + "word " * words
    return write(tmp_path, f"---\ntitle: Big\nexcerpt: A big one\n---\n\n{body}\n", name)


@pytest.fixture(scope="module")
def greeting_settings(tmp_path_factory):
    """The built-in template with a per-reader value in an attribute, too."""
    project = make_project(tmp_path_factory.mktemp("big"))
    source = (BUILTIN_TEMPLATES / "newsletter.mjml.j2").read_text(encoding="utf-8")
    changed = source.replace("{{ newsletter.postal_address }}", MINIFY_FOOTER)
    assert changed != source
    template_dir(project, "templates", newsletter_mjml_j2=changed)
    return config.load(project, environ={})


@pytest.fixture(scope="module")
def just_over(tmp_path_factory, greeting_settings):
    """An issue whose HTML would be 0.5-1.5 KB over the clip unminified (sizes are linear)."""
    folder = tmp_path_factory.mktemp("sizes")
    small = render(read(many(folder, 10, "a.md")), greeting_settings).html_bytes
    large = render(read(many(folder, 40, "b.md")), greeting_settings).html_bytes
    assert large < GMAIL_CLIP_BYTES  # both measured unminified
    per_block = (large - small) / 30
    blocks = 10 + int((GMAIL_CLIP_BYTES + 1024 - small) / per_block)
    # the rest in words, 5 bytes each (one paragraph's tags: ~40 bytes)
    words = int((GMAIL_CLIP_BYTES + 1024 - small - (blocks - 10) * per_block - 40) / 5)
    expected = small + (blocks - 10) * per_block + 40 + 5 * words
    assert GMAIL_CLIP_BYTES + 512 < expected < GMAIL_CLIP_BYTES + 1536
    return read(many(folder, blocks, words=words)), expected


def test_over_the_clip_is_minified_under_it(just_over, greeting_settings, monkeypatch):
    issue, unminified = just_over
    email = render(issue, greeting_settings)
    monkeypatch.setattr(mailer.compose.render, "GMAIL_CLIP_BYTES", 10**9)
    plain = render(issue, greeting_settings)
    assert plain.html_bytes == pytest.approx(unminified, abs=64)  # the estimate was right
    assert email.html_bytes < GMAIL_CLIP_BYTES < unminified
    assert not [n for n in email.notices if n.code == "size"]
    assert email.html.startswith("<!doctype html><html ")  # minified: no layout whitespace
    # MSO conditional comments survive byte for byte (Outlook's tables live in them)
    comments = re.findall(r"<!--.*?-->", plain.html, re.S)
    assert len([c for c in comments if c.startswith("<!--[if mso")]) == 21
    assert re.findall(r"<!--.*?-->", email.html, re.S) == comments
    # the same slots, in the same order
    assert re.findall(r"%%mailer:\d+%%", email.html) == re.findall(r"%%mailer:\d+%%", plain.html)
    # slots: exactly where they were, and quoted inside attributes
    assert 'href="%%mailer:0%%"' in email.html
    assert re.search(r"""title=["']For %%mailer:\d+%%["']""", email.html)
    # the dark-mode rules stay rules
    assert "@media (prefers-color-scheme: dark)" in email.html or (
        "@media (prefers-color-scheme:dark)" in email.html
    )
    assert "[data-ogsc] .content a" in email.html


def test_minified_html_through_the_composer(just_over, greeting_settings):
    """Per-reader values reach each reader intact through a minified part (quoted-printable)."""
    import email as email_pkg
    from email import policy

    from mailer.deliver.message import Composer
    from mailer.state.subscribers import Subscriber

    issue, _ = just_over
    rendered = render(issue, greeting_settings)
    assert rendered.html_bytes < GMAIL_CLIP_BYTES
    composer = Composer(rendered, greeting_settings, secret="s3cret")
    reader = Subscriber(email="ann@example.org", name='Ann "Nan" O\'Neil & <Co>', fields={}, line=0)
    message = email_pkg.message_from_bytes(composer.compose(reader).data, policy=policy.default)
    html_part = message.get_body(preferencelist=("html",))
    doc = lxml_html.fromstring(html_part.get_content())
    greeting = doc.find_class("greeting")[0]
    assert greeting.get("title") == 'For Ann "Nan" O\'Neil & <Co>'
    assert greeting.text_content() == 'Ann "Nan" O\'Neil & <Co>'
    unsubscribe = [a for a in doc.iter("a") if a.text_content() == "Unsubscribe"][0]
    assert unsubscribe.get("href") == composer.unsubscribe_url("ann@example.org")
    assert "ann@example.org subscribed to" in " ".join(doc.text_content().split())


def test_still_over_the_clip_after_minifying_is_noticed(tmp_path, greeting_settings):
    email = render(read(many(tmp_path, 400)), greeting_settings)
    assert email.html_bytes > GMAIL_CLIP_BYTES
    assert email.html.startswith("<!doctype html><html ")
    size = [n.message for n in email.notices if n.code == "size"]
    assert size == [f"HTML is {email.html_bytes / 1024:.0f} KB: Gmail clips messages over 102 KB"]


def test_under_the_clip_is_not_minified(built):
    _, email = built(SEED)
    assert email.html_bytes < GMAIL_CLIP_BYTES
    assert email.html.startswith("<!doctype html>\n<html ")
    assert "\n  <head>" in email.html
