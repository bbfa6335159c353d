"""The language of an issue whose front matter does not say.

Three ways, in this order, the first that answers wins:

1. the script: a body whose letters are at least a quarter Han (no kana) is zh, with kana ja,
   Hangul ko, Devanagari hi, Arabic ar, Hebrew he, Thai th, Greek el; Cyrillic is one of many
   languages, so py3langid picks which;
2. for Latin script, a language tag in the title: `[PT-BR]`, `[FR]`, `(ES)`;
3. py3langid on at most SAMPLE characters of the body's prose, if it is sure (CONFIDENCE) and
   there is enough of it (MIN_LETTERS). Its model loads on first use (~0.7 s): only then.

The text looked at is prose: code, raw HTML, URLs and comments (the parser dropped those) are
not words of any language.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from markdown_it.token import Token

SAMPLE = 3000
MIN_LETTERS = 60
CONFIDENCE = 0.9
SCRIPT_SHARE = 0.25

# (first code point, last code point, script), sorted.
_RANGES = (
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),
    (0x08A0, 0x08FF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1F00, 0x1FFF, "Greek"),
    (0x3040, 0x30FF, "Kana"),
    (0x3130, 0x318F, "Hangul"),
    (0x31F0, 0x31FF, "Kana"),
    (0x3400, 0x4DBF, "Han"),
    (0x4E00, 0x9FFF, "Han"),
    (0xAC00, 0xD7AF, "Hangul"),
    (0xF900, 0xFAFF, "Han"),
    (0xFB1D, 0xFB4F, "Hebrew"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0xFF66, 0xFF9F, "Kana"),
    (0x20000, 0x3FFFF, "Han"),
)
_STARTS = [r[0] for r in _RANGES]
SCRIPT_LANGS = {
    "Han": "zh",
    "Kana": "ja",
    "Hangul": "ko",
    "Devanagari": "hi",
    "Arabic": "ar",
    "Hebrew": "he",
    "Thai": "th",
    "Greek": "el",
}
CYRILLIC_LANGS = frozenset({"ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "mn"})
# Languages written in Latin script: a title tag naming another one ([ML], [HI]) is no tag.
_LATIN_LANGS_NAMES = (
    "af az br ca cs cy da de en eo es et eu fi fo fr ga gl hr ht hu id is it ku la lb lt "
    "lv mg ms mt nb nl nn no oc pl pt qu ro rw sk sl sq sv sw tl tr vi wa xh zu"
)
LATIN_LANGS = frozenset(_LATIN_LANGS_NAMES.split())
_TITLE_TAG = re.compile(r"[\[(]([A-Za-z]{2,3})(?:[-_]([A-Za-z]{2}|[A-Za-z]{4}|\d{3}))?[\])]")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)


@dataclass(frozen=True)
class Detected:
    """A language tag, and how it was found (for the notice)."""

    lang: str
    how: str  # "from the script (Han)", "from the title's [PT-BR] tag", "from the text (py3langid)"


def detect(title: str, text: str) -> Detected | None:
    """The language of an issue with this title and this prose, or None if nothing says."""
    counts = _letters(text)
    script = _script(counts)
    if script == "Cyrillic":
        lang = _langid(text, min_letters=1)
        return Detected(lang if lang in CYRILLIC_LANGS else "ru", "from the script (Cyrillic)")
    if script:
        return Detected(SCRIPT_LANGS[script], f"from the script ({script})")
    tag = title_tag(title)
    if tag:
        return Detected(tag[0], f"from the title's {tag[1]} tag")
    lang = _langid(text, min_letters=MIN_LETTERS)
    return Detected(lang, "from the text (py3langid)") if lang else None


def title_tag(title: str) -> tuple[str, str] | None:
    """(language tag, the tag as written) for a title's `[PT-BR]`, `[FR]` or `(ES)`."""
    for match in _TITLE_TAG.finditer(title):
        base, sub = match.group(1).lower(), match.group(2)
        if base not in LATIN_LANGS:
            continue
        if sub is None:
            return base, match.group(0)
        sub = sub.title() if len(sub) == 4 else sub.upper()
        return f"{base}-{sub}", match.group(0)
    return None


def prose(tokens: Iterable[Token]) -> str:
    """The words of parsed Markdown: text, not code, raw HTML or URLs."""
    parts: list[str] = []
    for token in tokens:
        if token.type == "inline":
            in_autolink = False
            for child in token.children or []:
                if child.type == "link_open":
                    in_autolink = child.markup in ("linkify", "autolink")
                elif child.type == "link_close":
                    in_autolink = False
                elif child.type == "text" and not in_autolink:
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append("\n")
            parts.append("\n")
    return _URL.sub(" ", "".join(parts))


def _letters(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for char in text:
        if char.isalpha():
            counts[_script_of(ord(char))] += 1
    return counts


def _script_of(code: int) -> str:
    if code < 0x0370:
        return "Latin"
    i = bisect_right(_STARTS, code) - 1
    if i >= 0 and code <= _RANGES[i][1]:
        return _RANGES[i][2]
    return "Latin" if 0x1E00 <= code <= 0x1EFF else "Other"


def _script(counts: Counter[str]) -> str | None:
    """The non-Latin script of at least SCRIPT_SHARE of the letters (Han with kana is Kana)."""
    total = sum(counts.values())
    if not total:
        return None
    cjk = counts["Han"] + counts["Kana"]
    if counts["Kana"] and counts["Kana"] >= 0.1 * cjk:
        counts = counts + Counter({"Kana": counts["Han"]})
        del counts["Han"]
    scored = [(n, s) for s, n in counts.items() if s not in ("Latin", "Other")]
    if not scored:
        return None
    count, script = max(scored)
    return script if count >= SCRIPT_SHARE * total else None


def _langid(text: str, *, min_letters: int) -> str | None:
    sample = " ".join(text.split())[:SAMPLE]
    if sum(c.isalpha() for c in sample) < min_letters:
        return None
    lang, confidence = _identifier().classify(sample)
    return str(lang) if confidence >= CONFIDENCE else None


@cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # ~0.7 s: only when needed

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
