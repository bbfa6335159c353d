"""The issue dialect of issue 11: comments, footnotes, kramdown habits, links an email can follow,
headings for screen readers, image sizes and the language of an issue that does not say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, PT_BR, SEED_FIXTURE, ZH

from mailer.compose import lang
from mailer.compose.issue import Issue, read
from mailer.compose.markdown import parser, prepare, url_length

HEAD = "---\ntitle: T\n---\n"  # the body starts on line 4


def issue(tmp_path: Path, body: str, head: str = HEAD, **kwargs: str) -> Issue:
    path = tmp_path / "post.md"
    path.write_text(head + body, encoding="utf-8")
    return read(path, **kwargs)


def html(item: Issue) -> str:
    md = parser()
    return str(md.renderer.render(list(item.tokens), md.options, {}))


def walk(tokens) -> list:
    out = []
    for token in tokens:
        out.append(token)
        out.extend(walk(token.children or []))
    return out


def notices(item: Issue, *codes: str) -> list[tuple[str, int | None, str]]:
    return [(n.code, n.line, n.message) for n in item.notices if not codes or n.code in codes]


# -- D6: HTML comments leave the source before it is parsed ------------------------------------


def test_a_comment_spanning_a_blank_line_mid_paragraph_is_gone(tmp_path):
    body = (
        "Intro. <!-- editor's note, not for readers:\n\n"
        "remember to ask Alice before we publish this part -->\n"
    )
    item = issue(tmp_path, body)
    assert html(item) == "<p>Intro.</p>\n"
    assert not any("Alice" in t.content for t in walk(item.tokens))


def test_a_comment_inside_a_paragraph_does_not_split_it_and_lines_stay_right(tmp_path):
    body = (
        "Intro. <!-- a\n"  # 4
        "\n"  # 5
        "b --> more.\n"  # 6
        "\n"
        "Para.\n"  # 8
        "<!-- c\n"  # 9: alone on its lines: the paragraphs around it stay two
        "d -->\n"
        "Next [x](http://a.example).\n"  # 11
        "\n"
        "![](https://a.example/i.png)\n"  # 13
    )
    item = issue(tmp_path, body)
    assert html(item) == (
        "<p>Intro.  more.</p>\n"
        "<p>Para.</p>\n"
        '<p>Next <a href="http://a.example">x</a>.</p>\n'
        '<p><img src="https://a.example/i.png" alt="" /></p>\n'
    )
    assert notices(item) == [
        ("http", 11, "link is not https: http://a.example"),
        ("alt", 13, "image without alt text: https://a.example/i.png"),
    ]


def test_prepare_maps_lines_back():
    source = prepare("a <!-- x\n\ny --> b\n\n<!-- z -->\nc\n")
    assert source.text == "a  b\n\n\nc\n"
    assert source.lines == (0, 3, 4, 5, 6)  # "a  b" is line 0; "c" is still line 5


def test_a_comment_inside_emphasis_vanishes(tmp_path):
    item = issue(tmp_path, "- *<!--original-heading-->Full replacement* of any part.\n")
    assert html(item) == "<ul>\n<li><em>Full replacement</em> of any part.</li>\n</ul>\n"


def test_comments_in_code_are_code(tmp_path):
    body = (
        "Use `<!-- x -->` here <!-- gone -->.\n\n"
        "```html\n<!-- fenced -->\n```\n\n"
        "    <!-- indented -->\n"
    )
    assert html(issue(tmp_path, body)) == (
        "<p>Use <code>&lt;!-- x --&gt;</code> here .</p>\n"
        '<pre><code class="language-html">&lt;!-- fenced --&gt;\n</code></pre>\n'
        "<pre><code>&lt;!-- indented --&gt;\n</code></pre>\n"
    )


def test_an_unclosed_comment_is_left_as_commonmark_has_it(tmp_path):
    assert html(issue(tmp_path, "A <!-- never closed\n")) == "<p>A &lt;!-- never closed</p>\n"


def test_no_pt_br_comment_reaches_the_tokens():
    item = read(PT_BR)
    source = PT_BR.read_text(encoding="utf-8")
    comments = re.findall(r"<!--(.*?)-->", source, re.S)
    assert len(comments) == 39
    leaves = [t.content for t in walk(item.tokens)]
    assert not [c for c in leaves if "<!--" in c or "-->" in c]
    outside = re.sub(r"<!--.*?-->", "", source, flags=re.S)
    rendered = html(item)
    # each English original's first words, where they are not also in the Portuguese text
    starts = [c.strip()[:40] for c in comments]
    distinct = [s for s in starts if s not in outside and not re.search(r"[\[\]*_`]", s)]
    assert len(distinct) == 21
    assert [s for s in distinct if s in rendered] == []


# -- D4: footnotes -------------------------------------------------------------------------------

FOOTNOTE = """Full RBF has two meanings.[^rbf]

