"""`mailer digest`: a feed's new entries as a new issue (RSS-to-email).

The feed is fetched conditionally (the ETag and Last-Modified of the last fetch are in the
ledger); entries are known by their guid or id, else their link, so each is listed once. The
issue's body comes from the template digest.md.j2 (the project's templates/ may override it).
"""

from __future__ import annotations

import calendar
import re
import xml.sax
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailer.compose.issue import slug_of
from mailer.compose.render import environment, template_dirs
from mailer.config import Settings
from mailer.intake import htmlmd
from mailer.intake.fetch import NOT_MODIFIED, FeedError, Fetched, fetch
from mailer.state.ledger import open_ledger
from mailer.when import now as current_time

TEMPLATE = "digest.md.j2"
DEFAULT_MAX = 10
SUMMARY_CHARS = 600  # a summary longer than this is cut after a paragraph
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>])")


@dataclass(frozen=True)
class Item:
    """One entry as the template sees it."""

    key: str  # guid or id, else link: how the entry is remembered
    title: str
    link: str
    date: str  # YYYY-MM-DD, or "" when the feed gives no date we can read
    summary: str  # Markdown
    image: tuple[str, str] | None  # (src, alt)
    when: datetime | None


@dataclass(frozen=True)
class Digest:
    """What `mailer digest` did: the issue it wrote, or why none."""

    feed_title: str
    path: Path | None  # None: nothing new
    entries: int
    left_out: int  # new entries past --max, remembered as seen
    not_modified: bool  # the server answered 304


def digest(
    settings: Settings,
    url: str,
    *,
    title: str | None = None,
    limit: int = DEFAULT_MAX,
    send_at: str | None = None,
) -> Digest:
    """Fetch `url` and write issues/digest-DATE.md with what is new since the last digest."""
    with open_ledger(settings) as ledger:
        etag, modified, seen = ledger.feed_state(url)
        got = fetch(url, etag=etag, last_modified=modified)
        if got.status == NOT_MODIFIED:
            return Digest("", None, 0, 0, not_modified=True)
        parsed = parse(got)
        base = _base(parsed, got)
        if base != got.url:  # relative links in the entries: against the site, not the feed
            parsed = parse(got, base)
        feed = parsed.feed
        feed_title = htmlmd.plain_text(str(feed.get("title") or "")) or urlsplit(url).netloc
        items = [item for item in _items(parsed, base) if item.key not in seen]
        items.sort(key=lambda i: i.when or datetime.min.replace(tzinfo=UTC), reverse=True)
        shown, rest = items[:limit], items[limit:]
        path = None
        if shown:
            path = _write(settings, url, feed, base, feed_title, shown, title, send_at)
        # New entries past --max are dropped, not saved for later: a digest is what is new.
        issue = slug_of(path) if path else ""
        ledger.save_feed(url, got.etag, got.last_modified, issue, [i.key for i in items])
    return Digest(feed_title, path, len(shown), len(rest), not_modified=False)


def parse(got: Fetched, base: str = "") -> Any:
    """feedparser's reading of a fetched body (relative links against `base`, else the feed's
    URL); FeedError when it is not a well-formed feed."""
    import feedparser

    headers = {"content-location": base or got.url, "content-type": got.content_type}
    parsed = feedparser.parse(got.body, response_headers=headers)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if not parsed.get("version"):
        looks = "an HTML page" if b"<html" in got.body[:2048].lower() else "something else"
        raise FeedError(f"{got.url}: not an RSS or Atom feed (it is {looks})")
    if isinstance(problem, xml.sax.SAXParseException):
        raise FeedError(
            f"{got.url}: broken XML at line {problem.getLineNumber()}: {problem.getMessage()}"
        )
    return parsed


def _base(parsed: Any, got: Fetched) -> str:
    """What relative links resolve against: the feed's own URL, or for RSS (which has no
    xml:base) the site the channel links to."""
    link = str(parsed.feed.get("link") or "")
    if str(parsed.get("version", "")).startswith("rss") and link.startswith("http"):
        return link
    return got.url


