"""The plaintext twin: rendered from the parsed Markdown, never scraped from the HTML."""

from __future__ import annotations

import html
import re
import textwrap
import unicodedata
from collections.abc import Sequence
from html.parser import HTMLParser

from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

WIDTH = 76


class _Refs:
    """Numbered link references, listed at the end of the text."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.open_hrefs: list[str | None] = []  # raw <a> tags may open and close in separate tokens

    def add(self, url: str) -> int:
        self.urls.append(url)
        return len(self.urls)


def render_text(tokens: Sequence[Token], width: int = WIDTH) -> tuple[str, list[str]]:
    """Markdown tokens -> (plain text body, the link URLs its [n] references point at)."""
    refs = _Refs()
    root = SyntaxTreeNode(list(tokens))
    text = _blocks(root.children, refs, width)
    return text.strip("\n") + "\n", refs.urls


def references(urls: list[str]) -> str:
    """The list of numbered links that goes at the end of the text."""
    return "".join(f"[{n}] {url}\n" for n, url in enumerate(urls, 1))


def _blocks(nodes: Sequence[SyntaxTreeNode], refs: _Refs, width: int) -> str:
    parts = [_block(node, refs, width) for node in nodes]
    return "\n".join(p for p in parts if p.strip()) + "\n" if parts else ""


def _block(node: SyntaxTreeNode, refs: _Refs, width: int) -> str:
    kind = node.type
    if kind == "paragraph":
        return _wrap(_inline(node, refs), width)
    if kind == "heading":
        title = " ".join(_inline(node, refs).split())
        level = int(node.tag[1])
        if level <= 2:
            return f"{title}\n{('=' if level == 1 else '-') * min(len(title), width)}\n"
        return _wrap("#" * level + " " + title, width)
    if kind in ("bullet_list", "ordered_list"):
        start = int(node.attrs.get("start", 1) or 1)
        items = []
        for n, item in enumerate(node.children, start):
            marker = f"{n}. " if kind == "ordered_list" else "- "
            body = _blocks(item.children, refs, width - len(marker)).strip("\n")
            if item.children and all(c.type == "paragraph" for c in item.children):
                body = body.replace("\n\n", "\n")  # tight lists stay tight
            pad = " " * len(marker)
            items.append(marker + body.replace("\n", "\n" + pad).replace(pad + "\n", "\n"))
        return "\n".join(items) + "\n"
    if kind == "blockquote":
        inner = _blocks(node.children, refs, width - 2).strip("\n")
        return "\n".join(("> " + line).rstrip() for line in inner.split("\n")) + "\n"
    if kind in ("code_block", "fence"):
        return "\n".join("    " + line for line in node.content.rstrip("\n").split("\n")) + "\n"
    if kind == "hr":
        return "-" * 20 + "\n"
    if kind == "table":
        return _table(node, refs)
    if kind == "html_block":
        return _wrap(_html_text(node.content, refs), width)
    return _blocks(node.children, refs, width)


def _table(node: SyntaxTreeNode, refs: _Refs) -> str:
    rows = []
    for section in node.children:
        for row in section.children:
            rows.append(" | ".join(" ".join(_inline(c, refs).split()) for c in row.children))
    return "\n".join(rows) + "\n"


def _inline(node: SyntaxTreeNode, refs: _Refs) -> str:
    out: list[str] = []
    for child in node.children:
        kind = child.type
        if kind == "inline":
            out.append(_inline(child, refs))
        elif kind == "text":
            out.append(child.content)
        elif kind == "code_inline":
            out.append(f"`{child.content}`")
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "image":
            alt = " ".join(child.content.split())
            out.append(f"[Image: {alt}]" if alt else "[Image]")
        elif kind == "link":
            label = _inline(child, refs)
            href = str(child.attrs.get("href", ""))
            if child.info == "auto" or label == href or f"mailto:{label}" == href:
                out.append(label)
            else:
                out.append(f"{label} [{refs.add(href)}]")
        elif kind == "strong":
            out.append(f"*{_inline(child, refs)}*")
        elif kind == "s":
            out.append(f"~{_inline(child, refs)}~")
        elif kind == "html_inline":
            out.append(_html_text(child.content, refs, inline=True))
        else:  # em and anything new: the words matter, the markup does not
            out.append(_inline(child, refs))
    return "".join(out)


def _wrap(text: str, width: int) -> str:
    lines = []
    for line in text.split("\n"):
        if _WIDE.search(line):
            lines.extend(_wrap_wide(line, width) or [""])
        else:
            lines.extend(
                textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""]
            )
    return "\n".join(lines).strip("\n") + "\n"


# Chinese, Japanese and Korean text has no spaces to break at: a line may break between any
# two wide characters, and each of them takes two columns. A URL is never broken.
_WIDE_RANGES = (
    "\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6"
)
_WIDE = re.compile(f"[{_WIDE_RANGES}]")
_ATOM = re.compile(rf"\s+|(?:https?|mailto|ftp):\S+|[{_WIDE_RANGES}]|[^\s{_WIDE_RANGES}]+")


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap_wide(line: str, width: int) -> list[str]:
    """Greedy wrapping that may break between wide characters as well as at spaces."""
    lines: list[str] = []
    current, used = "", 0
    for atom in _ATOM.findall(line.strip()):
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

    BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table"})

    def __init__(self, refs: _Refs) -> None:
        super().__init__(convert_charrefs=True)
        self.refs = refs
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("style", "script", "head", "title"):
            self.skip += 1
        elif tag == "img":
            alt = " ".join((found.get("alt") or "").split())
            self.parts.append(f"[Image: {alt}]" if alt else "[Image]")
        elif tag == "a":
            self.refs.open_hrefs.append(found.get("href"))
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag == "a" and self.refs.open_hrefs:
            href = self.refs.open_hrefs.pop()
            if href and not href.startswith("#"):
                self.parts.append(f" [{self.refs.add(href)}]")
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def _html_text(fragment: str, refs: _Refs, inline: bool = False) -> str:
    parser = _HTMLText(refs)
    parser.feed(fragment)
    parser.close()
    text = html.unescape("".join(parser.parts))
    if inline:
        return text
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()
