"""The archive's pages: an issue as the email renders it (nobody's data in it), the index,
the sitemap. Each is text; what serves or writes it is the caller's business."""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast
from urllib.parse import quote, urljoin, urlsplit

from mailer.archive.catalog import Entry
from mailer.compose import images as images_mod
from mailer.compose import issue as issue_mod
from mailer.compose import load
from mailer.compose.markdown import parser
from mailer.compose.render import render, template_dirs
from mailer.compose.slots import fill_slots
from mailer.config import Settings

FEED_PATH = "feed.xml"
ISSUES_DIR = "issues"
# The unsubscribe link: a slot's anchor and the separator that follows it in the footer.
_ANCHOR = r"<a\b[^>]*%%mailer:{index}%%[^>]*>.*?</a>(?:\s*(?:&middot;|&#183;|\u00b7)\s*)?"
_URL_ATTR = re.compile(r"""(\s(?:href|src)\s*=\s*)(["'])(.*?)\2""", re.I | re.S)
_HEAD_END = re.compile(r"</head>", re.I)
_BODY_START = re.compile(r"<body\b[^>]*>", re.I)


@dataclass(frozen=True)
class Rendered:
    """An issue for the web: its page, and its body as HTML for the feed."""

    page: str
    content: str


def site_url(settings: Settings, given: str | None = None) -> str:
    """The public URL the site lives at, ending in '/': --base-url, else archive_url
    without its `/issues`, else base_url; "" when nothing says."""
    if given:
        url = given
    elif settings.archive_url:
        url = settings.archive_url.rstrip("/")
        url = url[: -len(ISSUES_DIR) - 1] if url.endswith("/" + ISSUES_DIR) else url
    else:
        url = settings.base_url
    return url.rstrip("/") + "/" if url else ""


def issue_url(site: str, slug: str) -> str:
    """An issue's page: what archive_url/NAME/ names in the emails when the two agree."""
    return f"{site}{ISSUES_DIR}/{quote(slug)}/"


