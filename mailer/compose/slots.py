"""Per-reader slots: markers handed out while the templates render, filled per reader cheaply.

A per-person value is a slot in the rendered text: %%mailer:N%%, N indexing the Email's slots.
The email is rendered once; each reader's copy only cuts the parts at their slots and puts the
reader's values in (deliver/message.py), so no template runs per reader.
"""

from __future__ import annotations

import html as html_mod
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from mailer.compose.issue import Issue

# Only characters that survive MJML, lxml's attribute escaping and quoted-printable untouched.
SLOT_RE = re.compile(r"%%mailer:(\d+)%%")
_SLOT_LIKE = re.compile(r"%%mailer:[^%\s]*%%", re.I)

# The issue's own text must never reach a slot: "%%mailer:0%%" written in an issue would give
# each reader their own unsubscribe link, "%%mailer:99%%" would crash. Before rendering, a '%'
# that would start one ("%%mailer:") becomes LITERAL_PERCENT (a private-use character, which
# no text means); once a part is cut at its real slots, unescape() turns it back into '%', so
# the reader sees exactly what was written.
LITERAL_PERCENT = "\ue025"
_SLOT_START = re.compile(r"%(?=%mailer:)", re.I)
_ESCAPED = re.compile(
    # lxml writes a non-ASCII character in href and src as its UTF-8, percent-encoded
    f"(?:{LITERAL_PERCENT}|%EE%80%A5)(?=%mailer:)",
    re.I,
)


def marker(index: int) -> str:
    """The text of slot `index` in a rendered part."""
    return f"%%mailer:{index}%%"


def neutralise(text: str) -> str:
    """Issue text with no slot in it: the first '%' of every "%%mailer:" escaped."""
    return _SLOT_START.sub(LITERAL_PERCENT, text) if "%" in text else text


def unescape(piece: str) -> str:
    """A literal piece of a rendered part (between slots) as the reader gets it."""
    return _ESCAPED.sub("%", piece) if LITERAL_PERCENT in piece else piece


def escape_again(html: str) -> str:
    """Compiled HTML with every escaped '%' back as LITERAL_PERCENT (lxml percent-encodes it)."""
    return _ESCAPED.sub(LITERAL_PERCENT, html)


def _neutralise_value(value: Any) -> Any:
    """Front matter as the templates see it: every string in it neutralised."""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, Mapping):
        return {k: _neutralise_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_neutralise_value(v) for v in value)
    return value


def neutralised(issue: Issue) -> Issue:
    """The issue with slot syntax in its title, subject, preheader and front matter escaped."""
    meta = _neutralise_value(dict(issue.meta))
    return replace(
        issue,
        title=neutralise(issue.title),
        subject=neutralise(issue.subject),
        preheader=neutralise(issue.preheader),
        meta=MappingProxyType(meta),
    )


def fill_slots(content: str, values: list[str], *, escape: bool) -> str:
    """Put each slot's value in place (HTML-escaped for the HTML part); not the send hot path."""
    pieces = SLOT_RE.split(content)
    out = [unescape(pieces[0])]
    for index, literal in zip(pieces[1::2], pieces[2::2], strict=True):
        text = values[int(index)]
        out += (html_mod.escape(text, quote=True) if escape else text, unescape(literal))
    return "".join(out)


def altered(text: str) -> list[str]:
    """Slot-like text that is no slot: a Jinja filter (`subscriber.name | upper`) changed it."""
    return [m.group(0) for m in _SLOT_LIKE.finditer(text) if not SLOT_RE.fullmatch(m.group(0))]


@dataclass(frozen=True)
class Slot:
    """One per-person value: a subscriber field (or 'unsubscribe_url') and what to show if empty."""

    field: str
    fallback: str = ""


class SlotText(str):
    """The text of a slot, remembering which field it stands for (for the `fallback` filter)."""

    field: str


class Slots:
    """Hands out slot markers while the templates render."""

    def __init__(self, name_fallback: str) -> None:
        self.slots: list[Slot] = []
        self.name_fallback = name_fallback

    def __call__(self, field: str, fallback: str | None = None) -> SlotText:
        if fallback is None:
            fallback = self.name_fallback if field in ("name", "first_name") else ""
        slot = Slot(field, fallback)
        if slot not in self.slots:
            self.slots.append(slot)
        text = SlotText(marker(self.slots.index(slot)))
        text.field = field
        return text

    def fallback(self, value: Any, default: str) -> Any:
        """The `fallback` filter: a slot gets its own fallback; any other value `or default`."""
        return self(value.field, default) if isinstance(value, SlotText) else value or default


class Subscriber:
    """`subscriber.<column>` in a template: a slot filled per reader at send time."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots

    def __getattr__(self, field: str) -> SlotText:
        if field.startswith("_"):
            raise AttributeError(field)
        return self._slots(field)

    __getitem__ = __getattr__
