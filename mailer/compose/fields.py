"""Merge fields in an issue's text: `{{ subscriber.name }}`, filled per reader through slots.

The grammar is exactly this, in Markdown text (not in code, raw HTML or link targets):

    {{ subscriber.name }}                   the reader's name (name_fallback when empty)
    {{ subscriber.<column> }}               a column of the subscriber list (email, city...)
    {{ subscriber.name | default("there") }}  the text to show when the reader's is empty

Anything else between `{{ }}` stays text, as any leftover template syntax does (a notice at
build time, a refusal at send time): an issue never runs Jinja. The core rule `tokens` turns
each field into a `merge_field` token; the renderers turn it into a placeholder, and once the
rendered body is neutralised (compose/slots.py) each placeholder becomes the reader's slot.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from mailer.errors import InputError

TOKEN = "merge_field"
# The subscriber fields every list has; the rest are its own columns.
BUILT_IN = ("email", "name", "first_name")
FIELD = re.compile(
    r"\{\{\s*subscriber\.([A-Za-z_][A-Za-z0-9_]*)\s*"
    r"""(?:\|\s*default\(\s*(?:"([^"\n]*)"|'([^'\n]*)')\s*\)\s*)?\}\}"""
)


@dataclass(frozen=True)
class MergeField:
    """One field written in an issue: which column, its default, and where."""

    field: str
    default: str | None  # None: none given (name and first_name then get name_fallback)
    line: int | None  # the issue file's line
    written: str  # as the author wrote it


def _parts(match: re.Match[str]) -> tuple[str, str | None]:
    double, single = match.group(2), match.group(3)
    return match.group(1).lower(), double if double is not None else single


def tokens(state: StateCore) -> None:
    """Core rule: every merge field in a text token becomes a `merge_field` token."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        if not any(c.type == "text" and "{{" in c.content for c in block.children):
            continue
        children: list[Token] = []
        for child in block.children:
            if child.type != "text" or "{{" not in child.content:
                children.append(child)
                continue
            pos = 0
            for match in FIELD.finditer(child.content):
                if match.start() > pos:
                    children.append(_text(child, child.content[pos : match.start()]))
                field, default = _parts(match)
                token = Token(TOKEN, "", 0, content=match.group(0), level=child.level)
                token.meta = {"field": field, "default": default}
                children.append(token)
                pos = match.end()
            if pos < len(child.content):
                children.append(_text(child, child.content[pos:]))
        block.children = children


def _text(like: Token, content: str) -> Token:
    return Token("text", "", 0, content=content, level=like.level)


def literal(
    renderer: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """The shared parser's render rule (a method): a field as written, where no slot goes."""
    return html.escape(tokens[idx].content, quote=False)


class Placeholders:
    """Hands out a placeholder per field while the body renders, then puts slots in place.

    A placeholder carries a random tag, so no text an issue holds can pose as one.
    """

    def __init__(self, slot: Callable[[str, str | None], str]) -> None:
        self._slot = slot  # (field, default) -> the slot's marker (compose.slots.Slots)
        self._tag = secrets.token_hex(6)
        self._pattern = re.compile(f"\ue027{self._tag}:(\\d+)\ue027")
        self._fields: list[tuple[str, str | None]] = []

    def __call__(self, token: Token) -> str:
        """The placeholder of one `merge_field` token."""
        key = (str(token.meta["field"]), token.meta.get("default"))
        if key not in self._fields:
            self._fields.append(key)
        return f"\ue027{self._tag}:{self._fields.index(key)}\ue027"

    def rules(self) -> dict[str, Any]:
        """The HTML renderer's rule for a field: its placeholder."""

        def rule(tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
            return self(tokens[idx])

        return {TOKEN: rule}

    def fill(self, text: str) -> str:
        """Rendered (and neutralised) text with each placeholder turned into its slot."""
        return self._pattern.sub(lambda m: str(self._slot(*self._fields[int(m.group(1))])), text)

    def words(self, text: str) -> str:
        """Text with each placeholder as one word (for counting words)."""
        return self._pattern.sub(" name ", text)

    def in_text(self, text: str) -> str:
        """Fields written in plain text (a preheader taken from the body), as slots."""
        return FIELD.sub(lambda m: str(self._slot(*_parts(m))), text)


def fill_text(text: str, values: dict[str, str], name_fallback: str) -> str:
    """Fields written in plain text filled from one reader's values (for showing a preheader)."""

    def one(match: re.Match[str]) -> str:
        field, default = _parts(match)
        if default is None:
            default = name_fallback if field in ("name", "first_name") else ""
        return values.get(field) or default

    return FIELD.sub(one, text)


def check(fields: Iterable[MergeField], columns: Iterable[str], *, path: Path, source: str) -> None:
    """InputError (exit 65) for the first field the list does not have: its line, and the
    fields that exist. `source` says where the columns come from (subscribers.csv)."""
    known = [*BUILT_IN, *(c for c in columns if c not in BUILT_IN)]
    for found in fields:
        if found.field not in known:
            listed = ", ".join(f"subscriber.{k}" for k in known)
            raise InputError(
                f"unknown merge field subscriber.{found.field}; the fields are {listed} ({source})",
                path=path,
                line=found.line,
            )
