"""Read an issue file: decode, repair mojibake, split the front matter, parse the Markdown."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urljoin, urlsplit

import yaml
from markdown_it.token import Token

from . import markdown
from .errors import InputError
from .repair import repair_mojibake
from .when import parse_when

RTL_LANGS = frozenset(
    {"ar", "arc", "dv", "fa", "ha", "he", "khw", "ks", "ku", "ps", "sd", "ur", "yi"}
)
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
_ALT_ATTR = re.compile(r"\balt\s*=", re.I)
_SRC_ATTR = re.compile(r"""\bsrc\s*=\s*["']?([^"'\s>]+)""", re.I)


@dataclass(frozen=True)
class Notice:
    """Something worth a look in an issue: where it is and what it is."""

    code: str  # mojibake | alt | http | relative | ...
    message: str
    line: int | None = None  # line in the issue file

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


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


def resolve(name: str, root: Path) -> Path:
    """`issue-2`, `issue-2.md` or a path -> the issue file, or an error listing what exists."""
    candidates = [Path(name), root / name, root / "issues" / name, root / "issues" / f"{name}.md"]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(p.stem for p in (root / "issues").glob("*.md"))
    raise InputError(
        f"no issue {name!r}",
        hint=f"issues in {root / 'issues'}: {', '.join(known)}"
        if known
        else "create issues/NAME.md",
    )


_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def read(path: Path, *, default_lang: str = "en", base_url: str = "") -> Issue:
    """Read and parse one issue file."""
    if not _SLUG.match(path.stem):
        # The name is the issue's id in the ledger, its lock and every Message-ID.
        raise InputError(
            "an issue's file name may only use letters, digits, '.', '_' and '-'",
            path=path,
            hint=f"rename it, e.g. {re.sub(r'[^A-Za-z0-9._-]+', '-', path.stem).strip('-.')}.md",
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

    title = _text_key(meta, "title", path, required=True)
    subject = _text_key(meta, "subject", path) or title
    preheader = _text_key(meta, "preheader", path) or _text_key(meta, "excerpt", path)
    lang = _text_key(meta, "lang", path) or default_lang
    if not _LANG.match(lang):
        raise InputError(
            f"front matter key 'lang' must be a language tag like en or pt-BR, got {lang!r}",
            path=path,
        )
    direction = "rtl" if lang.split("-")[0].lower() in RTL_LANGS else "ltr"
    send_at = None
    if meta.get("send_at") not in (None, ""):
        try:
            send_at = parse_when(meta["send_at"], _text_key(meta, "tz", path) or None)
        except ValueError as exc:
            raise InputError(f"front matter key 'send_at': {exc}", path=path) from None

    body = markdown.drop_spacers(body)
    tokens = markdown.parser().parse(body)
    notices += _check_links(tokens, body_line, base_url)
    if not preheader:
        preheader = _first_paragraph(tokens)
    return Issue(
        slug=path.stem,
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


def _check_links(tokens: list[Token], offset: int, base_url: str) -> list[Notice]:
    """Make links absolute (or say why not), and note images without alt text and http links."""
    notices: list[Notice] = []
    line = offset
    for block in tokens:
        if block.map:
            line = offset + block.map[0] + 1
        for token in _walk([block]):
            if token.type == "image":
                src = str(token.attrs.get("src", ""))
                token.attrs["src"] = _absolute(src, base_url, line, notices)
                if not token.content.strip():
                    notices.append(Notice("alt", f"image without alt text: {src}", line))
            elif token.type == "link_open":
                href = str(token.attrs.get("href", ""))
                token.attrs["href"] = _absolute(href, base_url, line, notices)
                if href.startswith("http://"):
                    notices.append(Notice("http", f"link is not https: {href}", line))
            elif token.type in ("html_block", "html_inline"):
                for tag in _IMG_TAG.findall(token.content):
                    if not _ALT_ATTR.search(tag):
                        src_attr = _SRC_ATTR.search(tag)
                        where = src_attr.group(1) if src_attr else tag[:60]
                        notices.append(Notice("alt", f"image without alt text: {where}", line))
                        token.content = token.content.replace(tag, tag[:4] + ' alt=""' + tag[4:], 1)
    return notices


def _absolute(url: str, base_url: str, line: int, notices: list[Notice]) -> str:
    parts = urlsplit(url)
    if parts.scheme or url.startswith("#") or not url:
        return url
    if base_url:
        return urljoin(base_url, url)
    notices.append(Notice("relative", f"relative link cannot work in an email: {url}", line))
    return url


def _first_paragraph(tokens: list[Token], limit: int = 150) -> str:
    for i, token in enumerate(tokens):
        if token.type == "paragraph_open" and i + 1 < len(tokens):
            parts = []
            for child in tokens[i + 1].children or []:
                if child.type in ("text", "code_inline"):
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
            text = _fold_spaces("".join(parts))
            if text:
                return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return ""
