"""Fenced code with a language, highlighted for email: inline colours only, from Pygments.

Mail clients drop <style> blocks and classes unevenly, so each run of code gets its colour in
a style attribute, and nothing else (no bold or italic, which fonts in some clients fake
badly). The block sets its own background and text colour: GitHub's dark palette, every one
of whose colours has at least 4.5:1 contrast on that background, in light and dark mode alike.
A client that inverts a light email in dark mode leaves an already dark block as it is, so the
colours never land on a background they were not chosen for. Line breaks are the <pre>'s own
(with `white-space: pre-wrap` so a phone wraps long lines instead of scrolling them).

A block without a language, or with one Pygments does not know, stays plain.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

STYLE = "github-dark"  # Pygments' copy of GitHub's dark palette
BACKGROUND = "#0d1117"
FOREGROUND = "#e6edf3"
PRE_STYLE = f"background:{BACKGROUND};color:{FOREGROUND};white-space:pre-wrap"


def language(info: str) -> str:
    """The language a fence names: the first word of its info string (```python title=x)."""
    words = info.strip().split(maxsplit=1)
    return words[0].strip("{}.").lower() if words else ""


@cache
def _lexer(name: str) -> Any:
    """Pygments' lexer for a language name or alias, or None when it has none."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        # stripnl/ensurenl off: the code's own newlines, no more and no fewer
        return get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


@cache
def _style() -> Any:
    from pygments.styles import get_style_by_name

    return get_style_by_name(STYLE)


@cache
def colour(token_type: Any) -> str | None:
    """The colour of a Pygments token type ('#rrggbb'), or None for the block's own."""
    found = _style().style_for_token(token_type)["color"]
    if not found or f"#{found}".lower() == FOREGROUND:
        return None
    return f"#{found}".lower()


def palette() -> set[str]:
    """Every colour a highlighted block can use, its text colour included."""
    from pygments.token import Whitespace

    used = {FOREGROUND}
    for token_type, _ in _style():
        found = colour(token_type)
        if found and token_type not in Whitespace:  # whitespace is never coloured
            used.add(found)
    return used


def highlight(code: str, info: str) -> str | None:
    """The <pre> of a fenced block, coloured; None when it has no language Pygments knows."""
    name = language(info)
    lexer = _lexer(name) if name else None
    if lexer is None:
        return None
    runs: list[tuple[str | None, str]] = []
    for token_type, text in lexer.get_tokens(code):
        shade = None if text.isspace() else colour(token_type)
        if runs and (runs[-1][0] == shade or text.isspace()):
            runs[-1] = (runs[-1][0], runs[-1][1] + text)
        else:
            runs.append((shade, text))
    if "".join(text for _, text in runs) != code:
        return None  # a lexer that changed the text (tabs, line ends): plain, as written
    body = "".join(
        f'<span style="color:{shade}">{_escape(text)}</span>' if shade else _escape(text)
        for shade, text in runs
    )
    cls = html.escape(f"language-{name}", quote=True)
    return f'<pre style="{PRE_STYLE}"><code class="{cls}">{body}</code></pre>\n'


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


class CodeBlocks:
    """Highlighted blocks kept out of MJML's way while the email compiles.

    mjml-python re-reads every element of the content, and a highlighted block is dozens of
    spans (20 blocks tripled its time): the body holds a plain stand-in for each, marked with
    a random tag no issue can write, and `put_back` swaps the coloured block in after MJML,
    before the CSS is inlined.
    """

    def __init__(self) -> None:
        self._tag = secrets.token_hex(6)
        self._blocks: list[str] = []
        self._pattern = re.compile(f'<pre data-mailer-code="{self._tag}-(\\d+)">.*?</pre>', re.S)

    def rules(self, renderer: RendererHTML) -> dict[str, Any]:
        """Renderer rules for fences: a stand-in for a block that can be highlighted."""
        original = renderer.rules.get("fence")

        def rule(tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
            token = tokens[idx]
            coloured = highlight(token.content, token.info)
            if coloured is None:
                if original is not None:
                    return str(original(tokens, idx, options, env))
                return f"<pre><code>{_escape(token.content)}</code></pre>\n"
            self._blocks.append(coloured)
            mark = f'data-mailer-code="{self._tag}-{len(self._blocks) - 1}"'
            return f"<pre {mark}><code>{_escape(token.content)}</code></pre>\n"

        return {"fence": rule}

    def put_back(self, html: str, prepare: Callable[[str], str]) -> str:
        """The compiled HTML with each stand-in replaced by its block (through `prepare`)."""
        if not self._blocks:
            return html
        return self._pattern.sub(lambda m: prepare(self._blocks[int(m.group(1))]), html)