[^rbf]:
    The term has been used for two ideas.

    - *<!--original-heading-->Full replacement* of any part of a transaction.
"""


def test_an_indented_footnote_with_a_list_and_a_comment(tmp_path):
    item = issue(tmp_path, FOOTNOTE)
    assert [t.type for t in walk(item.tokens) if t.type.startswith(("code", "fence"))] == []
    assert html(item) == (
        "<p>Full RBF has two meanings."
        '<sup class="footnote-ref"><a href="#fn1" id="fnref1">[1]</a></sup></p>\n'
        '<hr class="footnotes-sep" />\n'
        '<section class="footnotes">\n'
        '<ol class="footnotes-list">\n'
        '<li id="fn1" class="footnote-item"><p>The term has been used for two ideas.</p>\n'
        "<ul>\n"
        "<li><em>Full replacement</em> of any part of a transaction.</li>\n"
        "</ul>\n"
        ' <a href="#fnref1" class="footnote-backref">\u21a9\ufe0e</a></li>\n'
        "</ol>\n"
        "</section>\n"
    )
    assert parser().render(FOOTNOTE) == html(item)
    assert notices(item) == []


def test_a_footnote_used_twice_links_back_twice(tmp_path):
    item = issue(tmp_path, "A[^n] and B[^n].\n\n[^n]: Note.\n")
    assert html(item) == (
        '<p>A<sup class="footnote-ref"><a href="#fn1" id="fnref1">[1]</a></sup> and '
        'B<sup class="footnote-ref"><a href="#fn1" id="fnref1:1">[1:1]</a></sup>.</p>\n'
        '<hr class="footnotes-sep" />\n'
        '<section class="footnotes">\n'
        '<ol class="footnotes-list">\n'
        '<li id="fn1" class="footnote-item"><p>Note. '
        '<a href="#fnref1" class="footnote-backref">\u21a9\ufe0e</a> '
        '<a href="#fnref1:1" class="footnote-backref">\u21a9\ufe0e</a></p>\n'
        "</li>\n"
        "</ol>\n"
        "</section>\n"
    )


# -- D5: kramdown's markdown="span|block|1" ------------------------------------------------------

TABLE = """<table>
  <tr>
    <td markdown="span">

    Soft fork of `OP_VAULT`<br>*(rough)*

    </td>
  </tr>
</table>

