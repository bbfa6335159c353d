"""What `mailer digest` remembers of each feed, and when each issue first went out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mailer.state.store import Store, from_text, guarded, now_text


class FeedTable(Store):
    """The feeds and feed_entries tables, and the first accepted copy of each issue."""

    @guarded
    def first_sends(self) -> dict[str, datetime]:
        """Each issue a server accepted a copy of, and when the first accepted copy went out."""
        with self._lock:
            rows = self._db.execute(
                "SELECT issue, min(first_at) FROM deliveries"
                " WHERE state IN ('sent', 'bounced') GROUP BY issue"
            ).fetchall()
        return {issue: from_text(first) for issue, first in rows}

    @guarded
    def feed_state(self, url: str) -> tuple[str, str, set[str]]:
        """A feed's ETag and Last-Modified from the last fetch, and the entries seen."""
        with self._lock:
            row = self._db.execute(
                "SELECT etag, last_modified FROM feeds WHERE url = ?", (url,)
            ).fetchone()
            seen = self._db.execute("SELECT entry FROM feed_entries WHERE url = ?", (url,))
            entries = {entry for (entry,) in seen.fetchall()}
        return (row[0], row[1], entries) if row else ("", "", entries)

    @guarded
    def save_feed(
        self, url: str, etag: str, last_modified: str, issue: str, entries: Sequence[str]
    ) -> None:
        """Keep a feed's validators and the entries `issue` took, in one transaction."""
        now = now_text()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO feeds (url, etag, last_modified, checked_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (url) DO UPDATE SET etag = excluded.etag,"
                " last_modified = excluded.last_modified, checked_at = excluded.checked_at",
                (url, etag, last_modified, now),
            )
            for entry in entries:
                db.execute(
                    "INSERT INTO feed_entries (url, entry, issue, seen_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (url, entry) DO NOTHING",
                    (url, entry, issue, now),
                )
