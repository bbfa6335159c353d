"""Read an issue file: decode, repair mojibake, split the front matter, parse the Markdown."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin, urlsplit

import yaml
from markdown_it.token import Token

from mailer.compose import fields as fields_mod
from mailer.compose import lang as lang_mod
from mailer.compose import markdown, mdrules
from mailer.compose.repair import repair_mojibake
from mailer.errors import InputError
from mailer.when import parse_when

RTL_LANGS = frozenset(
    {"ar", "arc", "dv", "fa", "ha", "he", "khw", "ks", "ku", "ps", "sd", "ur", "yi"}
)
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
_ALT_ATTR = re.compile(r"\balt\s*=", re.I)
_SRC_ATTR = re.compile(r"""\bsrc\s*=\s*["']?([^"'\s>]+)""", re.I)
_LIQUID = re.compile(r"\{%.*?%\}|\{\{.*?\}\}")
_REFERENCE = re.compile(r"\[[^\[\]\n]+\]\[[^\[\]\n]*\]")
_FOOTNOTE_REF = re.compile(r"\[\^[^\[\]\s]+\]")
EMAIL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
# Top-level domains a scheme-less link plausibly names; not file endings like .md, .py or .sh.
_TLDS_NAMES = (
    "com net org edu gov mil int info biz io ai co dev app me tv us uk ca de fr es it nl "
    "eu ch jp cn br in au ru kr tw hk be se no fi dk at nz ie mx ar za news blog xyz tech "
    "site online page cloud"
)
_TLDS = frozenset(_TLDS_NAMES.split())


@dataclass(frozen=True)
class Notice:
    """Something worth a look in an issue: where it is and what it is."""

    code: str  # mojibake | alt | http | relative | ...
    message: str
    line: int | None = None  # line in the issue file

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class Lines:
    """Parsed-text lines -> issue file lines (the parser's source pass moves some)."""

    before_body: int  # lines of the file before the body
    moved: tuple[int, ...]  # body line of each parsed line (empty: none moved)

    def of(self, parsed: int | None) -> int | None:
        if parsed is None:
            return None
        body_line = self.moved[parsed] if parsed < len(self.moved) else parsed
        return self.before_body + body_line + 1


def located(tokens: Sequence[Token], lines: Lines) -> Iterator[tuple[Token, int | None]]:
    """Every block token but `inline`, and every inline child, with its line in the file."""
    line: int | None = None
    for block in tokens:
        if block.map:
            line = lines.of(block.map[0])
        if block.type == "inline":
            for child, parsed in mdrules.inline_lines(block):
                yield child, lines.of(parsed) if parsed is not None else line
        else:
            yield block, line


@dataclass(frozen=True)
class Issue:
    """A parsed, repaired issue: front matter settled, Markdown parsed once."""

    slug: str
    path: Path
    title: str
    subject: str
    preheader: str
    lang: str
    dir: str
    meta: Mapping[str, Any]  # every front matter key, as written
    body: str  # the repaired Markdown, spacers removed
    tokens: tuple[Token, ...]
    send_at: datetime | None = None
    notices: tuple[Notice, ...] = field(default=())
    lines: Lines = field(default=Lines(0, ()))  # where each parsed line is in the file
    preheader_from_body: bool = False  # taken from the first paragraph, merge fields and all

    @property
    def fields(self) -> list[fields_mod.MergeField]:
        """Every merge field in the text (`{{ subscriber.name }}`), in reading order."""
        return [
            fields_mod.MergeField(
                str(token.meta["field"]), token.meta.get("default"), line, token.content
            )
            for token, line in located(self.tokens, self.lines)
            if token.type == fields_mod.TOKEN
        ]

    @property
    def links(self) -> list[str]:
        """Every link target in reading order (Markdown links, autolinks, raw <a>)."""
        return [str(t.attrs["href"]) for t in _walk(self.tokens) if t.type == "link_open"] + [
            m for t in _walk(self.tokens) if t.type.startswith("html") for m in _hrefs(t.content)
        ]

    @property
    def images(self) -> list[str]:
        """Every image source in reading order."""
        return [str(t.attrs["src"]) for t in _walk(self.tokens) if t.type == "image"] + [
            m.group(1)
            for t in _walk(self.tokens)
            if t.type.startswith("html")
            for m in map(_SRC_ATTR.search, _IMG_TAG.findall(t.content))
            if m
        ]


def _hrefs(html: str) -> list[str]:
    return re.findall(r"""<a\b[^>]*\bhref\s*=\s*["']([^"']+)""", html, re.I)


def _walk(tokens: tuple[Token, ...] | list[Token]) -> list[Token]:
    out: list[Token] = []
    for token in tokens:
        out.append(token)
        if token.children:
            out.extend(_walk(token.children))
    return out


# An issue's slug is its file name without .md: its id in the ledger, its lock, every
# Message-ID and VERP address, and its archive URL.
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def slug_of(path: Path) -> str:
    """The slug of an issue file (issues/issue-2.md -> issue-2)."""
    return path.stem


def is_slug(text: str) -> bool:
    """Whether `text` may be a slug: letters, digits, '.', '_' and '-', not starting with a mark."""
    return SLUG.fullmatch(text) is not None


def read(path: Path, *, default_lang: str = "en", base_url: str = "") -> Issue:
    """Read and parse one issue file."""
    slug = slug_of(path)
    if not is_slug(slug):
        raise InputError(
            "an issue's file name may only use letters, digits, '.', '_' and '-'",
            path=path,
            hint=f"rename it, e.g. {re.sub(r'[^A-Za-z0-9._-]+', '-', slug).strip('-.')}.md",
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    text = _decode(raw, path)
    text, repair = repair_mojibake(text)
    meta, body, body_line = _split_front_matter(text, path)
    notices: list[Notice] = []
    if repair.count:
        notices.append(
            Notice(
                "mojibake",
                f"repaired {repair.count} characters damaged by UTF-8 read as "
                f"{'Mac Roman' if repair.encoding == 'mac_roman' else 'Windows-1252'}",
            )
        )

    cut = _cut_by_comments(text, meta)
    if "title" in cut and not meta.get("title"):
        raise InputError(cut["title"].message, path=path, line=cut["title"].line)
    notices += cut.values()
    title = _text_key(meta, "title", path, required=True)
    subject = _text_key(meta, "subject", path) or title
    preheader = _text_key(meta, "preheader", path) or _text_key(meta, "excerpt", path)
    given_lang = _text_key(meta, "lang", path)
    if not _LANG.match(given_lang or default_lang):
        raise InputError(
            "front matter key 'lang' must be a language tag like en or pt-BR, "
            f"got {given_lang or default_lang!r}",
            path=path,
        )
    send_at = None
    if meta.get("send_at") not in (None, ""):
        try:
            send_at = parse_when(meta["send_at"], _text_key(meta, "tz", path) or None)
        except ValueError as exc:
            raise InputError(f"front matter key 'send_at': {exc}", path=path) from None

    body = markdown.drop_spacers(body)
    env: dict[str, Any] = {}
    tokens = markdown.parser().parse(body, env)
    lines = Lines(body_line, env.get(markdown.LINES, ()))
    notices += _check_links(tokens, lines, base_url)
    notices += [Notice(f.code, f.message, lines.of(f.line)) for f in env.get(mdrules.FINDINGS, [])]
    notices.sort(key=lambda n: n.line or 0)
    lang = given_lang or default_lang
    if not given_lang:
        lang, lang_notice = _detect_lang(title, tokens, default_lang)
        notices += [lang_notice] if lang_notice else []
    direction = "rtl" if lang.split("-")[0].lower() in RTL_LANGS else "ltr"
    from_body = not preheader
    if from_body:
        preheader = _first_paragraph(tokens)
    return Issue(
        slug=slug,
        path=path,
        title=title,
        subject=subject,
        preheader=preheader,
        lang=lang,
        dir=direction,
        meta=MappingProxyType(dict(meta)),
        body=body,
        tokens=tuple(tokens),
        send_at=send_at,
        notices=tuple(notices),
        lines=lines,
        preheader_from_body=from_body,
    )


def _decode(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("is not UTF-8 text (save it as UTF-8)", path=path, line=line) from None
    # CRLF and lone CR from other editors; no-break spaces and tabs are left for the parser.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """-> (front matter, body, number of lines before the body)."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise InputError(
            "has no front matter",
            path=path,
            line=1,
            hint="start the file with a '---' line, 'title: ...', and another '---' line",
        )
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        raise InputError("front matter is never closed by a '---' line", path=path, line=1)
    source = "\n".join(lines[1:end])
    try:
        meta = yaml.safe_load(source) if source.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(
            f"front matter is not valid YAML: {problem}", path=path, line=line
        ) from None
    if not isinstance(meta, dict):
        raise InputError("front matter must be 'key: value' lines", path=path, line=2)
    for key in meta:
        if not isinstance(key, str):
            raise InputError(f"front matter key {key!r} must be text", path=path)
    return meta, "\n".join(lines[end + 1 :]), end + 1


# A text key on its line; without quotes, YAML ends its value at a ` #` (a comment).
_TEXT_KEY_LINE = re.compile(r"(title|subject|preheader|excerpt)[ \t]*:(.*)")


def _cut_by_comments(text: str, meta: Mapping[str, Any]) -> dict[str, Notice]:
    """`title: Weekly Bits #2: colons` is "Weekly Bits" to YAML: say so, with its line."""
    found: dict[str, Notice] = {}
    for number, line in enumerate(text.split("\n")[1:], start=2):
        if line.strip() in ("---", "..."):
            break
        written = _TEXT_KEY_LINE.fullmatch(line)
        key, value = written.groups() if written else ("", "")
        value = value.strip()
        comment = re.search(r"(?:^|[ \t])#", value)
        if comment is None or value.startswith(("'", '"', "|", ">", "[", "{")):
            continue  # no comment, or not plain text (quoted, a block, a list)
        kept = value[: comment.start()].strip()
        if str(meta.get(key) or "") != kept:
            continue  # YAML read it some other way (a value on several lines)
        lost = value[comment.start() :].strip()
        now = f'the {key} is "{kept}"' if kept else f"there is no {key}"
        quoted = f'"{value}"' if '"' not in value and "\\" not in value else _single(value)
        message = (
            f"YAML reads '{lost}' in '{key}' as a comment, so {now}: "
            f"put the value in quotes ({key}: {quoted})"
        )
        found[key] = Notice("front-matter", message, number)
    return found


def _single(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _text_key(meta: Mapping[str, Any], key: str, path: Path, *, required: bool = False) -> str:
    value = meta.get(key)
    if value is None or value == "":
        if required:
            raise InputError(f"front matter key '{key}' is missing", path=path)
        return ""
    if isinstance(value, (date, int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(
            f"front matter key '{key}' must be text, got {type(value).__name__}", path=path
        )
    # A subject or preheader is one line: folding here keeps newlines out of headers.
    return _fold_spaces(value)


def _fold_spaces(text: str) -> str:
    """Collapse ASCII whitespace (newlines included) to single spaces; no-break spaces stay."""
    return re.sub(r"[ \t\r\n\f\v]+", " ", text).strip()


def _check_links(tokens: list[Token], lines: Lines, base_url: str) -> list[Notice]:
    """Make links absolute (or say why not), and note what an email cannot show as written.

    Images without alt text, http and scheme-less links, Liquid tags left in the text,
    reference links whose definition is missing.
    """
    notices: list[Notice] = []
    for token, line in located(tokens, lines):
        if token.type == "html_block":
            _check_html(token, line, notices)
        else:
            _check_inline(token, line, base_url, notices)  # acts on inline tokens only
    return notices


def _check_inline(token: Token, line: int | None, base_url: str, notices: list[Notice]) -> None:
    if token.type == "image":
        src = str(token.attrs.get("src", ""))
        token.attrs["src"] = _absolute(src, base_url, line, notices, kind="image")
        if not token.content.strip():
            notices.append(Notice("alt", f"image without alt text: {src}", line))
    elif token.type == "link_open":
        href = str(token.attrs.get("href", ""))
        token.attrs["href"] = _absolute(href, base_url, line, notices)
        if href.startswith("http://"):
            notices.append(Notice("http", f"link is not https: {href}", line))
    elif token.type == "html_inline":
        _check_html(token, line, notices)
    elif token.type == "text":
        _check_text(token.content, line, notices)


def _check_html(token: Token, line: int | None, notices: list[Notice]) -> None:
    for tag in _IMG_TAG.findall(token.content):
        if not _ALT_ATTR.search(tag):
            src_attr = _SRC_ATTR.search(tag)
            where = src_attr.group(1) if src_attr else tag[:60]
            notices.append(Notice("alt", f"image without alt text: {where}", line))
            token.content = token.content.replace(tag, tag[:4] + ' alt=""' + tag[4:], 1)
    for liquid in _LIQUID.findall(token.content):
        notices.append(Notice("liquid", f"Liquid tag left in the text: {liquid}", line))


def _check_text(text: str, line: int | None, notices: list[Notice]) -> None:
    for liquid in _LIQUID.findall(text):
        notices.append(Notice("liquid", f"Liquid tag left in the text: {liquid}", line))
    for ref in _REFERENCE.finditer(text):
        notices.append(
            Notice("reference", f"reference link with no definition: {ref.group(0)}", line)
        )
    for note in _FOOTNOTE_REF.finditer(text):
        notices.append(Notice("reference", f"footnote with no definition: {note.group(0)}", line))


def _absolute(
    url: str, base_url: str, line: int | None, notices: list[Notice], kind: str = "link"
) -> str:
    parts = urlsplit(url)
    if parts.scheme:
        scheme = parts.scheme.lower()
        if kind == "link" and scheme not in EMAIL_SCHEMES:
            notices.append(
                Notice(
                    "scheme",
                    f"link with an unknown scheme '{scheme}:' "
                    f"(email links are http, https, mailto or tel): {url}",
                    line,
                )
            )
        return url
    if url.startswith("#") or not url:
        return url
    if _looks_like_host(url):
        notices.append(Notice("scheme", f"{kind} has no https:// in front: {url}", line))
        return url
    if base_url:
        return urljoin(base_url, url)
    notices.append(Notice("relative", f"relative link cannot work in an email: {url}", line))
    return url


def _looks_like_host(url: str) -> bool:
    """`news.mit.edu/2020/x`, `www.example.org`: a host name where a path would start."""
    if url.startswith(("/", ".")):
        return False
    host = re.split(r"[/?#]", url, maxsplit=1)[0].lower()
    labels = host.split(".")
    if len(labels) < 2 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return False
    return labels[0] == "www" or labels[-1] in _TLDS


def _detect_lang(title: str, tokens: list[Token], default_lang: str) -> tuple[str, Notice | None]:
    """The detected language and a notice saying so, or the default and no notice."""
    found = lang_mod.detect(title, lang_mod.prose(tokens))
    if found is None or _same_lang(found.lang, default_lang):
        return default_lang, None
    message = (
        f"front matter has no 'lang': detected {found.lang} {found.how}; "
        f"add 'lang: {found.lang}' to say so"
    )
    return found.lang, Notice("lang", message)


def _same_lang(found: str, default: str) -> bool:
    """pt (py3langid's answer) is no news when the default is pt-BR."""
    found, default = found.lower(), default.lower()
    return found == default or ("-" not in found and found == default.split("-")[0])


def _first_paragraph(tokens: list[Token], limit: int = 150) -> str:
    for i, token in enumerate(tokens):
        if token.type == "paragraph_open" and i + 1 < len(tokens):
            parts = []
            for child in tokens[i + 1].children or []:
                if child.type in ("text", "code_inline", fields_mod.TOKEN):
                    parts.append(child.content)  # a field as written: the render fills it
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
            text = _fold_spaces("".join(parts))
            if text:
                return text if len(text) <= limit else _cut(text, limit)
    return ""


def _cut(text: str, limit: int) -> str:
    """The text cut at a space before `limit`, never inside a merge field, with an ellipsis."""
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    opened = cut.rfind("{{")
    if opened >= 0 and "}}" not in cut[opened:]:
        cut = cut[:opened].rstrip()
    return cut + "…"
