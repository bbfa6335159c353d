"""An issue's Markdown dialect: CommonMark, tables, strikethrough, footnotes, linkify, kramdown.

The parser reads what a Jekyll (kramdown) newsletter holds and gives tokens an email can show:

- Before parsing, a source pass (`prepare`) drops HTML comments, renders kramdown's
  `markdown="span|block|1"` HTML elements, and drops kramdown attribute lists (`{: .center}`),
  all outside code. The parsed text has other line numbers than the issue's: `env[LINES]` maps
  them back, so notices name the line the author wrote.
- Footnotes (`[^1]`, mdit-py-plugins): the notes follow the text, as markdown-it renders them.
  Their back links are plain `<a href="#fnref1">↩︎</a>`: the arrow carries U+FE0E (text
  presentation), so iOS draws an arrow and not a blue emoji button.
- Image sizes `![alt](src){width=200 height=100}`: only width and height, in pixels.
- Bare URLs become links only with http://, https:// or mailto:, or starting with www.; a bare
  URL ends before the first wide (CJK, full-width) character, a `**`, or a `[12]` marker.
- Headings start at h2 (the template's title is the one h1), and a paragraph that is only bold
  (or bold italic) is a heading one level below: see `mdrules.headings`.
- `{{ subscriber.name }}` and the other merge fields become `merge_field` tokens
  (compose/fields.py); nothing else between `{{ }}` is read.

The core rules after parsing (compose/mdrules.py) record what the author should know in
`env[FINDINGS]` (compose.issue turns them into notices): empty link targets and dropped image
attributes.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from mdit_py_plugins.attrs import attrs_plugin
from mdit_py_plugins.footnote import footnote_plugin

from mailer.compose import fields, mdrules

LINES = "mailer.lines"  # env key: line i of the parsed text is line LINES[i] of the given text

# kramdown writes a hard break as `\\`; Jekyll newsletters put it alone on a line as a spacer.
_SPACER = re.compile(r"^ {0,3}\\\\[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

# What the source pass looks at: a comment, an HTML tag with a markdown attribute, a kramdown IAL.
_CANDIDATE = re.compile(r"<!--|<[A-Za-z][\w-]*\s[^<>]*?\bmarkdown\s*=|\{:(?!:)", re.I)
_COMMENT = re.compile(r"<!--(?:-?>|.*?-->)", re.S)
_OPEN_TAG = re.compile(
    r"<([A-Za-z][\w-]*)((?:\s+[^\s\"'<>/=]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*)\s*>"
)
_MD_ATTR = re.compile(r"\s+markdown\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+))", re.I)
_IAL = re.compile(r"\{:(?!:)(?:[^{}\n\"']|\"[^\"\n]*\"|'[^'\n]*')*\}")
_IAL_SIZE = re.compile(r"\b(width|height)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s}]+))")
_IMAGE_BEFORE = re.compile(r"!\[[^\]\n]*\]\([^()\n]*\)$")
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_MARKER = re.compile(r"\[\d*\]$")


@dataclass(frozen=True)
class Source:
    """The text the parser reads, and where each of its lines came from."""

    text: str
    lines: tuple[int, ...]  # lines[i]: the given text's line (0-based) of parsed line i


@cache
def parser() -> MarkdownIt:
    """The one parser every issue goes through (built once; markdown-it parsers are reusable)."""
    md = MarkdownIt("commonmark", {"html": True, "linkify": True, "typographer": False})
    md.enable(["table", "strikethrough", "linkify"])
    md.use(footnote_plugin)
    md.use(attrs_plugin, after=("image",), allowed=("width", "height"))
    md.linkify = _Linkify(md.linkify)
    md.core.ruler.after("normalize", "mailer_source", _source_rule)
    md.core.ruler.push("mailer_images", mdrules.image_sizes)
    md.core.ruler.push("mailer_empty_links", mdrules.drop_empty_links)
    md.core.ruler.push("mailer_headings", mdrules.headings)
    md.core.ruler.push("mailer_fields", fields.tokens)
    md.add_render_rule(fields.TOKEN, fields.literal)  # render() gives them slots instead
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


# -- the source pass ---------------------------------------------------------------------------


def prepare(text: str) -> Source:
    """Spacers, comments, kramdown `markdown=` elements and IALs dealt with, outside code.

    A comment on lines of its own becomes as many blank lines (blocks around it keep their
    shape); a comment inside a paragraph goes with its newlines, so a blank line in it cannot
    split the paragraph (kramdown's reading). Other lines keep their numbers through `lines`.
    """
    text = drop_spacers(text)
    if not _CANDIDATE.search(text):
        return Source(text, tuple(range(text.count("\n") + 1)))
    code = _code_regions(text)
    edits: list[tuple[int, int, str]] = []
    pos = 0
    while match := _CANDIDATE.search(text, pos):
        start = match.start()
        edit = None if _inside(code, start) else _edit_at(text, start)
        if edit is None:
            pos = start + 1
            continue
        edits.append(edit)
        pos = max(edit[1], start + 1)
    return _apply(text, edits)


def _edit_at(text: str, start: int) -> tuple[int, int, str] | None:
    if text.startswith("<!--", start):
        return _comment_edit(text, start)
    if text.startswith("{:", start):
        return _ial_edit(text, start)
    return _element_edit(text, start)


def _comment_edit(text: str, start: int) -> tuple[int, int, str] | None:
    match = _COMMENT.match(text, start)
    if not match:
        return None  # never closed: CommonMark shows it as text, and so does the email
    end = match.end()
    newlines = text.count("\n", start, end)
    line_start = text.rfind("\n", 0, start) + 1
    line_end = len(text) if (nl := text.find("\n", end)) < 0 else nl
    alone = not text[line_start:start].strip() and not text[end:line_end].strip()
    return start, end, "\n" * newlines if alone else ""


def _ial_edit(text: str, start: int) -> tuple[int, int, str] | None:
    """kramdown's `{: .class #id key="v"}`: gone, but an image's width and height are kept."""
    match = _IAL.match(text, start)
    if not match:
        return None
    line_start = text.rfind("\n", 0, start) + 1
    if _IMAGE_BEFORE.search(text[line_start:start]):
        sizes = [
            f'{m.group(1)}="{next(g for g in m.groups()[1:] if g is not None)}"'
            for m in _IAL_SIZE.finditer(match.group(0))
        ]
        if sizes:
            return start, match.end(), "{" + " ".join(sizes) + "}"
    return start, match.end(), ""


def _element_edit(text: str, start: int) -> tuple[int, int, str] | None:
    """kramdown's `<td markdown="span">...</td>`: the content rendered, the attribute gone."""
    tag = _OPEN_TAG.match(text, start)
    attr = _MD_ATTR.search(tag.group(2)) if tag else None
    if tag is None or attr is None:
        return None
    name = tag.group(1)
    mode = next(g for g in attr.groups() if g is not None).lower()
    opening = f"<{name}{tag.group(2)[: attr.start()]}{tag.group(2)[attr.end() :]}>"
    if mode not in ("span", "block", "1"):
        return start, tag.end(), opening  # markdown="0": raw HTML, as kramdown has it
    close = _closing_tag(text, name, tag.end())
    if close is None:
        return None
    content = textwrap.dedent(text[tag.end() : close[0]]).strip()
    if mode == "span":
        html = parser().renderInline(re.sub(r"\n[ \t]*(?:\n[ \t]*)+", "\n", content))
    else:
        # no blank line may reach the HTML block around it: in a <pre> one is a &#10;
        html = re.sub(r"\n(?=\n)", "&#10;", parser().render(content)).strip("\n")
    return start, close[1], f"{opening}{html}{text[close[0] : close[1]]}"


def _closing_tag(text: str, name: str, pos: int) -> tuple[int, int] | None:
    depth = 1
    for match in re.finditer(rf"<(/?){re.escape(name)}\b[^<>]*?(/?)>", text[pos:], re.I):
        if match.group(2):
            continue
        depth += -1 if match.group(1) else 1
        if depth == 0:
            return pos + match.start(), pos + match.end()
    return None


def _code_regions(text: str) -> list[tuple[int, int]]:
    """Character ranges of fenced code, indented code and code spans (a block-only parse)."""
    md = parser()
    blocks: list[Token] = []
    md.block.parse(text, md, {}, blocks)
    starts = [0] + [m.end() for m in re.finditer("\n", text)] + [len(text)]
    regions: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for token in blocks:
        if not token.map:
            continue
        first, last = token.map[0], min(token.map[1], len(starts) - 1)
        if token.type in ("fence", "code_block"):
            regions.append((starts[first], starts[last]))
        elif token.type == "inline" and (first, last) not in seen:
            seen.add((first, last))
            regions += _code_spans(text, starts[first], starts[last])
    return sorted(regions)


def _code_spans(text: str, pos: int, end: int) -> list[tuple[int, int]]:
    """CommonMark code spans in text[pos:end]: a backtick run closed by one of the same length."""
    spans = []
    while pos < end:
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char != "`":
            pos += 1
            continue
        run_end = pos
        while run_end < end and text[run_end] == "`":
            run_end += 1
        closer = re.compile(rf"(?<!`){'`' * (run_end - pos)}(?!`)").search(text, run_end, end)
        if closer:
            spans.append((pos, closer.end()))
            pos = closer.end()
        else:
            pos = run_end
    return spans


def _inside(regions: list[tuple[int, int]], pos: int) -> bool:
    i = bisect_right(regions, (pos, 1 << 62)) - 1
    return i >= 0 and regions[i][0] <= pos < regions[i][1]


def _apply(text: str, edits: list[tuple[int, int, str]]) -> Source:
    """The edited text, and for each of its lines the line of `text` it comes from."""
    out: list[str] = []
    lines = [0]
    line = 0
    pos = 0
    for start, end, replacement in [*edits, (len(text), len(text), "")]:
        kept = text[pos:start]
        out.append(kept)
        for _ in range(kept.count("\n")):
            line += 1
            lines.append(line)
        spanned = text.count("\n", start, end)
        lines += [line + min(k + 1, spanned) for k in range(replacement.count("\n"))]
        out.append(replacement)
        line += spanned
        pos = end
    return Source("".join(out), tuple(lines))


def _source_rule(state: StateCore) -> None:
    source = prepare(state.src)
    state.src = source.text
    state.env[LINES] = source.lines


# -- bare URLs -----------------------------------------------------------------------------------


class _Linkify:
    """linkify-it, with an email's idea of what a bare URL is (see the module's docstring).

    Without a scheme only www. names are links: `README.md`, `config.py` or the `references.md`
    of a leftover `{% include references.md %}` stay words. A www. link gets https://.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def pretest(self, text: str) -> bool:
        return bool(self._inner.pretest(text))

    def test(self, text: str) -> bool:
        return bool(self.match(text))

    def match(self, text: str) -> list[Any] | None:
        found = [m for m in map(self._email_link, self._inner.match(text) or []) if m]
        return found or None

    def match_at_start(self, text: str) -> Any:
        match = self._inner.match_at_start(text)
        return self._email_link(match) if match else None

    def _email_link(self, match: Any) -> Any:
        schema = str(match.schema)
        raw = str(match.raw)
        fuzzy_www = not schema and raw.lower().startswith("www.")
        if not (fuzzy_www or schema in _LINK_SCHEMES):
            return None
        length = url_length(raw)
        if length <= len(schema) + 3:
            return None
        match.raw = match.text = match.url = raw[:length]
        match.last_index = match.index + length
        self._inner.normalize(match)
        if fuzzy_www:
            match.url = "https://" + match.raw
        return match


def _wide(char: str) -> bool:
    return ord(char) >= 0x1100 and unicodedata.east_asian_width(char) in "WF"


def url_length(raw: str) -> int:
    """How much of a bare URL linkify-it found is the URL (no CJK, `**` or `[12]` after it)."""
    end = next((i for i, c in enumerate(raw) if _wide(c)), len(raw))
    if (stars := raw.find("**", 0, end)) >= 0:
        end = stars
    url = raw[:end]
    while marker := _MARKER.search(url):
        url = url[: marker.start()]
    depth = 0
    for i, char in enumerate(url):
        if char == "]" and depth == 0:
            url = url[:i]
            break
        depth += {"[": 1, "]": -1}.get(char, 0)
    if depth > 0:
        url = url[: url.rfind("[")]
    return len(url.rstrip(".,:;!?")) if len(url) < len(raw) else len(raw)
