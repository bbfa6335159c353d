"""HTML from elsewhere (a feed's summaries, an exported post) as clean Markdown, and writing
the issue file that holds it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

import yaml
from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

from mailer.errors import MailerError

# Never content: what runs, what submits, what embeds another page.
DROPPED = ("script", "style", "noscript", "iframe", "object", "embed", "form", "button", "input")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING = re.compile(r"[ \t]+\n")
_TEMPLATE_SYNTAX = re.compile(r"(\{[{%])")


class _Converter(MarkdownConverter):
    """markdownify with ATX headings and '-' bullets; in summaries headings become bold text
    and images are left out (a digest shows one image per entry, on its own)."""

    def __init__(self, *, summary: bool, base: str) -> None:
        super().__init__(heading_style="ATX", bullets="-", escape_misc=False, strip=list(DROPPED))
        self.summary = summary
        self.base = base

    def convert_hN(self, n: int, el: Tag, text: str, parent_tags: set[str]) -> str:
        if not self.summary:
            return str(cast(Any, super()).convert_hN(n, el, text, parent_tags))
        text = text.strip()
        return f"\n\n**{text}**\n\n" if text else ""

    def convert_img(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        if self.summary:
            return ""
        src = absolute(str(el.get("src") or ""), self.base)
        if not src:
            return ""
        alt = str(el.get("alt") or el.get("title") or "").replace("]", "").replace("[", "")
        return f"![{alt.strip()}]({_destination(src)})"

    def convert_a(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        href = str(el.get("href") or "")
        if href and not href.startswith("#"):
            el["href"] = absolute(href, self.base)
        return str(cast(Any, super()).convert_a(el, text, parent_tags))


def absolute(url: str, base: str) -> str:
    """`url` made absolute against `base` (nothing to do without a base or with a scheme)."""
    url = url.strip()
    if not url or urlsplit(url).scheme or not base:
        return url
    return urljoin(base, url)


def _destination(url: str) -> str:
    """A Markdown link destination: in <...> when it holds spaces or parentheses."""
    return f"<{url}>" if re.search(r"[\s()<>]", url) else url


def to_markdown(html: str | BeautifulSoup, *, base: str = "", summary: bool = False) -> str:
    """HTML -> Markdown: blocks separated by one blank line, no template syntax left active."""
    soup = html if isinstance(html, BeautifulSoup) else BeautifulSoup(html, "html.parser")
    for tag in soup.find_all(DROPPED):
        tag.decompose()
    text = _Converter(summary=summary, base=base).convert_soup(soup)
    text = unicodedata.normalize("NFC", str(text)).replace("\u00a0", " ")
    # Jinja syntax in someone else's text would read as a template slot: show it literally.
    text = _TEMPLATE_SYNTAX.sub(lambda m: m.group(1)[0] + "\u200b" + m.group(1)[1], text)
    text = _TRAILING.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def plain_text(html: str) -> str:
    """The text of an HTML fragment (a title), its whitespace folded."""
    text = BeautifulSoup(html, "html.parser").get_text(" ")
    return re.sub(r"\s+", " ", text).strip()


def first_image(html: str, base: str = "") -> tuple[str, str] | None:
    """The first <img> in a fragment: (absolute src, alt)."""
    soup = BeautifulSoup(html, "html.parser")
    for img in soup.find_all("img"):
        src = absolute(str(img.get("src") or ""), base)
        if src.startswith(("https://", "http://")):
            return src, str(img.get("alt") or "").strip()
    return None


def slugify(text: str, limit: int = 60) -> str:
    """A file name from a title: lower-case ASCII letters, digits and '-'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "issue"


def front_matter(meta: Mapping[str, Any]) -> str:
    """A YAML front matter block, keys in the order given."""
    body = yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---\n"


def write_new(path: Path, text: str) -> None:
    """Create the issue file; an existing one is never overwritten."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    except FileExistsError:
        raise MailerError(f"{path} already exists: not overwritten") from None
    except OSError as exc:
        raise MailerError(f"{path}: cannot write: {exc.strerror}") from None
