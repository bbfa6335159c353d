"""The issue as written: its elements in reading order with their lines, for origins."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree  # type: ignore[import-untyped]
from lxml import html as lxml_html
from markdown_it.token import Token

from mailer.compose.issue import Issue, located
from mailer.lint.css import declarations, norm_value


@dataclass(frozen=True, eq=False)
class _IElem:
    """An element the issue wrote: raw HTML, or what a Markdown token becomes."""

    tag: str
    line: int | None
    raw: bool  # written as HTML in the issue
    decls: Mapping[str, str] = field(default_factory=dict)  # style="" (normalised values)
    attrs: frozenset[str] = frozenset()  # the attributes written in the issue's HTML


class IssueSource:
    """The issue's elements in reading order, with their lines in the issue file."""

    def __init__(self, issue: Issue, content_class: str | None, doc: Any) -> None:
        self.path = issue.path
        self.elements: list[_IElem] = []
        self.images: dict[str, list[int | None]] = {}
        self.links: dict[str, list[int | None]] = {}
        for token, line in located(issue.tokens, issue.lines):
            self._token(token, line)
        self.by_tag: dict[str, list[_IElem]] = {}
        for element in self.elements:
            self.by_tag.setdefault(element.tag, []).append(element)
        self.root = _content_root(doc, content_class)
        self.inside: dict[Any, int] = {}  # built element -> its index among its tag, in content
        self._same_url: dict[tuple[str, str], list[Any]] = {}
        if self.root is not None:
            counts: dict[str, int] = {}
            for el in self.root.iterdescendants():
                if isinstance(el.tag, str):
                    tag = el.tag.lower()
                    self.inside[el] = counts.get(tag, 0)
                    counts[tag] = counts.get(tag, 0) + 1

    def _token(self, token: Token, line: int | None) -> None:
        if token.type in ("html_block", "html_inline"):
            self._raw(token.content, line)
            return
        if token.type == "image":
            self.images.setdefault(str(token.attrs.get("src", "")), []).append(line)
        if token.type == "link_open":
            self.links.setdefault(str(token.attrs.get("href", "")), []).append(line)
        if token.type in ("fence", "code_block"):
            self.elements += [_IElem("pre", line, False), _IElem("code", line, False)]
        elif token.tag and token.nesting >= 0 and not token.hidden:  # tight lists: no <p>
            tag = "img" if token.type == "image" else token.tag
            self.elements.append(_IElem(tag, line, False))

    def _raw(self, content: str, line: int | None) -> None:
        if not re.search(r"<[a-zA-Z]", content):
            return
        try:
            parts = lxml_html.fragments_fromstring(content)
        except (etree.ParserError, ValueError):
            return
        for part in parts:
            if not hasattr(part, "iter"):
                continue
            for el in part.iter():
                if not isinstance(el.tag, str):
                    continue
                where = line + (el.sourceline or 1) - 1 if line is not None else None
                attrs = {k.lower(): v for k, v in el.attrib.items()}
                decls = _style_decls(attrs.get("style", ""))
                self.elements.append(_IElem(el.tag.lower(), where, True, decls, frozenset(attrs)))
                if el.tag.lower() == "img":
                    self.images.setdefault(attrs.get("src", ""), []).append(where)
                if el.tag.lower() == "a" and "href" in attrs:
                    self.links.setdefault(attrs["href"], []).append(where)

    def element(self, el: Any) -> _IElem | None:
        """The issue element a built element inside the content came from, if one can tell."""
        index = self.inside.get(el)
        if index is None:
            return None
        tag = el.tag.lower()
        by_url = {"img": ("src", self.images), "a": ("href", self.links)}
        if tag in by_url:
            attr, lines = by_url[tag]
            url = el.get(attr)
            if url in lines:
                line = self._nth(el, tag, attr, lines[url])
                same = [e for e in self.by_tag.get(tag, []) if e.line == line]
                return same[0] if same else _IElem(tag, line, False)
        same = self.by_tag.get(tag, [])
        if not same:
            return None
        return same[index] if index < len(same) else same[-1]

    def _nth(self, el: Any, tag: str, attr: str, lines: list[int | None]) -> int | None:
        """The line of this element among the issue's elements with the same URL."""
        key = (tag, el.get(attr))
        if key not in self._same_url:
            self._same_url[key] = [e for e in self.root.iter(tag) if e.get(attr) == el.get(attr)]
        same = self._same_url[key]
        index = same.index(el) if el in same else 0
        return lines[min(index, len(lines) - 1)]

    def contains(self, el: Any) -> bool:
        return el in self.inside


def _content_root(doc: Any, css_class: str | None) -> Any:
    """The element the issue's content was rendered into (inside the component holding it)."""
    if not css_class:
        return None
    found = doc.xpath(
        "//*[contains(concat(' ', normalize-space(@class), ' '), $c)]", c=f" {css_class} "
    )
    if not found:
        return None
    holder = found[0]
    inner = [c for c in holder if isinstance(c.tag, str) and c.tag.lower() == "div"]
    return inner[0] if inner else holder


def _style_decls(style: str) -> dict[str, str]:
    return {name: norm_value(value) for name, value, _ in declarations(style)}