def _items(parsed: Any, base: str) -> list[Item]:
    items = []
    for entry in parsed.entries:
        link = htmlmd.absolute(str(entry.get("link") or ""), base)
        key = str(entry.get("id") or "") or link
        if not key:
            continue  # nothing to know it by next time
        html = _summary_html(entry)
        when = _when(entry)
        title = htmlmd.plain_text(str(entry.get("title") or "")) or link
        items.append(
            Item(
                key=key,
                title=title,
                link=link,
                date=when.strftime("%Y-%m-%d") if when else "",
                summary=_shorten(htmlmd.to_markdown(html, base=link or base, summary=True)),
                image=_image(entry, html, link or base, title),
                when=when,
            )
        )
    return items


def _summary_html(entry: Any) -> str:
    summary = str(entry.get("summary") or "")
    if summary:
        return summary
    content = entry.get("content") or []
    return str(content[0].get("value") or "") if content else ""


def _when(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed"):
        value = entry.get(key)
        if value:
            return datetime.fromtimestamp(calendar.timegm(value), UTC)
    return None


def _image(entry: Any, html: str, base: str, title: str) -> tuple[str, str] | None:
    """The entry's picture: media:thumbnail or media:content, an image enclosure, else the
    first <img> of its summary or content. Its alt is the entry's title when it has none."""
    candidates = [m.get("url") for m in entry.get("media_thumbnail") or []]
    candidates += [
        m.get("url")
        for m in entry.get("media_content") or []
        if str(m.get("medium") or m.get("type") or "image").startswith("image")
    ]
    candidates += [
        e.get("href")
        for e in entry.get("enclosures") or []
        if str(e.get("type") or "").startswith("image/")
    ]
    for src in candidates:
        absolute = htmlmd.absolute(str(src or ""), base)
        if absolute.startswith(("https://", "http://")):
            return absolute, title
    for value in [html] + [str(c.get("value") or "") for c in entry.get("content") or []]:
        found = htmlmd.first_image(value, base)
        if found:
            return found[0], found[1] or title
    return None


def _shorten(markdown: str) -> str:
    """Whole paragraphs up to about SUMMARY_CHARS, then an ellipsis."""
    kept: list[str] = []
    for paragraph in markdown.split("\n\n"):
        if kept and sum(map(len, kept)) + len(paragraph) > SUMMARY_CHARS:
            return "\n\n".join(kept) + "\n\n…"
        kept.append(paragraph)
    return "\n\n".join(kept)


def _md(text: object) -> str:
    """Text for a Markdown line: its syntax characters escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def _write(
    settings: Settings,
    url: str,
    feed: Any,
    base: str,
    feed_title: str,
    items: list[Item],
    title: str | None,
    send_at: str | None,
) -> Path:
    today = current_time()
    env = environment(template_dirs(settings))
    env.filters["md"] = _md
    env.filters["url"] = lambda u: f"<{u}>" if re.search(r"[\s()<>]", str(u)) else str(u)
    site = htmlmd.absolute(str(feed.get("link") or ""), base) or url
    body = env.get_template(TEMPLATE).render(
        feed={"title": feed_title, "link": site, "url": url},
        entries=items,
        count=len(items),
    )
    names = [i.title for i in items]
    preheader = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
    meta: dict[str, Any] = {
        "title": title or f"{feed_title}: new posts, {today:%Y-%m-%d}",
        "preheader": preheader,
        "date": today.isoformat(timespec="seconds"),
        "digest": url,
    }
    lang = str(feed.get("language") or "")
    if _LANG.match(lang):
        meta["lang"] = lang
    if send_at:
        meta["send_at"] = send_at
    folder = settings.root / "issues"
    stem = f"digest-{today:%Y-%m-%d}"
    path, n = folder / f"{stem}.md", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.md"
    htmlmd.write_new(path, htmlmd.front_matter(meta) + "\n" + body.strip() + "\n")
    return path
