"""The plaintext twin: rendered from the parsed Markdown, never scraped from the HTML."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser

from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

WIDTH = 76
# Reference markers as (open, close). An issue may number its own citations [1]: the first
# style whose `open digits close` (or `open ^digits close`) its text never writes is used.
MARKERS = (("[", "]"), ("<", ">"), ("{", "}"), ("[#", "]"))
_KEEP = "\U000f0020"  # a space that wrapping may not break at; a plain space once wrapped
# Raw HTML: these tags start a new line, these a new paragraph (one line, within a paragraph).
_LINE_TAGS = frozenset({"br", "tr", "li", "dt", "dd"})
_BLOCK_TAGS = frozenset(
    {"p", "div", "table", "ul", "ol", "dl", "hr", "blockquote", "pre", "details", "summary"}
    | {"figure", "figcaption", "section", "article", "header", "footer", "center", "address"}
    | {"h1", "h2", "h3", "h4", "h5", "h6"}
)
_HIDDEN = frozenset({"style", "script", "head", "title", "template"})


@dataclass(frozen=True)
class Plain:
    """The text of an issue: its body, the Links list, and the URLs that list numbers."""

    body: str
    references: str
    urls: tuple[str, ...]


class _State:
    """What rendering one issue keeps: the marker style, numbered URLs, open raw HTML."""

    def __init__(self, marker: tuple[str, str], field: Callable[[Token], str] | None) -> None:
        self.open, self.close = marker
        self.field = field  # a merge field's placeholder (None: the field as written)
        self.urls: list[str] = []
        self.numbers: dict[str, int] = {}
        self.links = 0  # inside a link's label
        self.open_hrefs: list[str | None] = []  # raw <a> tags may open and close in two tokens
        self.hidden = 0  # inside raw <style>, <script>...
        self.cells = 0  # raw <td>s so far in this row

    def mark(self, label: int | str) -> str:
        return f"{self.open}{label}{self.close}"

    def ref(self, url: str) -> str:
        """The marker of a URL: one number per distinct URL, in order of first use."""
        if url not in self.numbers:
            self.urls.append(url)
            self.numbers[url] = len(self.urls)
        return self.mark(self.numbers[url])

    def image(self, alt: str, src: str) -> str:
        """[Image: alt], or [Image 3] with its URL in the Links list, or inside a link [Image]."""
        alt = " ".join(alt.split())
        if alt:
            return f"[Image: {alt}]"
        if self.links or self.open_hrefs or not src or src.startswith("data:"):
            return "[Image]"  # a linked image: the link's own marker follows it
        mark = self.ref(src)
        return f"[Image{_KEEP}{mark[1:-1] if mark.startswith('[') else mark}]"


def render_plain(
    tokens: Sequence[Token], width: int = WIDTH, *, field: Callable[[Token], str] | None = None
) -> Plain:
    """Markdown tokens -> the text, with markers that cannot be taken for the issue's own.

    `field` gives each merge field's text (compose.fields.Placeholders); without it, a field
    stays as written.
    """
    return _render(tokens, width, _marker(tokens), field)


def _references(urls: Sequence[str], marker: tuple[str, str]) -> str:
    return "".join(f"{marker[0]}{n}{marker[1]} {url}\n" for n, url in enumerate(urls, 1))


def _marker(tokens: Sequence[Token]) -> tuple[str, str]:
    written = "\n".join(t.content for t in _walk(tokens) if t.type != "inline")
    for opening, closing in MARKERS:
        if not re.search(rf"{re.escape(opening)}\^?\d+{re.escape(closing)}", written):
            return opening, closing
    return MARKERS[-1]


def _walk(tokens: Sequence[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        yield from _walk(token.children or ())


def _render(
    tokens: Sequence[Token],
    width: int,
    marker: tuple[str, str],
    field: Callable[[Token], str] | None,
) -> Plain:
    state = _State(marker, field)
    body = _blocks(SyntaxTreeNode(list(tokens)).children, state, width)
    body = body.strip("\n").replace(_KEEP, " ") + "\n"
    return Plain(body, _references(state.urls, marker), tuple(state.urls))


def _blocks(nodes: Sequence[SyntaxTreeNode], state: _State, width: int) -> str:
    parts = [_block(node, state, width) for node in nodes]
    return "\n".join(p for p in parts if p.strip()) + "\n" if parts else ""


def _block(node: SyntaxTreeNode, state: _State, width: int) -> str:
    kind = node.type
    if kind == "paragraph":
        return _wrap(_inline(node, state), width)
    if kind == "heading":
        return _heading(node, state, width)
    if kind in ("bullet_list", "ordered_list"):
        start = int(node.attrs.get("start", 1) or 1)
        items = []
        for n, item in enumerate(node.children, start):
            marker = f"{n}. " if kind == "ordered_list" else "- "
            tight = bool(item.children) and all(c.type == "paragraph" for c in item.children)
            items.append(_item(marker, item.children, state, width, tight))
        return "\n".join(items) + "\n"
    if kind == "blockquote":
        inner = _blocks(node.children, state, width - 2).strip("\n")
        return "\n".join(("> " + line).rstrip() for line in inner.split("\n")) + "\n"
    if kind in ("code_block", "fence"):
        return "\n".join("    " + line for line in node.content.rstrip("\n").split("\n")) + "\n"
    if kind == "hr":
        return "-" * 20 + "\n"
    if kind == "table":
        return _table(node, state)
    if kind == "html_block":
        return _wrap(_html_text(node.content, state), width)
    if kind == "footnote_block":
        notes = [
            (state.mark(f"^{int(note.meta['id']) + 1}") + " ", note.children)
            for note in node.children
        ]
        loose = any(len([c for c in kids if c.type != "footnote_anchor"]) > 1 for _, kids in notes)
        listed = [_item(mark, kids, state, width, tight=False) for mark, kids in notes]
        return "Notes:\n" + ("\n\n" if loose else "\n").join(listed) + "\n"
    if kind == "footnote_anchor":
        return ""  # the HTML's way back to the reference
    return _blocks(node.children, state, width)


def _heading(node: SyntaxTreeNode, state: _State, width: int) -> str:
    """h1 and h2 underlined with = and - as long as their longest line; below, *emphasised*."""
    title = " ".join(_inline(node, state, star="").split())
    level = int(node.tag[1])
    if not title:
        return ""
    if level > 2:
        return _wrap(f"*{title}*", width)
    return underlined(title, "=" if level == 1 else "-", width) + "\n"


def underlined(title: str, char: str = "=", width: int = WIDTH) -> str:
    """A title wrapped to width and underlined as wide as its longest line (CJK counts 2)."""
    lines = _wrap(" ".join(title.split()), width).rstrip("\n").split("\n")
    longest = max(_columns(line) for line in lines)
    return "\n".join(lines) + "\n" + char * min(longest, width)


def _item(
    marker: str, children: Sequence[SyntaxTreeNode], state: _State, width: int, tight: bool
) -> str:
    """A list item or a note: the marker, then its blocks indented to line up after it."""
    body = _blocks(children, state, width - len(marker)).strip("\n")
    if tight:
        body = body.replace("\n\n", "\n")
    pad = " " * len(marker)
    return marker + body.replace("\n", "\n" + pad).replace(pad + "\n", "\n")


def _table(node: SyntaxTreeNode, state: _State) -> str:
    rows = []
    for section in node.children:
        for row in section.children:
            rows.append(" | ".join(" ".join(_inline(c, state).split()) for c in row.children))
    return "\n".join(rows) + "\n"


def _inline(node: SyntaxTreeNode, state: _State, star: str = "*") -> str:
    out: list[str] = []
    for child in node.children:
        kind = child.type
        if kind == "text":
            out.append(child.content)
        elif kind == "code_inline":
            out.append(f"`{child.content}`")
        elif kind == "merge_field":
            token = child.token
            out.append(state.field(token) if state.field and token else child.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "image":
            out.append(state.image(child.content, str(child.attrs.get("src", ""))))
        elif kind == "link":
            state.links += 1
            label = _inline(child, state, star)
            state.links -= 1
            href = str(child.attrs.get("href", ""))
            plain = child.info == "auto" or label == href or f"mailto:{label}" == href
            out.append(label if plain or _unlinkable(href) else f"{label} {state.ref(href)}")
        elif kind == "footnote_ref":
            out.append(state.mark(f"^{int(child.meta['id']) + 1}"))
        elif kind == "strong":
            out.append(f"{star}{_inline(child, state, star)}{star}")
        elif kind == "s":
            out.append(f"~{_inline(child, state, star)}~")
        elif kind == "html_inline":
            out.append(_html_text(child.content, state, inline=True))
        else:  # inline, em and anything new: the words matter, the markup does not
            out.append(_inline(child, state, star))
    return "".join(out)


def _unlinkable(href: str) -> bool:
    """No reference for an empty link or one to a place in the HTML page."""
    return not href.strip() or href.startswith("#")


def _wrap(text: str, width: int) -> str:
    lines = []
    for line in text.split("\n"):
        line = line.strip(" \t")  # a raw <br> may leave the next line's indent
        if not line.isascii() and _wide().search(line):
            lines.extend(_wrap_wide(line, width) or [""])
        else:
            wrapped = textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False)
            lines.extend(wrapped or [""])
    return "\n".join(lines).strip("\n") + "\n"


# Chinese, Japanese and Korean text has no spaces to break at: a line may break between any
# two wide characters, and each of them takes two columns. A URL is never broken.
_WIDE_RANGES = (
    "\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6"
)


# Compiled on first use: each of these classes takes ~2 ms to compile, and only a line with a
# non-ASCII character needs the first, only a line with a wide character the second.
@cache
def _wide() -> re.Pattern[str]:
    return re.compile(f"[{_WIDE_RANGES}]")


@cache
def _atoms() -> re.Pattern[str]:
    return re.compile(rf"\s+|(?:https?|mailto|ftp):\S+|[{_WIDE_RANGES}]|[^\s{_WIDE_RANGES}]+")


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap_wide(line: str, width: int) -> list[str]:
    """Greedy wrapping that may break between wide characters as well as at spaces."""
    lines: list[str] = []
    current, used = "", 0
    for atom in _atoms().findall(line.strip()):
        if atom.isspace():
            if current:
                current, used = current + " ", used + 1
            continue
        size = _columns(atom)
        if used + size > width and current.strip():
            lines.append(current.rstrip())
            current, used = "", 0
        current, used = current + atom, used + size
    if current.strip():
        lines.append(current.rstrip())
    return lines


class _HTMLText(HTMLParser):
    """Text of a raw HTML fragment: tags dropped, links referenced, images named."""

    def __init__(self, state: _State, inline: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.state = state
        self.parts: list[str] = []
        self.paragraph = "\n" if inline else "\n\n"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found, state = dict(attrs), self.state
        if tag in _HIDDEN:
            state.hidden += 1
        elif tag == "img":
            self.parts.append(state.image(found.get("alt") or "", found.get("src") or ""))
        elif tag == "a":
            state.open_hrefs.append(found.get("href"))
        elif tag in ("td", "th"):
            self.parts.append(" | " if state.cells else " ")
            state.cells += 1
        elif tag in _LINE_TAGS:
            state.cells = 0
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append(self.paragraph)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":  # <a/> opens nothing
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        state = self.state
        if tag in _HIDDEN:
            state.hidden = max(0, state.hidden - 1)
        elif tag == "a" and state.open_hrefs:
            href = state.open_hrefs.pop()
            if href and not _unlinkable(href):
                self.parts.append(f" {state.ref(href)}")
        elif tag in _BLOCK_TAGS:
            self.parts.append(self.paragraph)

    def handle_data(self, data: str) -> None:
        if not self.state.hidden:
            self.parts.append(re.sub(r"\s+", " ", data))  # in HTML a newline is a space


def _html_text(fragment: str, state: _State, inline: bool = False) -> str:
    parser = _HTMLText(state, inline)
    parser.feed(fragment)
    parser.close()
    text = "".join(parser.parts)  # character references are already converted
    if inline:
        return text
    text = re.sub(r" *\n *", "\n", re.sub(r" +", " ", text))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
