"""The plaintext twin's references, markers, images, headings, notes and raw HTML (issue 11)."""

from __future__ import annotations

import re
import unicodedata

import pytest
from conftest import CORPUS, SEED_FIXTURE, ZH
from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin

from mailer.compose.issue import read
from mailer.compose.text import WIDTH, Plain, render_plain

# The dialect the issue parser is moving to (footnotes on), built here so these tests do not
# depend on mailer/compose/markdown.py's state.
MD = (
    MarkdownIt("commonmark", {"html": True, "linkify": True})
    .enable(["table", "strikethrough", "linkify"])
    .use(footnote_plugin)
)
TAG = re.compile(r"<[a-zA-Z/!][^>]*>")


def plain(source: str) -> Plain:
    return render_plain(MD.parse(source))


def columns(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def squash(text: str) -> str:
    return " ".join(text.split())


# -- one number per distinct URL ------------------------------------------------------------------


def test_the_same_url_gets_the_same_number():
    result = plain(
        "[A](https://a.example) [B](https://b.example) [A again](https://a.example)\n\n"
        "<a href='https://b.example'>B raw</a> and ![](https://a.example)\n"
    )
    assert result == Plain(
        body="A [1] B [2] A again [1]\n\nB raw [2] and [Image 1]\n",
        references="[1] https://a.example\n[2] https://b.example\n",
        urls=("https://a.example", "https://b.example"),
    )


def test_seed_references():
    issue = read(SEED_FIXTURE)
    result = render_plain(issue.tokens)
    # before: 57 references for 51 distinct URLs and 7 bare "[Image]" lines
    assert (len(issue.links), len(set(issue.links)), len(issue.images)) == (57, 51, 7)
    assert len(result.urls) == len(set(result.urls)) == 58  # 51 link URLs, then 7 images
    assert set(result.urls) == set(issue.links) | set(issue.images)
    assert len(result.references.splitlines()) == 58
    assert result.references.startswith(
        "[1] https://cdn-images-1.medium.com/max/1200/1*mgWc3FhHPRfCxdPir6wSeg.png\n"
        "[2] https://arxiv.org/abs/1906.02530\n"
        "[3] https://ai.googleblog.com/2020/01/can-you-trust-your-models-uncertainty.html\n"
    )
    assert result.references.endswith("[58] http://aidemos.cs.toronto.edu/nds/\n")
    assert result.body.count("[Image]") == 0
    assert len(re.findall(r"\[Image \d+\]", result.body)) == 7
    assert "(Read the paper here [2] and the summary here [3].)" in squash(result.body)
    assert "image corruption — source [3]" in squash(result.body)


# -- markers that cannot be taken for the issue's own ----------------------------------------------


@pytest.mark.parametrize(
    ("source", "body", "listed"),
    [
        ("No numbers.\n", "No numbers.\n\nA [1]\n", "[1] https://a.example\n"),
        ("Our own [1].\n", "Our own [1].\n\nA <1>\n", "<1> https://a.example\n"),
        ("Own [1] and <2>.\n", "Own [1] and <2>.\n\nA {1}\n", "{1} https://a.example\n"),
        ("Own \\[^1] only.\n", "Own [^1] only.\n\nA <1>\n", "<1> https://a.example\n"),
        ("`x[0]` in code.\n", "`x[0]` in code.\n\nA <1>\n", "<1> https://a.example\n"),
        (
            "All [1] <2> {3} [#4].\n",
            "All [1] <2> {3} [#4].\n\nA [#1]\n",
            "[#1] https://a.example\n",
        ),
        (
            "Not numbers: [a1] {} [#] [ 1 ] [1.5].\n",
            "Not numbers: [a1] {} [#] [ 1 ] [1.5].\n\nA [1]\n",
            "[1] https://a.example\n",
        ),
    ],
    ids=["plain", "brackets", "angles-too", "caret", "code", "all-taken", "near-misses"],
)
def test_marker_style_is_one_the_issue_does_not_write(source, body, listed):
    result = plain(source + "\n[A](https://a.example)\n")
    assert (result.body, result.references) == (body, listed)


def test_zh_fixture_gets_angle_markers():
    issue = read(ZH)
    result = render_plain(issue.tokens)
    assert result.references == (
        "<1> https://cdn-images-1.medium.com/max/1200/1*mgWc3FhHPRfCxdPir6wSeg.png\n"
        "<2> https://blog.csdn.net/Kaiyuan_sjtu\n"
        "<3> https://cdn-images-1.medium.com/max/800/0*NrsUnHS1thKq3ChK.png\n"
        "<4> https://cdn-images-1.medium.com/max/800/0*Q6FHJ5bqZRCrBAp9.png\n"
        "<5> https://cdn-images-1.medium.com/max/800/1*0mfEtacqGLSrmaUlNjJa0g.png\n"
        "<6> https://cdn-images-1.medium.com/max/800/1*Ff7BTxmEjUXHtYu9JkfClg.jpeg\n"
        "<7> https://cdn-images-1.medium.com/max/800/1*4_2Obuu8u8l2Vtp8UMHe7Q.gif\n"
        "<8> https://cdn-images-1.medium.com/max/800/1*N5d8-1La8khZ6-XwHL68sg.png\n"
    )
    assert result.body.startswith(
        "[Image <1>]\n\nThanks to Kaiyuan <2> (WeChat: NewBeeNLP) for this great translation.\n"
    )
    assert re.findall(r"<\d+>", result.body) == [f"<{n}>" for n in range(1, 9)]
    # every [n] left in the text is the issue's own citation, as many as it writes
    own = re.findall(r"\[\d+\]", re.sub(r"<!--.*?-->", "", issue.body, flags=re.S))
    assert re.findall(r"\[\d+\]", result.body) == own
    assert len(own) == 82
    assert "来自 Google AI 的最新论文Can You Trust Your Model's Uncertainty?[1]发表在" in (
        result.body
    )


# -- images ---------------------------------------------------------------------------------------


def test_images_are_named_or_numbered():
    result = plain(
        "![A chart](https://img.example/a.png) ![](https://img.example/b.png)\n\n"
        "[![](https://img.example/c.png)](https://target.example) "
        "![](data:image/png;base64,AAAA) ![  ](https://img.example/b.png)\n\n"
        '<img src="https://img.example/d.png"> <img src="https://img.example/e.png" alt="Raw">\n'
    )
    assert result.body == (
        "[Image: A chart] [Image 1]\n\n"
        "[Image] [2] [Image] [Image 1]\n\n"  # linked: the link's number; data: URIs unlisted
        "[Image 3] [Image: Raw]\n"
    )
    assert result.urls == (
        "https://img.example/b.png",
        "https://target.example",
        "https://img.example/d.png",
    )


def test_image_marker_is_not_split_by_wrapping():
    result = plain("word " * 14 + "![](https://img.example/a.png)\n")
    assert result.body == "word " * 13 + "word\n[Image 1]\n"


# -- the signature separator ----------------------------------------------------------------------


def test_signature_separator_is_dash_dash_space(built):
    _, email = built(SEED_FIXTURE)
    lines = email.text.split("\n")
    assert lines.count("-- ") == 1 and "--" not in lines
    body, signature = email.text.split("\n-- \n")
    assert body.endswith("\n[58] http://aidemos.cs.toronto.edu/nds/\n")
    assert signature.startswith("You receive this because %%mailer:1%% subscribed to ")
    assert "\nUnsubscribe: %%mailer:0%%\nView online: " in signature


# -- headings -------------------------------------------------------------------------------------

HEADINGS = """\
## CoVoST V2: Expanding the largest, most diverse multilingual speech-to-text translation data set

# Top

### A **bold** third level heading that is long enough to wrap past the seventy-six columns

#### Fourth

## 中文标题：关于信任模型的不确定性以及更多更多的内容和一些非常长的中文文字标题测试

## Publications 📙
"""


def test_headings_wrap_and_underline_their_longest_line():
    assert len(HEADINGS.split("\n")[0]) == len("## ") + 95
    expected = (
        "CoVoST V2: Expanding the largest, most diverse multilingual speech-to-text\n"
        "translation data set\n" + "-" * 74 + "\n\n"
        "Top\n===\n\n"  # an h1 (the parser is to shift them to h2) is underlined like the title
        "*A bold third level heading that is long enough to wrap past the seventy-six\n"
        "columns*\n\n"
        "*Fourth*\n\n"
        "中文标题：关于信任模型的不确定性以及更多更多的内容和一些非常长的中文文字标题\n"
        "测试\n" + "-" * 76 + "\n\n"  # 38 wide characters: 76 columns
        "Publications 📙\n" + "-" * 15 + "\n"  # the emoji takes two columns
    )
    assert plain(HEADINGS).body == expected


def test_bold_only_paragraph_reads_like_an_h3():
    """The parser is to turn a bold-only paragraph into an h3: the text stays the same."""
    assert plain("**On trusting**\n").body == plain("### On trusting\n").body == "*On trusting*\n"


# -- footnotes ------------------------------------------------------------------------------------


def test_footnote_from_the_brief():
    result = plain(
        "Full RBF has two meanings.[^rbf]\n\n"
        "[^rbf]:\n"
        "    The term has been used for two ideas.\n\n"
        "    - *Full replacement* of any part of a transaction.\n"
    )
    assert result == Plain(
        body="Full RBF has two meanings.[^1]\n\n"
        "Notes:\n"
        "[^1] The term has been used for two ideas.\n\n"
        "     - Full replacement of any part of a transaction.\n",
        references="",
        urls=(),
    )


def test_footnotes_in_order_wrapped_with_their_links():
    result = plain(
        "One[^b] two[^a] and one again[^b], see [the BIP](https://bip.example/125).^[Inline.]\n\n"
        "[^a]: Second.\n"
        "[^b]: A short note with [a link](https://bip.example/125) and "
        "[another](https://other.example) that goes on long enough to wrap at the width.\n"
    )
    assert result.body == (
        "One[^1] two[^2] and one again[^1], see the BIP [1].[^3]\n\n"
        "Notes:\n"
        "[^1] A short note with a link [1] and another [2] that goes on long enough\n"
        "     to wrap at the width.\n"
        "[^2] Second.\n"
        "[^3] Inline.\n"
    )
    assert result.urls == ("https://bip.example/125", "https://other.example")


def test_footnote_markers_follow_the_link_style():
    result = plain("Own [1].[^n] [A](https://a.example)\n\n[^n]: Note.\n")
    assert result.body == "Own [1].<^1> A <1>\n\nNotes:\n<^1> Note.\n"


# -- raw HTML -------------------------------------------------------------------------------------

RAW_HTML = """\
Water is H<sub>2</sub>O and E = mc<sup>2</sup>.<br>
New line <b>bold</b> &amp; <i>it</i>, <span>split <em>across</em></span> tokens.

<details><summary>Show the table</summary>

<table>
<tr><th>Model</th><th>Params</th></tr>
<tr><td>BERT</td><td><a href="https://bert.example">110M</a></td></tr>
</table>

</details>

<p align="center"><img src="https://example.org/pic.png"><br/>
<a href="https://example.org/big"><img src="https://example.org/thumb.png"></a></p>

<style>p { color: red }</style>

<div>Tom &amp; Jerry &lt;3 <!-- note --><a href="#top">top</a></div>
"""


def test_raw_html_is_reduced_to_its_text():
    result = plain(RAW_HTML)
    assert result.body == (
        "Water is H2O and E = mc2.\n"
        "New line bold & it, split across tokens.\n\n"
        "Show the table\n\n"
        "Model | Params\n"
        "BERT | 110M [1]\n\n"
        "[Image 2]\n"
        "[Image] [3]\n\n"
        "Tom & Jerry <3 top\n"
    )
    assert result.urls == (
        "https://bert.example",
        "https://example.org/pic.png",
        "https://example.org/big",
    )


@pytest.mark.parametrize("path", [SEED_FIXTURE, *CORPUS], ids=lambda p: p.stem)
def test_no_tag_in_the_text_part(path, built):
    _, email = built(path)
    found = TAG.findall(email.text)
    if path == ZH:  # a title in angle brackets, written as text (a text token, not html_inline)
        assert found == ["<Systematic Generalization: What Is Required\nand Can It Be Learned?[3]>"]
    else:
        assert found == []


def test_zh_angle_title_is_a_text_token():
    tokens = read(ZH).tokens
    inline = [t for t in tokens if t.type == "inline" and "<Systematic" in t.content]
    assert [c.type for c in inline[0].children or []] == ["text"]


# -- links: empty, in-page, automatic, mailto -----------------------------------------------------


def test_links_without_a_reference():
    result = plain(
        "[x]() and [y](<>) and [top](#top) and <https://auto.example> https://linkify.example "
        "[https://label.example](https://label.example) <me@example.org> "
        "[me@example.org](mailto:me@example.org) [write](mailto:me@example.org)\n"
    )
    assert result.body == (
        "x and y and top and https://auto.example https://linkify.example\n"
        "https://label.example me@example.org me@example.org write [1]\n"
    )
    assert result.references == "[1] mailto:me@example.org\n"


def test_lines_fit_the_width():
    for source in (HEADINGS, RAW_HTML):
        lines = plain(source).body.split("\n")
        assert [line for line in lines if columns(line) > WIDTH] == []
