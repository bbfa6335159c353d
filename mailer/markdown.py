"""An issue's Markdown dialect: CommonMark, tables, strikethrough, linkify, Jekyll habits."""

from __future__ import annotations

import re
from functools import cache

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

_COMMENT = re.compile(r"<!--.*?-->", re.S)
# kramdown writes a hard break as `\\`; Jekyll newsletters put it alone on a line as a spacer.
_SPACER = re.compile(r"^ {0,3}\\\\[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@cache
def parser() -> MarkdownIt:
    """The one parser every issue goes through (built once; markdown-it parsers are reusable)."""
    md = MarkdownIt("commonmark", {"html": True, "linkify": True, "typographer": False})
    md.enable(["table", "strikethrough", "linkify"])
    md.core.ruler.push("drop_html_comments", _drop_html_comments)
    return md


def drop_spacers(text: str) -> str:
    """Turn kramdown's lone `\\\\` spacer lines into blank lines, outside fenced code."""
    out = []
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if match and (fence is None or match.group(1)[0] == fence[0]):
            fence = None if fence else match.group(1)
        elif fence is None and _SPACER.match(line):
            line = ""
        out.append(line)
    return "\n".join(out)


def _drop_html_comments(state: StateCore) -> None:
    """HTML comments hold notes and translations' originals: they never reach a reader."""
    kept: list[Token] = []
    for token in state.tokens:
        if token.type == "html_block":
            token.content = _COMMENT.sub("", token.content)
            if not token.content.strip():
                continue
        elif token.type == "inline" and token.children:
            token.children = [
                child
                for child in token.children
                if not (child.type == "html_inline" and _COMMENT.fullmatch(child.content.strip()))
            ]
        kept.append(token)
    state.tokens = kept