[after](http://a.example)
"""


def test_markdown_span_in_a_table_cell(tmp_path):
    item = issue(tmp_path, TABLE)
    assert [t.type for t in item.tokens] == [
        "html_block",
        "paragraph_open",
        "inline",
        "paragraph_close",
    ]
    assert item.tokens[0].content == (
        "<table>\n"
        "  <tr>\n"
        "    <td>Soft fork of <code>OP_VAULT</code><br><em>(rough)</em></td>\n"
        "  </tr>\n"
        "</table>\n"
    )
    assert not [t for t in walk(item.tokens) if t.type == "text" and "</td>" in t.content]
    assert notices(item) == [("http", 14, "link is not https: http://a.example")]


def test_markdown_block_and_1_render_blocks_without_blank_lines(tmp_path):
    body = (
        '<div class="box" markdown="1">\n'
        "# Inside\n\n"
        "*x* and <!-- hidden -->\n\n"
        "```\nc1\n\nc2\n```\n"
        "</div>\n\n"
        "<section markdown='block'>**b** and <i>i</i></section>\n"
    )
    assert html(issue(tmp_path, body)) == (
        '<div class="box"><h2>Inside</h2>\n'
        "<p><em>x</em> and</p>\n"
        "<pre><code>c1&#10;\nc2\n</code></pre></div>\n"
        "<section><p><strong>b</strong> and <i>i</i></p></section>\n"
    )


def test_markdown_0_only_loses_the_attribute(tmp_path):
    body = '<div markdown="0">\n*raw*\n</div>\n'
    assert html(issue(tmp_path, body)) == "<div>\n*raw*\n</div>\n"


def test_a_markdown_attribute_in_code_is_code(tmp_path):
    body = '`<td markdown="span">`\n'
    assert html(issue(tmp_path, body)) == (
        "<p><code>&lt;td markdown=&quot;span&quot;&gt;</code></p>\n"
    )


# -- D1: links an email can follow ---------------------------------------------------------------


def test_unknown_scheme(tmp_path):
    item = issue(tmp_path, "Watch [the talk](ttps://www.youtube.com/watch?v=abc).\n")
    assert notices(item) == [
        (
            "scheme",
            4,
            "link with an unknown scheme 'ttps:' (email links are http, https, mailto or tel): "
            "ttps://www.youtube.com/watch?v=abc",
        )
    ]


def test_email_schemes_are_fine(tmp_path):
    body = "[a](https://a.example) [b](mailto:b@a.example) [c](tel:+15550100) [d](#top)\n"
    assert notices(issue(tmp_path, body)) == []


def test_a_host_without_scheme_is_not_joined_to_base_url(tmp_path):
    body = (
        "[MIT](news.mit.edu/2020/x)\n\n[www](www.example.org)\n\n[rel](docs/a.md) [me](README.md)\n"
    )
    item = issue(tmp_path, body, base_url="https://blog.example/")
    assert item.links == [
        "news.mit.edu/2020/x",
        "www.example.org",
        "https://blog.example/docs/a.md",
        "https://blog.example/README.md",
    ]
    assert notices(item) == [
        ("scheme", 4, "link has no https:// in front: news.mit.edu/2020/x"),
        ("scheme", 6, "link has no https:// in front: www.example.org"),
    ]
    bare = issue(tmp_path, "[rel](docs/a.md) ![i](cdn.example.com/i.png)\n")
    assert notices(bare) == [
        ("relative", 4, "relative link cannot work in an email: docs/a.md"),
        ("scheme", 4, "image has no https:// in front: cdn.example.com/i.png"),
    ]


# -- D2: empty link targets ----------------------------------------------------------------------


def test_an_empty_link_target_leaves_the_label(tmp_path):
    item = issue(tmp_path, "One.\n\nRead the [intro guide]() first\nand [*this*](<>).\n")
    assert html(item) == "<p>One.</p>\n<p>Read the intro guide first\nand <em>this</em>.</p>\n"
    assert notices(item) == [
        ("empty-link", 6, "link with an empty target: [intro guide]()"),
        ("empty-link", 7, "link with an empty target: [this]()"),
    ]
    assert item.links == []


# -- Liquid and bare words -----------------------------------------------------------------------


def test_leftover_liquid_is_noticed_and_not_linked(tmp_path):
    body = "Intro.\n\n{% include references.md %}\n\nSee {{ site.url }}/about and `{{ code }}`.\n"
    item = issue(tmp_path, body)
    assert notices(item) == [
        ("liquid", 6, "Liquid tag left in the text: {% include references.md %}"),
        ("liquid", 8, "Liquid tag left in the text: {{ site.url }}"),
    ]
    assert item.links == []


def test_only_www_and_schemes_are_bare_links(tmp_path):
    body = (
        "See README.md, config.py, fast.ai, www.example.com, https://a.example "
        "and me@example.com.\n"
    )
    item = issue(tmp_path, body)
    assert html(item) == (
        "<p>See README.md, config.py, fast.ai, "
        '<a href="https://www.example.com">www.example.com</a>, '
        '<a href="https://a.example">https://a.example</a> and '
        '<a href="mailto:me@example.com">me@example.com</a>.</p>\n'
    )


def test_bare_ftp_and_protocol_relative_urls_stay_text(tmp_path):
    assert html(issue(tmp_path, "ftp://a.example/f and //a.example/x\n")) == (
        "<p>ftp://a.example/f and //a.example/x</p>\n"
    )


# -- D3: missing reference definitions -----------------------------------------------------------


def test_reference_links_without_definitions(tmp_path):
    body = "See [BIP32][] and\n[the spec][spec], [^nope].\n\n[def]: https://a.example\n\n[x][def]\n"
    item = issue(tmp_path, body)
    assert html(item) == (
        "<p>See [BIP32][] and\n[the spec][spec], [^nope].</p>\n"
        '<p><a href="https://a.example">x</a></p>\n'
    )
    assert notices(item) == [
        ("reference", 4, "reference link with no definition: [BIP32][]"),
        ("reference", 5, "reference link with no definition: [the spec][spec]"),
        ("reference", 5, "footnote with no definition: [^nope]"),
    ]


# -- bare URLs before CJK text -------------------------------------------------------------------


def test_the_zh_line_links_only_the_urls():
    line = ZH.read_text(encoding="utf-8").split("\n")[386]
    assert line == (
        "[40] **Neural Data Server (NDS):** https://arxiv.org/abs/2001.02799[41]**服务:** "
        "http://aidemos.cs.toronto.edu/nds/"
    )
    assert parser().render(line) == (
        "<p>[40] <strong>Neural Data Server (NDS):</strong> "
        '<a href="https://arxiv.org/abs/2001.02799">https://arxiv.org/abs/2001.02799</a>[41]'
        "<strong>服务:</strong> "
        '<a href="http://aidemos.cs.toronto.edu/nds/">http://aidemos.cs.toronto.edu/nds/</a></p>\n'
    )


def test_the_zh_fixture_urls_end_where_the_chinese_starts():
    links = read(ZH).links
    assert "https://arxiv.org/abs/2001.02799" in links
    assert "https://twitter.com/" in links
    assert "https://deepmind.com/blog/article/AlphaFold-Using-AI-for-scientific-discovery" in links
    assert [u for u in links if "%" in u or "*" in u or "[" in u] == []


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://a.example/x", "https://a.example/x"),
        ("https://a.example/x中文", "https://a.example/x"),
        ("https://a.example/ｘ", "https://a.example/"),  # a full-width letter
        ("https://a.example/x[12]", "https://a.example/x"),
        ("https://a.example/x**bold", "https://a.example/x"),
        ("https://a.example/x]", "https://a.example/x"),
        ("https://a.example/?a[1]=2", "https://a.example/?a[1]=2"),
        ("https://a.example/a.[3]", "https://a.example/a"),
    ],
)
def test_url_length(raw, url):
    assert raw[: url_length(raw)] == url


# -- image sizes ---------------------------------------------------------------------------------


def test_image_width_and_height_only(tmp_path):
    body = (
        "![a](https://a.example/a.png){width=200 height=100px}\n\n"
        '![b](https://a.example/b.png){width="50%" onclick="x()" .big src="javascript:x"}\n\n'
        '![c](https://a.example/c.png){: .center width="30"}\n\n'
        "{: .center}\n\n"
        "Text {: #id} and `{: .code}`.\n"
    )
    item = issue(tmp_path, body)
    images = [t for t in walk(item.tokens) if t.type == "image"]
    assert [dict(t.attrs) for t in images] == [
        {"src": "https://a.example/a.png", "alt": "", "width": "200", "height": "100"},
        {"src": "https://a.example/b.png", "alt": ""},
        {"src": "https://a.example/c.png", "alt": "", "width": "30"},
    ]
    assert html(item) == (
        '<p><img src="https://a.example/a.png" alt="a" width="200" height="100" /></p>\n'
        '<p><img src="https://a.example/b.png" alt="b" /></p>\n'
        '<p><img src="https://a.example/c.png" alt="c" width="30" /></p>\n'
        "<p>Text  and <code>{: .code}</code>.</p>\n"
    )
    assert notices(item) == [
        (
            "attribute",
            6,
            "image attribute dropped (only width and height, in pixels): "
            "onclick=x(), src=javascript:x, class=big, width=50%",
        )
    ]


@pytest.mark.parametrize("path", [SEED_FIXTURE, *CORPUS], ids=lambda p: p.stem)
def test_corpus_has_no_attribute_lists_or_sizes(path):
    """The corpus has no `{:` or `{width`: its images come out as before, src and alt only."""
    item = read(path)
    assert not re.search(r"\{:|\{width", path.read_text(encoding="utf-8"))
    assert {tuple(t.attrs) for t in walk(item.tokens) if t.type == "image"} == {("src", "alt")}
    assert [n for n in item.notices if n.code == "attribute"] == []


# -- headings for screen readers -----------------------------------------------------------------


def test_seed_headings_start_at_h2():
    body = read(SEED_FIXTURE).body
    rendered = parser().render(body)
    assert len(re.findall("<h1>", rendered)) == 0
    assert len(re.findall("<h2>", rendered)) == 7
    assert len(re.findall("<h3>", rendered)) == 25
    assert "<h2>Publications 📙</h2>" in rendered
    assert "<h3>An efficient transformer-based model called Reformer</h3>" in rendered


@pytest.mark.parametrize(
    ("path", "counts"),
    [
        (CORPUS[0], (0, 7, 15)),
        (CORPUS[1], (0, 5, 28)),  # five `#` and two `## **bold**` sections, 26 bold lines
        (CORPUS[2], (0, 7, 33)),
        (CORPUS[3], (0, 7, 33)),
    ],
    ids=lambda v: v.stem if isinstance(v, Path) else "",
)
def test_corpus_headings(path, counts):
    tags = [t.tag for t in read(path).tokens if t.type == "heading_open"]
    assert (tags.count("h1"), tags.count("h2"), tags.count("h3")) == counts


def test_headings_shift_to_start_at_h2(tmp_path):
    body = (
        "# One\n\n## Two\n\n###### Six\n\n"
        "***Bold italic***\n\n"
        "  **Bold** \n\n"
        "*__Em bold__*\n\n"
        "**Bold** and more\n\n"
        "*Just italic*\n\n"
        "**Two**\n**lines**\n\n"
        "- **In a list**\n\n"
        "> **In a quote**\n"
    )
    item = issue(tmp_path, body)
    assert html(item) == (
        "<h2>One</h2>\n<h3>Two</h3>\n<h6>Six</h6>\n"
        "<h3>Bold italic</h3>\n"
        "<h3>Bold</h3>\n"
        "<h3>Em bold</h3>\n"
        "<p><strong>Bold</strong> and more</p>\n"
        "<p><em>Just italic</em></p>\n"
        "<p><strong>Two</strong>\n<strong>lines</strong></p>\n"
        "<ul>\n<li><strong>In a list</strong></li>\n</ul>\n"
        "<blockquote>\n<p><strong>In a quote</strong></p>\n</blockquote>\n"
    )
    heads = [t for t in item.tokens if t.type in ("heading_open", "heading_close")]
    assert [(t.type, t.tag, t.markup) for t in heads[6:8]] == [
        ("heading_open", "h3", "###"),
        ("heading_close", "h3", "###"),
    ]
    (inline,) = [t for t in item.tokens if t.type == "inline" and t.content == "Bold italic"]
    assert [c.type for c in inline.children] == ["text"]


def test_top_level_h3_becomes_h2_and_bold_without_headings_is_h2(tmp_path):
    assert html(issue(tmp_path, "### Three\n\n#### Four\n\n**Bold**\n")) == (
        "<h2>Three</h2>\n<h3>Four</h3>\n<h3>Bold</h3>\n"
    )
    assert html(issue(tmp_path, "**Bold only**\n\nText.\n")) == (
        "<h2>Bold only</h2>\n<p>Text.</p>\n"
    )


def test_a_long_bold_paragraph_stays_a_paragraph(tmp_path):
    words = "word " * 30  # 150 characters
    assert html(issue(tmp_path, f"**{words.strip()}**\n")).startswith("<h2>")
    assert html(issue(tmp_path, f"**{words}more**\n")).startswith("<p><strong>")


# -- language ------------------------------------------------------------------------------------


def test_zh_fixture_is_zh():
    item = read(ZH)
    assert (item.lang, item.dir) == ("zh", "ltr")
    assert notices(item, "lang") == [
        (
            "lang",
            None,
            "front matter has no 'lang': detected zh from the script (Han); "
            "add 'lang: zh' to say so",
        )
    ]


def test_pt_br_fixture_is_pt_br():
    item = read(PT_BR)
    assert item.lang == "pt-BR"
    assert notices(item, "lang") == [
        (
            "lang",
            None,
            "front matter has no 'lang': detected pt-BR from the title's [PT-BR] tag; "
            "add 'lang: pt-BR' to say so",
        )
    ]


@pytest.mark.parametrize("path", [SEED_FIXTURE, CORPUS[0], CORPUS[2]], ids=lambda p: p.stem)
def test_english_fixtures_are_english_without_a_notice(path):
    item = read(path)
    assert item.lang == "en"
    assert notices(item, "lang") == []


def test_lang_from_the_text(tmp_path):
    body = (
        "Dies ist ein deutscher Text über maschinelles Lernen, Sprachmodelle und die Frage, "
        "wie man sie in der Forschung und im Alltag sinnvoll einsetzen kann.\n"
    )
    item = issue(tmp_path, body)
    assert (item.lang, notices(item)) == (
        "de",
        [
            (
                "lang",
                None,
                "front matter has no 'lang': detected de from the text (py3langid); "
                "add 'lang: de' to say so",
            )
        ],
    )
    assert notices(issue(tmp_path, body, default_lang="de")) == []
    assert issue(tmp_path, body, head="---\ntitle: T\nlang: en\n---\n").lang == "en"


def test_short_text_keeps_the_default(tmp_path):
    assert issue(tmp_path, "Kurz.\n", default_lang="fr").lang == "fr"


def test_rtl_detected_from_the_script(tmp_path):
    item = issue(tmp_path, "שלום לכולם, זה הגיליון הראשון של העלון שלנו.\n")
    assert (item.lang, item.dir) == ("he", "rtl")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("这是一个中文句子，里面有 some English words 和更多的中文。", ("zh", "Han")),
        ("これは日本語の文章です。漢字とかなが混ざっています。", ("ja", "Kana")),
        ("이것은 한국어 문장입니다. 뉴스레터에 오신 것을 환영합니다.", ("ko", "Hangul")),
        ("यह एक हिंदी वाक्य है। हमारे समाचार पत्र में आपका स्वागत है।", ("hi", "Devanagari")),
        ("هذه جملة باللغة العربية. مرحبا بكم في النشرة الإخبارية.", ("ar", "Arabic")),
        ("นี่คือประโยคภาษาไทย ยินดีต้อนรับสู่จดหมายข่าวของเรา", ("th", "Thai")),
        ("Αυτή είναι μια ελληνική πρόταση. Καλώς ήρθατε στο ενημερωτικό δελτίο.", ("el", "Greek")),
        (
            "Это предложение на русском языке. Добро пожаловать в нашу рассылку новостей.",
            ("ru", "Cyrillic"),
        ),
        (
            "Це речення українською мовою. Ласкаво просимо до нашої розсилки новин.",
            ("uk", "Cyrillic"),
        ),
    ],
)
def test_detect_by_script(text, found):
    assert lang.detect("Title", text) == lang.Detected(found[0], f"from the script ({found[1]})")


def test_a_few_cjk_words_do_not_make_a_chinese_issue():
    text = "An English sentence about the word 中文 and machine learning. " * 3
    assert lang.detect("Title", text) == lang.Detected("en", "from the text (py3langid)")


@pytest.mark.parametrize(
    ("title", "tag"),
    [
        ("News [PT-BR]: more", ("pt-BR", "[PT-BR]")),
        ("Nouvelles [FR]", ("fr", "[FR]")),
        ("Noticias (ES)", ("es", "(ES)")),
        ("Xəbərlər [az-latn]", ("az-Latn", "[az-latn]")),
        ("Notícias [pt_br]", ("pt-BR", "[pt_br]")),
        ("Weekly [ML] digest", None),  # Malayalam is not written in Latin letters
        ("No tag at all", None),
    ],
)
def test_title_tags(title, tag):
    assert lang.title_tag(title) == tag


def test_detection_loads_py3langid_only_when_it_must(tmp_path):
    with_lang = tmp_path / "with.md"
    with_lang.write_text(
        "---\ntitle: T\nlang: de\n---\n\n" + "Ein langer deutscher Text ohne Titel-Tag. " * 5,
        encoding="utf-8",
    )
    tagged = tmp_path / "tagged.md"
    tagged.write_text(
        "---\ntitle: News [FR]\n---\n\n" + "Un long texte en français. " * 5, encoding="utf-8"
    )
    without = tmp_path / "without.md"
    without.write_text(
        "---\ntitle: T\n---\n\n" + "Ein langer deutscher Text ohne Titel-Tag. " * 5,
        encoding="utf-8",
    )
    script = (
        "import sys\n"
        "from mailer.compose.issue import read\n"
        "for name in sys.argv[1:]:\n"
        "    issue = read(__import__('pathlib').Path(name))\n"
        "    print(issue.lang, 'py3langid' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(with_lang), str(tagged), str(without)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "de False\nfr False\nde True\n"
