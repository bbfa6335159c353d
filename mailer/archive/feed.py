"""The archive as an Atom 1.0 feed (RFC 4287), written with feedgen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from mailer.archive.catalog import Entry
from mailer.archive.pages import FEED_PATH, issue_url
from mailer.config import Settings

# Feed readers poll the whole file: the newest issues, each in full, are what they need.
FEED_ENTRIES = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def atom(
    settings: Settings, site: str, entries: Sequence[Entry], contents: Mapping[str, str]
) -> bytes:
    """The feed for `entries` (newest first): ids are the pages' URLs, which never change
    while the site stays where it is; `contents` holds each issue's HTML, URLs absolute."""
    from feedgen.feed import FeedGenerator

    shown = list(entries[:FEED_ENTRIES])
    feed = FeedGenerator()
    feed.id(site)
    feed.title(settings.list_name)
    feed.link(href=site, rel="alternate", type="text/html")
    feed.link(href=site + FEED_PATH, rel="self", type="application/atom+xml")
    feed.language(settings.lang)
    feed.author({"name": settings.list_name})
    feed.generator("mailer", uri=None, version=None)
    # The newest change, never the clock: an unchanged archive gives the same bytes.
    feed.updated(max((e.updated for e in shown), default=_EPOCH))
    for issue in shown:
        item = feed.add_entry(order="append")
        url = issue_url(site, issue.slug)
        item.id(url)
        item.title(issue.title)
        item.link(href=url, rel="alternate", type="text/html")
        item.published(issue.published)
        item.updated(issue.updated)
        if issue.preheader:
            item.summary(issue.preheader)
        item.content(contents.get(issue.slug, ""), type="html")
    return cast(bytes, feed.atom_str(pretty=True))
