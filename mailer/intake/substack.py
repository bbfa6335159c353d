"""`mailer import-posts`: the posts of a Substack export as issues.

An export is a zip holding posts.csv (post_id, post_date, is_published, email_sent_at,
inbox_sent_at, type, audience, title, subtitle, podcast_url) and posts/<post_id>.html, where
post_id is "<number>.<slug>". Each published newsletter or podcast post becomes
issues/<slug>.md with `published: true`; drafts, pages and threads are skipped, and a post
whose issue file exists already is left as it is, so importing twice writes nothing new.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bs4 import BeautifulSoup, Tag

from mailer.compose import load
from mailer.compose.issue import read
from mailer.config import Settings
from mailer.errors import InputError, MailerError
from mailer.intake import htmlmd

POSTS_CSV = "posts.csv"
IMPORTED_TYPES = ("newsletter", "podcast")
MAX_MEMBER = 50 * 1024 * 1024  # one post's HTML; a bigger member is not a post
_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Imported:
    """What an import did."""

    written: tuple[Path, ...]
    existing: int  # posts whose issue file was there already
    skipped: dict[str, int]  # why, and how many: draft, page, thread, no HTML


def import_posts(settings: Settings, export: Path) -> Imported:
    """Write an issue for each published post in a Substack export that has none yet."""
    try:
        archive = zipfile.ZipFile(export)
    except (zipfile.BadZipFile, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a zip file"
        raise InputError(f"cannot open the export: {detail}", path=export) from None
    with archive:
        names = {PurePosixPath(n): n for n in archive.namelist() if not n.endswith("/")}
        csv_name = next((n for p, n in names.items() if p.name == POSTS_CSV), None)
        if csv_name is None:
            raise InputError(
                f"no {POSTS_CSV} in it: is this a Substack export?",
                path=export,
                hint="Substack: Settings > Exports > Create new export",
            )
        rows = _rows(archive, csv_name, export)
        posts = PurePosixPath(csv_name).parent / "posts"
        written: list[Path] = []
        existing = 0
        skipped: Counter[str] = Counter()
        for row in rows:
            why = _skip(row)
            if why:
                skipped[why] += 1
                continue
            post_id = row["post_id"].strip()
            slug = _slug(post_id, row.get("title", ""))
            path = load.file_of(settings.root, slug)
            if path.exists():
                existing += 1
                continue
            member = names.get(posts / f"{post_id}.html")
            if member is None:
                skipped["no HTML file"] += 1
                continue
            html = _member(archive, member, export)
            htmlmd.write_new(path, _issue(row, html))
            try:
                read(path, default_lang=settings.lang)
            except MailerError:
                path.unlink()
                raise
            written.append(path)
    return Imported(tuple(written), existing, dict(skipped))


def _rows(archive: zipfile.ZipFile, name: str, export: Path) -> list[dict[str, str]]:
    text = _member(archive, name, export).decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    needed = {"post_id", "is_published", "title"}
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise InputError(
            f"{name} has no {', '.join(sorted(missing))} column: not Substack's posts.csv",
            path=export,
        )
    return [{k: v or "" for k, v in row.items() if k} for row in reader]


def _member(archive: zipfile.ZipFile, name: str, export: Path) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > MAX_MEMBER:
        raise InputError(f"{name} is {info.file_size} bytes: too big to be a post", path=export)
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise InputError(f"cannot read {name}: {exc}", path=export) from None


def _skip(row: dict[str, str]) -> str:
    """Why a row is not imported, or ""."""
    if row.get("is_published", "").strip().lower() != "true":
        return "draft"
    kind = row.get("type", "").strip().lower() or "newsletter"
    return "" if kind in IMPORTED_TYPES else kind


def _slug(post_id: str, title: str) -> str:
    """'123456.my-post' -> 'my-post' (Substack's own slug), else one made from the title."""
    number, _, slug = post_id.partition(".")
    slug = _FILE_NAME.sub("-", slug).strip("-.") if slug else ""
    return slug or htmlmd.slugify(title) if slug or title else f"post-{number}"


def _issue(row: dict[str, str], html: bytes) -> str:
    meta: dict[str, Any] = {"title": row.get("title", "").strip() or "Untitled"}
    subtitle = row.get("subtitle", "").strip()
    if subtitle:
        meta["preheader"] = subtitle
    when = row.get("post_date") or row.get("email_sent_at") or row.get("inbox_sent_at") or ""
    if when.strip():
        meta["date"] = when.strip()
    meta["published"] = True
    audience = row.get("audience", "").strip()
    if audience and audience != "everyone":
        meta["audience"] = audience  # paid posts: decide before publishing the archive
    meta["substack_id"] = row["post_id"].strip()
    body = to_markdown(html.decode("utf-8", errors="replace"))
    podcast = row.get("podcast_url", "").strip()
    if podcast:
        body = f"[Listen to this episode]({podcast})\n\n{body}"
    return htmlmd.front_matter(meta) + "\n" + body + "\n"


def to_markdown(html: str) -> str:
    """A Substack post's HTML as Markdown: its widgets gone, footnotes as [^n]."""
    soup = BeautifulSoup(html, "html.parser")
    for selector in (
        ".subscription-widget-wrap",
        ".subscription-widget",
        ".share-dialog",
        ".post-ufi",
        ".comment-button",
    ):
        for tag in soup.select(selector):
            tag.decompose()
    for wrapper in soup.select("p.button-wrapper"):
        link = wrapper.find("a")
        href = str(link.get("href") or "") if isinstance(link, Tag) else ""
        # Share, subscribe and comment buttons point back at Substack: only links stay.
        if not href or re.search(r"action=share|/subscribe\b|/comments\b", href):
            wrapper.decompose()
    for figure in soup.select(".captioned-image-container figure, figure"):
        _flatten_figure(soup, figure)
    notes = _footnotes(soup)
    text = htmlmd.to_markdown(soup)
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _flatten_figure(soup: BeautifulSoup, figure: Tag) -> None:
    """An image (linked to itself, in Substack's way) and its caption -> the image alone, alt
    taken from the caption when it has none, and the caption as an italic line."""
    img = figure.find("img")
    if not isinstance(img, Tag):
        return
    caption = figure.find("figcaption")
    caption_text = caption.get_text(" ", strip=True) if isinstance(caption, Tag) else ""
    clean = soup.new_tag("img", attrs={"src": str(img.get("src") or "")})
    clean["alt"] = str(img.get("alt") or "").strip() or caption_text
    paragraph = soup.new_tag("p")
    paragraph.append(clean)
    replacement = [paragraph]
    if caption_text:
        note = soup.new_tag("p")
        italic = soup.new_tag("em")
        italic.string = caption_text
        note.append(italic)
        replacement.append(note)
    container = figure.find_parent(class_="captioned-image-container") or figure
    container.replace_with(*replacement)


def _footnotes(soup: BeautifulSoup) -> list[str]:
    """Substack's footnote anchors -> [^n] in the text; the notes -> definitions, returned."""
    for anchor in soup.select("a.footnote-anchor"):
        anchor.replace_with(f"[^{anchor.get_text(strip=True)}]")
    notes: list[str] = []
    for note in soup.select("div.footnote"):
        number = note.select_one(".footnote-number")
        content = note.select_one(".footnote-content")
        label = number.get_text(strip=True) if number else str(len(notes) + 1)
        text = htmlmd.to_markdown(str(content)) if content else ""
        notes.append(f"[^{label}]: " + text.replace("\n\n", " ").replace("\n", " "))
        note.decompose()
    return notes
