"""The plaintext twin: rendered from the Markdown tokens, readable at 76 columns."""

from __future__ import annotations

import re
import unicodedata

import pytest
from conftest import CORPUS, PT_BR, SEED_FIXTURE, ZH

from mailer.compose.issue import Issue, read
from mailer.compose.text import WIDTH, render_plain

SEED = SEED_FIXTURE
ALL_ISSUES = [SEED, *CORPUS]

TAGS = re.compile(r"<(p|a|div|span|img|br|strong|em|b|i|code|pre|table|td|tr|ul|ol|li|h\d)\b[^>]*>")
ENTITIES = re.compile(r"&(amp|lt|gt|quot|apos|nbsp|#\d+|#x[0-9a-fA-F]+);")
URLISH = re.compile(r"(https?://|mailto:|www\.)")


def split_text(text: str) -> tuple[str, list[tuple[int, str]]]:
    """-> (everything before the link list, [(n, url), ...] from the link list)."""
    body, sep, rest = text.rpartition("\nLinks:\n")
    if not sep:
        return text, []
    # [n], or <n>, {n}, [#n] when the issue's own text already uses [n] (see mailer.compose.text)
    found = re.findall(r"^(?:\[|<|\{|\[#)(\d+)(?:\]|>|\}) (\S+)$", rest, re.M)
    return body, [(int(n), url) for n, url in found]


def mark(text: str, n: int) -> tuple[str, ...]:
    """The ways the body can point at reference n, in the marker style the text uses."""
    style = re.search(r"^(\[#|\[|<|\{)1(?:\]|>|\}) ", text.rpartition("\nLinks:\n")[2], re.M)
    opening = style.group(1) if style else "["
    closing = {"[": "]", "[#": "]", "<": ">", "{": "}"}[opening]
    inner = f"{opening}{n}{closing}"
    return inner, f"[Image {inner[1:-1] if opening == '[' else inner}]"


def walk(tokens) -> list:
    out = []
    for token in tokens:
        out.append(token)
        if token.children:
            out.extend(walk(token.children))
    return out


def referenced(issue: Issue) -> list[str]:
    """The URLs the text numbers, in order of first use: links and images without alt text."""
    urls = []
    for token in walk(issue.tokens):
        if token.type == "link_open" and token.info != "auto":
            urls.append(token.attrs["href"])
        elif token.type == "image" and not token.content:
            urls.append(token.attrs["src"])
    return list(dict.fromkeys(urls))


def autolinks(issue: Issue) -> list[str]:
    """Labels of links written as bare URLs (linkify) or <autolinks>: shown as is in text."""
    found = []
    tokens = walk(issue.tokens)
    for i, token in enumerate(tokens):
        if token.type == "link_open" and token.info == "auto":
            found.append(tokens[i + 1].content)
    return found


def exempt(line: str) -> bool:
    """Lines allowed past 76 columns: references, URLs, and a single word too long to wrap."""
    stripped = line.strip()
    if re.match(r"^\[\d+\] ", stripped) or URLISH.search(stripped):
        return True
    tokens = stripped.split()
    while tokens and re.fullmatch(r"[-*>#]+|\d+\.", tokens[0]):
        tokens.pop(0)  # list markers, quote marks
    return len(tokens) <= 1


def squash(text: str) -> str:
    return " ".join(text.split())


