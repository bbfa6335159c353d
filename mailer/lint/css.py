"""CSS as lint compares it: declarations parsed once, values and selectors in one form."""

from __future__ import annotations

import re
from functools import lru_cache

import tinycss2  # type: ignore[import-untyped]

_SPACES = re.compile(r"\s+")
_PUNCT_SPACE = re.compile(r"\s*([,()/])\s*")
_SHORT_HEX = re.compile(r"#([0-9a-f])([0-9a-f])([0-9a-f])(?![0-9a-f])")
_ZERO = re.compile(r"(?<![\w.#-])0(?:px|pt|em|rem)(?![\w%])")


@lru_cache(maxsize=8192)
def norm_value(value: str) -> str:
    """A CSS value as premailer and MJML may have rewritten it: one form to compare."""
    text = value.lower().replace("!important", "").replace('"', "").replace("'", "")
    text = _PUNCT_SPACE.sub(r"\1", _SPACES.sub(" ", text).strip())
    return _ZERO.sub("0", _SHORT_HEX.sub(r"#\1\1\2\2\3\3", text))


def norm_selector(selector: str) -> str:
    text = re.sub(r"\s+", " ", selector).strip()
    return re.sub(r"\s*([>+~,])\s*", r"\1", text)


_NO_COMMENTS = {"skip_comments": True, "skip_whitespace": True}


@lru_cache(maxsize=4096)
def declarations(style: str) -> tuple[tuple[str, str, bool], ...]:
    """A style attribute's declarations, (lower-case name, value as written, !important):
    parsed once per distinct text (a built email repeats a few dozen of them ~10 times)."""
    return tuple(
        (decl.lower_name, tinycss2.serialize(decl.value), bool(decl.important))
        for decl in tinycss2.parse_declaration_list(style, **_NO_COMMENTS)
        if decl.type == "declaration"
    )
