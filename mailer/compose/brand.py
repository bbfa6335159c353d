"""The newsletter's look in the built-in template: masthead, accent shades, date and number."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from mailer.compose.issue import Issue
from mailer.config import DARK_BACKGROUND
from mailer.values import readable_shade, text_on
from mailer.when import now

# Links in the built-in template before anyone picks a colour: a blue readable on white.
DEFAULT_ACCENT = "#0b62d6"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_MONTHS: tuple[str, ...] = ("January", "February", "March", "April", "May", "June", "July")
_MONTHS += ("August", "September", "October", "November", "December")
# English readers who write the day first: 12 March 2026 (the rest of English: March 12, 2026).
_DAY_FIRST = ("en-gb", "en-au", "en-nz", "en-ie", "en-in", "en-za")


@dataclass(frozen=True)
class Brand:
    """What the template shows of the newsletter itself, every colour readable where used."""

    name: str
    logo: str  # an https URL, or "" for the name as a wordmark
    accent: str  # links, rules and buttons on the light card (as configured)
    accent_dark: str  # the same on the dark-mode card: the configured colour or a lighter shade
    on_accent: str  # a button's label on `accent`
    on_accent_dark: str  # ... and on `accent_dark`
    dateline: str  # "Issue #3 · March 12, 2026"
    subscribe_url: str


def brand(issue: Issue, *, name: str, logo: str, accent_color: str, subscribe_url: str) -> Brand:
    """The Brand for one issue: settings for the look, front matter for the dateline."""
    accent = (accent_color or DEFAULT_ACCENT).lower()
    dark = readable_shade(accent, DARK_BACKGROUND)
    return Brand(
        name=name,
        logo=logo,
        accent=accent,
        accent_dark=dark,
        on_accent=text_on(accent),
        on_accent_dark=text_on(dark),
        dateline=" · ".join(p for p in (number_text(issue), date_text(issue)) if p),
        subscribe_url=subscribe_url,
    )


def number_text(issue: Issue) -> str:
    """`number:` (or `issue:`) from the front matter: "Issue #3" in English, "#3" elsewhere."""
    value: Any = issue.meta.get("number", issue.meta.get("issue"))
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        return ""
    text = " ".join(str(value).split())
    if not text.isdigit():
        return text  # "Vol. 2, No. 3": as written
    return f"Issue #{text}" if _english(issue.lang) else f"#{text}"


def date_text(issue: Issue) -> str:
    """The issue's date: `date:` from the front matter, else its send time, else today."""
    value: Any = issue.meta.get("date")
    day: date | None = None
    if isinstance(value, datetime):
        day = value.date()
    elif isinstance(value, date):
        day = value
    elif isinstance(value, str) and value.strip():
        match = _DATE.match(value.strip())
        if not match:
            return " ".join(value.split())  # "Spring 2026": as written
        try:
            day = date.fromisoformat(match.group(0))
        except ValueError:
            return " ".join(value.split())
    elif issue.send_at is not None:
        day = issue.send_at.date()
    return written_date(day or now().astimezone().date(), issue.lang)


def written_date(day: date, lang: str) -> str:
    """A date as the issue's readers write it: English words, else ISO 8601 (2026-03-12)."""
    if not _english(lang):
        return day.isoformat()
    month = _MONTHS[day.month - 1]
    if lang.lower().replace("_", "-") in _DAY_FIRST:
        return f"{day.day} {month} {day.year}"
    return f"{month} {day.day}, {day.year}"


def _english(lang: str) -> bool:
    return lang.lower().split("-")[0].split("_")[0] == "en"