def columns(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


# -- the seed and the corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_ISSUES, ids=lambda p: p.stem)
class TestEveryIssue:
    def test_no_html_in_text(self, path, built):
        _, email = built(path)
        assert "<p>" not in email.text
        assert "<a " not in email.text
        assert "</" not in email.text
        assert TAGS.findall(email.text) == []
        source_entities = set(ENTITIES.findall(path.read_text(encoding="utf-8")))
        assert set(ENTITIES.findall(email.text)) <= source_entities == set()

    def test_title_heads_the_text(self, path, built):
        issue, email = built(path)
        head = email.text.split("\n\n", 1)[0].split("\n")
        *title_lines, underline = head
        assert " ".join(title_lines) == issue.title
        assert all(columns(line) <= WIDTH for line in title_lines) or len(title_lines) == 1
        assert underline == "=" * max(columns(line) for line in title_lines)  # CJK counts 2

    def test_links_are_references_or_bare_urls(self, path, built):
        issue, email = built(path)
        body, refs = split_text(email.text)
        bare = autolinks(issue)
        urls = [url for _, url in refs]
        assert len(set(urls)) == len(urls)  # one number per distinct URL
        auto = {
            t.attrs["href"]
            for t in walk(issue.tokens)
            if t.type == "link_open" and t.info == "auto"
        }
        assert set(issue.links) - set(urls) == auto
        assert [n for n, _ in refs] == list(range(1, len(refs) + 1))
        for n, url in refs:
            assert url in issue.links or url in issue.images
            assert any(m in body for m in mark(email.text, n))
        flat = squash(body)
        for label in bare:
            assert label in flat

    def test_reference_urls_follow_the_markdown_order(self, path, built):
        issue, email = built(path)
        _, refs = split_text(email.text)
        assert [url for _, url in refs] == referenced(issue)

    def test_images_are_named(self, path, built):
        issue, email = built(path)
        assert email.text.count("[Image") == len(issue.images) == email.images
        assert email.text.count("[Image]") == 0  # each has alt text or a numbered URL

    def test_lines_fit_76_columns(self, path, built):
        _, email = built(path)
        lines = email.text.split("\n")[1:]  # the title line: see test_title_line_is_wrapped
        too_long = [line for line in lines if len(line) > WIDTH and not exempt(line)]
        assert too_long == []

    def test_emoji_are_kept(self, path, built):
        issue, email = built(path)
        visible = re.sub(r"<!--.*?-->", "", issue.body, flags=re.S)
        symbols = {c for c in visible if unicodedata.category(c) == "So" and ord(c) > 0x2000}
        assert symbols <= set(email.text)
        assert symbols <= set(email.html)

    def test_no_spacer_backslashes_or_carriage_returns(self, path, built):
        _, email = built(path)
        assert "\\\\" not in email.text
        assert "\r" not in email.text


# -- the seed -------------------------------------------------------------------------------------


def test_seed_text_has_no_mojibake(built):
    _, email = built(SEED)
    for junk in ("‚Ä", "üë", "Ã©", "\uf8ff"):
        assert junk not in email.text
    assert "Welcome back to the NLP Newsletter! 👋 This second issue covers" in squash(email.text)
    assert "—" in email.text
    assert "\\" not in email.text
    # 15 columns: the emoji takes two. `=` under an h1, `-` once the parser makes it an h2.
    assert "Publications 📙\n" + "=" * 15 + "\n" in email.text or (
        "Publications 📙\n" + "-" * 15 + "\n" in email.text
    )


def test_seed_counts(built):
    issue, email = built(SEED)
    body, refs = split_text(email.text)
    assert (len(issue.links), len(set(issue.links)), len(issue.images)) == (57, 51, 7)
    assert len(refs) == 58  # 51 distinct link URLs and the 7 images, none with alt text
    assert autolinks(issue) == []
    assert email.text.count("[Image]") == 0
    numbered = [int(n) for n in re.findall(r"\[Image (\d+)\]", body)]
    assert numbered == [1, 4, 10, 19, 25, 27, 46]
    assert [refs[n - 1][1] for n in numbered] == issue.images
    # the masthead line (name and date) under the title, then the issue
    assert re.search(
        r"=\n\nNLP Newsletter · [^\n]+\n\n\[Image 1\]\n\nWelcome back to the NLP", body
    )
    assert "*On trusting model’s uncertainty*" in body
    assert "(Read the paper here [2] and the summary here [3].)" in squash(body)
    # the summary's URL again, so its number again
    assert "[Image 4] image corruption — source [3] *Systematic generalization*" in squash(body)


def test_title_line_is_wrapped(built):
    issue, email = built(SEED)
    assert len(issue.title) > WIDTH
    head = email.text.split("\n\n", 1)[0].split("\n")
    assert all(len(line) <= WIDTH for line in head)
    assert squash(" ".join(head[:-1])) == issue.title


# -- the corpus specials --------------------------------------------------------------------------


def test_pt_br_comments_stay_out_of_the_text(built):
    source = PT_BR.read_text(encoding="utf-8")
    comments = re.findall(r"<!--(.*?)-->", source, re.S)
    assert len(comments) == 39
    _, email = built(PT_BR)
    flat = squash(email.text)
    for comment in comments:
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", comment).replace("*", "")
        assert " ".join(plain.split()[:6]) not in flat
    assert "Turing Natural Language Generation (T-NLG) is a 17-billion-parameter" not in flat
    assert "Miryam de Lhoneux released her Ph.D. thesis" not in flat
    assert "<!--" not in email.text and "-->" not in email.text


def test_zh_bare_angle_text_is_literal(built):
    _, email = built(ZH)
    assert (
        "<Systematic Generalization: What Is Required and Can It Be Learned?[3]>"
        "提出了模块模型和通用模型之间的比较" in squash(email.text)
    )
    assert "&lt;Systematic" not in email.text


def test_zh_text_is_wrapped_by_display_width(built):
    _, email = built(ZH)
    body, _ = split_text(email.text)
    too_wide = [
        line for line in body.split("\n")[1:] if columns(line) > WIDTH and not URLISH.search(line)
    ]
    assert too_wide == []


# -- render_plain on small inputs ------------------------------------------------------------------

SAMPLER = """---
title: T
---

Read [the paper](https://example.org/paper) and https://example.org/bare or <https://example.org/auto>.
Mail <mailto:me@example.org> or me@example.org.

**Bold**, *em*, ***both***, ~~gone~~ and `code`.

![A chart](https://example.org/c.png) ![](https://example.org/d.png)

> Quoted **text** with [a link](https://example.org/q).

- one
- two with [link](https://example.org/two)

3. three
4. four

| Model | Params |
|-------|-------:|
| BERT  | 110M   |

```
if a < b:
    print("&amp;")
```

<div><p>Raw <a href="https://example.org/raw">anchor</a> &amp;
<img src="https://example.org/r.png" alt="Raw pic"></p></div>

Line one\\
line two

<!-- secret comment -->
"""


@pytest.fixture(scope="module")
def sampler(tmp_path_factory) -> tuple[str, list[str]]:
    path = tmp_path_factory.mktemp("sampler") / "sampler.md"
    path.write_text(SAMPLER, encoding="utf-8")
    plain = render_plain(read(path).tokens)
    return plain.body, list(plain.urls)


def test_render_plain_links(sampler):
    text, urls = sampler
    flat = squash(text)
    assert "Read the paper [1] and https://example.org/bare or https://example.org/auto." in flat
    assert "Mail mailto:me@example.org or me@example.org." in flat
    assert urls == [
        "https://example.org/paper",
        "https://example.org/d.png",
        "https://example.org/q",
        "https://example.org/two",
        "https://example.org/raw",
    ]
    assert "> Quoted *text* with a link [3]." in text
    assert "- two with link [4]" in text
    assert "Raw anchor [5] & [Image: Raw pic]" in flat


def test_render_plain_inline_markup(sampler):
    text, _ = sampler
    assert "*Bold*, em, *both*, ~gone~ and `code`." in text
    assert "[Image: A chart] [Image 2]" in text


def test_render_plain_blocks(sampler):
    text, _ = sampler
    assert "- one\n- two with link [4]\n" in text
    assert "3. three\n4. four\n" in text
    assert "Model | Params\nBERT | 110M\n" in text
    assert '    if a < b:\n        print("&amp;")\n' in text  # code is shown as written
    assert "Line one\nline two\n" in text
    assert "secret" not in text


def test_references_format(tmp_path):
    path = tmp_path / "refs.md"
    path.write_text("---\ntitle: T\n---\n\n[a](https://a.example) [b](https://b.example)\n")
    assert render_plain(read(path).tokens).references == (
        "[1] https://a.example\n[2] https://b.example\n"
    )
    path.write_text("---\ntitle: T\n---\n\nNo links.\n")
    assert render_plain(read(path).tokens).references == ""


def test_long_paragraph_wraps_at_76(tmp_path):
    path = tmp_path / "long.md"
    path.write_text("---\ntitle: T\n---\n\n" + "word " * 100 + "\n", encoding="utf-8")
    text = render_plain(read(path).tokens).body
    lines = text.rstrip("\n").split("\n")
    assert len(lines) == 7
    assert all(len(line) <= 76 for line in lines)
    assert len(lines[0]) > 70