def fingerprint(settings: Settings, site: str) -> str:
    """A hash of everything but the issue file that a rendered page depends on."""
    parts = [site, importlib.metadata.version("mailer"), repr(sorted(settings.masked().items()))]
    for folder in template_dirs(settings):
        for path in sorted(folder.glob("*.j2")):
            parts.append(f"{path.name}\n{path.read_text(encoding='utf-8')}")
    try:
        parts.append(images_mod.cache_file(settings).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        parts.append("")
    return hashlib.sha256("\n\0".join(parts).encode("utf-8")).hexdigest()


def render_issue(
    settings: Settings, entry: Entry, site: str, parsed: issue_mod.Issue | None = None
) -> Rendered:
    """The issue's web page and feed content (`parsed`: the issue already read, if it was)."""
    if parsed is None:
        parsed = load.read(settings, entry.path)
    # No archive_url: a page needs no "view in browser" link to itself.
    email = render(parsed, replace(settings, archive_url=""))
    page = email.html
    values = []
    for index, slot in enumerate(email.slots):
        if slot.field == "unsubscribe_url":
            page = re.sub(_ANCHOR.format(index=index), "", page, flags=re.S | re.I)
            values.append("")
        elif slot.field == "email":
            values.append(slot.fallback or "you")
        else:
            values.append(slot.fallback)
    page = fill_slots(page, values, escape=True)
    url = issue_url(site, entry.slug)
    name = html.escape(settings.list_name)
    head = (
        f'<link rel="canonical" href="{html.escape(url)}">\n'
        f'<link rel="alternate" type="application/atom+xml" title="{name}"'
        f' href="{html.escape(site + FEED_PATH)}">\n'
    )
    nav = (
        '<div style="text-align:center;padding:16px 0 0;font:14px/24px sans-serif">'
        f'<a href="{html.escape(site)}" style="color:#57606a">'
        f"&larr; {name}: all issues</a></div>"
    )
    page = _HEAD_END.sub(lambda m: head + m.group(0), page, count=1)
    page = _BODY_START.sub(lambda m: m.group(0) + nav, page, count=1)
    return Rendered(page=page, content=absolute_urls(body_html(parsed), url))


def body_html(parsed: issue_mod.Issue) -> str:
    """The issue's Markdown as plain HTML: what a feed reader shows."""
    md = parser()
    return cast(str, md.renderer.render(list(parsed.tokens), md.options, {}))


def absolute_urls(fragment: str, base: str) -> str:
    """Every href and src in an HTML fragment made absolute against `base`."""

    def fix(match: re.Match[str]) -> str:
        value = html.unescape(match.group(3))
        if urlsplit(value).scheme or value.startswith("#"):
            return match.group(0)
        absolute = html.escape(urljoin(base, value), quote=True)
        return f"{match.group(1)}{match.group(2)}{absolute}{match.group(2)}"

    return _URL_ATTR.sub(fix, fragment)


# -- the index ------------------------------------------------------------------------------

_STYLE = """
  body { font: 16px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
         background: #f3f4f6; margin: 0; padding: 48px 16px; }
  main { max-width: 40rem; margin: 0 auto; background: #fff; border-radius: 8px;
         padding: 24px 28px; }
  h1 { font-size: 1.6rem; line-height: 1.3; margin: 0 0 12px; }
  p { margin: 0 0 12px; }
  ol { list-style: none; padding: 0; margin: 24px 0 0; }
  li { margin: 0 0 20px; }
  a { color: #0b62d6; }
  time, .muted { color: #57606a; font-size: .9rem; }
  .title { font-size: 1.1rem; font-weight: 600; display: block; }
  form { display: flex; flex-wrap: wrap; gap: 8px; margin: 16px 0 8px; }
  input { font: inherit; padding: 8px 10px; border: 1px solid #d0d7de; border-radius: 6px;
          flex: 1 1 12rem; }
  button { font: inherit; font-weight: 600; color: #fff; background: #0b62d6; border: 0;
           border-radius: 6px; padding: 8px 18px; cursor: pointer; }
  .trap { position: absolute; left: -10000px; width: 1px; height: 1px; overflow: hidden; }
"""


def index_page(
    settings: Settings,
    entries: Sequence[Entry],
    *,
    href: Callable[[Entry], str],
    feed_href: str,
) -> str:
    """The list of public issues, newest first, with a signup form when subscribe_url is set."""
    name = html.escape(settings.list_name)
    items = []
    for entry in entries:
        day = entry.published.strftime("%Y-%m-%d")
        preheader = (
            f'\n  <p class="muted">{html.escape(entry.preheader)}</p>' if entry.preheader else ""
        )
        items.append(
            f'<li>\n  <time datetime="{entry.published.isoformat()}">{day}</time>\n'
            f'  <a class="title" href="{html.escape(href(entry), quote=True)}"'
            f' hreflang="{html.escape(entry.lang)}">{html.escape(entry.title)}</a>{preheader}\n'
            "</li>"
        )
    listing = (
        '<ol class="issues">\n' + "\n".join(items) + "\n</ol>" if items else "<p>No issues yet.</p>"
    )
    feed = html.escape(feed_href, quote=True)
    return (
        "<!doctype html>\n"
        f'<html lang="{html.escape(settings.lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{name}</title>\n"
        f'<link rel="alternate" type="application/atom+xml" title="{name}" href="{feed}">\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{name}</h1>\n{subscribe_form(settings)}"
        f'<p class="muted">Issues sent so far, newest first. <a href="{feed}">Atom feed</a></p>\n'
        f"{listing}\n</main>\n</body>\n</html>\n"
    )


def subscribe_form(settings: Settings) -> str:
    """A signup form posting email and name to subscribe_url; `website` is a trap for bots
    (hidden from people, filled in by form-filling scripts)."""
    if not settings.subscribe_url:
        return ""
    action = html.escape(settings.subscribe_url, quote=True)
    return (
        f'<form class="subscribe" method="post" action="{action}">\n'
        '  <input type="email" name="email" required placeholder="you@example.org"'
        ' autocomplete="email" aria-label="Email address">\n'
        '  <input type="text" name="name" placeholder="Name (optional)" autocomplete="name"'
        ' aria-label="Name">\n'
        '  <div class="trap" aria-hidden="true"><label>Leave this empty'
        ' <input type="text" name="website" tabindex="-1" autocomplete="off"></label></div>\n'
        '  <button type="submit">Subscribe</button>\n</form>\n'
    )


def sitemap(site: str, entries: Sequence[Entry]) -> str:
    """sitemaps.org XML: the index and every issue page."""
    newest = max((e.updated for e in entries), default=None)
    rows = [(site, newest)] + [(issue_url(site, e.slug), e.updated) for e in entries]
    urls = "".join(
        f"  <url><loc>{html.escape(loc)}</loc>"
        + (f"<lastmod>{when.strftime('%Y-%m-%dT%H:%M:%SZ')}</lastmod>" if when else "")
        + "</url>\n"
        for loc, when in rows
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{urls}</urlset>\n"
    )
