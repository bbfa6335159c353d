"""The core rules markdown-it runs on an issue's tokens once it has parsed them.

Image attributes are kept only as pixel widths and heights, `[label]()` loses its empty link,
and headings start at h2 (a paragraph that is only bold becomes one: see `headings`). What the
author should know goes into `env[FINDINGS]` (compose.issue turns it into notices).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it.rules_core import StateCore
from markdown_it.token import Token

FINDINGS = "mailer.findings"  # env key: list[Finding]
_PIXELS = re.compile(r"\s*(\d{1,5})\s*(?:px)?\s*", re.I)
BOLD_HEADING_LIMIT = 150  # longer bold paragraphs stay paragraphs


@dataclass(frozen=True)
class Finding:
    """Something a core rule changed that the author should hear about."""

    code: str
    message: str
    line: int | None  # 0-based line of the parsed text (map it through env[LINES])


def _find(state: StateCore, code: str, message: str, line: int | None) -> None:
    state.env.setdefault(FINDINGS, []).append(Finding(code, message, line))


def inline_lines(block: Token) -> list[tuple[Token, int | None]]:
    """An inline token's children, each with its 0-based line in the parsed text."""
    if not block.map:
        return [(child, None) for child in block.children or []]
    line = block.map[0]
    out: list[tuple[Token, int | None]] = []
    for child in block.children or []:
        out.append((child, line))
        if child.type in ("softbreak", "hardbreak"):
            line += 1
        elif child.type == "html_inline":
            line += child.content.count("\n")
    return out


def image_sizes(state: StateCore) -> None:
    """Keep an image's width and height when they are pixels; drop every other attribute."""
    for block in state.tokens:
        if block.type != "inline":
            continue
        for token, line in inline_lines(block):
            if token.type != "image":
                continue
            dropped = dict(token.meta.pop("insecure_attrs", None) or {})
            for name in ("width", "height"):
                if name in token.attrs:
                    pixels = _PIXELS.fullmatch(str(token.attrs[name]))
                    if pixels:
                        token.attrs[name] = pixels.group(1)
                    else:
                        dropped[name] = token.attrs.pop(name)
            if dropped:
                what = ", ".join(f"{k}={v}" for k, v in dropped.items())
                message = f"image attribute dropped (only width and height, in pixels): {what}"
                _find(state, "attribute", message, line)


def drop_empty_links(state: StateCore) -> None:
    """`[label]()` is no link: the label stays, as text."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        kept: list[Token] = []
        closing: list[bool] = []  # per open link: was it dropped?
        for i, (token, line) in enumerate(inline_lines(block)):
            if token.type == "link_open":
                empty = not str(token.attrs.get("href", "")).strip()
                closing.append(empty)
                if empty:
                    label = _label(block.children[i + 1 :])
                    _find(state, "empty-link", f"link with an empty target: [{label}]()", line)
                    continue
            elif token.type == "link_close" and closing and closing.pop():
                continue
            kept.append(token)
        block.children = kept


def _label(after: list[Token]) -> str:
    """The words of a link, from the tokens after its link_open."""
    words: list[str] = []
    depth = 0
    for token in after:
        depth += token.nesting if token.type in ("link_open", "link_close") else 0
        if depth < 0:
            break
        words.append(token.content if token.type in ("text", "code_inline") else "")
    return "".join(words)


def headings(state: StateCore) -> None:
    """Headings for screen readers: the title is the h1, so the body's start at h2.

    The topmost heading level the body uses becomes h2 and the others follow (capped at h6).
    A top-level paragraph that is only bold or bold italic (`**X**`, `***X***`, `*__X__*`),
    one line of at most BOLD_HEADING_LIMIT characters, is how Jekyll newsletters write a
    sub-heading: it becomes a heading one level below, h3, or h2 if the body has no headings.
    """
    tokens = state.tokens
    levels = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
    shift = 2 - min(levels) if levels else 0
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            _set_level(token, int(token.tag[1]) + shift)
    level = 3 if levels else 2
    for i, token in enumerate(tokens[:-2]):
        if token.type == "paragraph_open" and token.level == 0:
            bold = _bold_only(tokens[i + 1])
            if bold is not None:
                inner, markup = bold
                token.type, tokens[i + 2].type = "heading_open", "heading_close"
                _set_level(token, level)
                _set_level(tokens[i + 2], level)
                content = tokens[i + 1].content.strip()
                tokens[i + 1].children = inner
                tokens[i + 1].content = content[markup:-markup].strip()


def _set_level(token: Token, level: int) -> None:
    level = max(2, min(6, level))
    token.tag = f"h{level}"
    token.markup = "#" * level


_WRAPPERS = (("strong",), ("em", "strong"), ("strong", "em"))


def _bold_only(inline: Token) -> tuple[list[Token], int] | None:
    """The children inside a paragraph's only bold (or bold italic) wrapper, if that is all,
    and the length of the wrapper's markup on each side."""
    core = _strip_blank(inline.children or [])
    wrappers: tuple[str, ...] = ()
    markup = 0
    while len(core) >= 2 and core[0].type in ("strong_open", "em_open"):
        kind = core[0].type[: -len("_open")]
        if _closing_index(core, kind) != len(core) - 1:
            return None
        wrappers += (kind,)
        markup += len(core[0].markup)
        core = _strip_blank(core[1:-1])
    if wrappers not in _WRAPPERS or not core:
        return None
    if any(t.type in ("softbreak", "hardbreak", "image") for t in core):
        return None
    text = "".join(t.content for t in core if t.type in ("text", "code_inline"))
    return (core, markup) if text.strip() and len(text) <= BOLD_HEADING_LIMIT else None


def _strip_blank(tokens: Sequence[Token]) -> list[Token]:
    out = list(tokens)
    while out and out[0].type == "text" and not out[0].content.strip():
        out.pop(0)
    while out and out[-1].type == "text" and not out[-1].content.strip():
        out.pop()
    return out


def _closing_index(tokens: list[Token], kind: str) -> int:
    depth = 0
    for i, token in enumerate(tokens):
        if token.type == f"{kind}_open":
            depth += 1
        elif token.type == f"{kind}_close":
            depth -= 1
            if depth == 0:
                return i
    return -1
