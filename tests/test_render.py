"""Issue -> Email HTML: the template, MJML, inlined CSS, and what reaches the reader."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest
from conftest import CORPUS, PT_BR, ZH
from lxml import html as lxml_html

from mailer import config
from mailer.errors import TemplateError
from mailer.issue import read
from mailer.render import BUILTIN_TEMPLATES, Email, compile_mjml, render

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
        hidden = [
            d for d in doc.iter("div") if "display:none" in (d.get("style") or "").replace(" ", "")
        ]
        assert len(hidden) == 1
        assert words(hidden[0].text_content()) == issue.preheader
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
        # view in browser + unsubscribe + view online (archive_url is set in mailer.toml)
        assert everywhere - inside == 3

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
    _, email = built(SEED)
    _, content = content_of(email)
    found = content.xpath(".//em/strong")
    assert "On trusting model’s uncertainty" in [words(s.text_content()) for s in found]
    assert all(s.get("style") for s in found)


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
    assert "color:#0b62d6" in style(".//a[@href='https://example.org/page']")
    assert "font-family:Menlo" in style(".//p/code")
    assert "background:#f3f4f6" in style(".//pre")
    assert "border-left:4pxsolid" in style(".//blockquote")
    assert "padding-left:24px" in style(".//ul")
    assert "padding-left:24px" in style(".//ol")
    assert "margin:006px" in style(".//li")
    assert "margin:0016px" in style(".//p")
    assert "font-size:18px" in style(".//em/strong")
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

RTL = "---\ntitle: نشرة\nlang: ar\n---\n\nمرحبا بكم في النشرة.\n\n> اقتباس\n"


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


# -- titles and preheaders with markup characters -------------------------------------------------


def test_title_with_ampersand_and_angle_brackets_is_escaped_once(tmp_path, settings):
    text = "---\ntitle: 'Q&A <b>time</b>'\nexcerpt: Tom & Jerry <3\n---\n\nBody.\n"
    email = render(read(write(tmp_path, text)), settings)
    doc = lxml_html.fromstring(email.html)
    assert words(doc.findtext(".//title")) == "Q&A <b>time</b>"
    assert "&amp;amp;" not in email.html
    assert "<b>time</b>" not in email.html
    hidden = [d for d in doc.iter("div") if "display:none" in (d.get("style") or "")]
    assert words(hidden[0].text_content()) == "Tom & Jerry <3"


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
    changed = source.replace(
        "{{ issue.title }}</mj-text>", f"{marker} {{{{ issue.title }}}}</mj-text>"
    )
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
