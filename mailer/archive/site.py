"""`mailer publish`: the archive as a static site; and the same pages for `mailer serve`.

    index.html                 the public issues, newest first (and a signup form)
    issues/<slug>/index.html   each issue as the email renders it, nobody's data in it
    feed.xml                   Atom 1.0, the newest issues in full
    sitemap.xml
    assets/...                 the project's assets/ folder, if it has one

A file is written only when its bytes change. Rendering an issue is the slow part (~0.3 s):
what was rendered is remembered in the state directory (archive.json) by the hash of the
issue and of everything else a page depends on, so a publish renders only what changed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer.archive import feed as feed_mod
from mailer.archive import pages
from mailer.archive.catalog import Catalog, Entry, Store, catalog, write_if_changed
from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.state.ledger import existing_ledger

STORE_NAME = "archive.json"
ASSETS = "assets"


@dataclass(frozen=True)
class Published:
    """What a publish did."""

    out: Path
    site: str
    issues: int
    written: tuple[Path, ...]
    removed: tuple[Path, ...]
    unchanged: int
    rendered: int
    warnings: tuple[str, ...]
    elapsed: float  # seconds


def first_sends(settings: Settings) -> dict[str, datetime]:
    """When each issue the list was sent first went out (nothing when nothing was sent)."""
    ledger = existing_ledger(settings)
    if ledger is None:
        return {}
    with ledger:
        return ledger.first_sends()


def publish(settings: Settings, out: Path, base_url: str | None = None) -> Published:
    """Write the public archive to `out`, changing only the files whose bytes change."""
    started = time.perf_counter()
    site = pages.site_url(settings, base_url)
    if not site:
        raise ConfigError(
            "publish needs the site's public URL, for the feed's links",
            hint="add --base-url https://news.example.org/ (or set archive_url)",
        )
    if not site.startswith(("https://", "http://")):
        raise ConfigError(f"--base-url must be an http(s) URL, got {base_url!r}")
    store_path = settings.state_path / STORE_NAME
    store = Store.load(store_path)
    found = catalog(settings, first_sends(settings), store)
    key = pages.fingerprint(settings, site)
    files: dict[Path, bytes | None] = {}  # None: an issue page known to be up to date
    contents: dict[str, str] = {}
    rendered = 0
    for entry in found.entries:
        target = out / pages.ISSUES_DIR / entry.slug / "index.html"
        page_key = hashlib.sha256(f"{entry.source}\n{key}".encode()).hexdigest()
        kept = store.rendered(entry.slug, page_key)
        if kept is not None and _holds(target, kept.get("sha", "")):
            files[target] = None
            contents[entry.slug] = str(kept.get("content", ""))
            continue
        done = pages.render_issue(settings, entry, site, store.parsed.pop(entry.source, None))
        rendered += 1
        data = done.page.encode("utf-8")
        files[target] = data
        contents[entry.slug] = done.content
        sha = hashlib.sha256(data).hexdigest()
        store.keep_rendered(entry.slug, page_key, sha=sha, content=done.content)
    files[out / "index.html"] = pages.index_page(
        settings,
        found.entries,
        href=lambda e: f"{pages.ISSUES_DIR}/{e.slug}/",
        feed_href=pages.FEED_PATH,
    ).encode("utf-8")
    files[out / pages.FEED_PATH] = feed_mod.atom(settings, site, found.entries, contents)
    files[out / "sitemap.xml"] = pages.sitemap(site, found.entries).encode("utf-8")
    assets = settings.root / ASSETS
    if assets.is_dir():
        for path in sorted(p for p in assets.rglob("*") if p.is_file()):
            files[out / ASSETS / path.relative_to(assets)] = path.read_bytes()
    written = [
        path for path, data in files.items() if data is not None and write_if_changed(path, data)
    ]
    removed = _remove_stale(store, out, set(files))
    write_if_changed(store_path, store.dump())
    return Published(
        out=out,
        site=site,
        issues=len(found.entries),
        written=tuple(written),
        removed=tuple(removed),
        unchanged=len(files) - len(written),
        rendered=rendered,
        warnings=found.warnings,
        elapsed=time.perf_counter() - started,
    )


def _holds(path: Path, sha: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha
    except OSError:
        return False


def _remove_stale(store: Store, out: Path, now: set[Path]) -> list[Path]:
    """Delete what an earlier publish to `out` wrote and this one did not (an issue now
    `published: false`, a removed asset); nothing else in `out` is touched."""
    where = str(out.resolve())
    removed = []
    for name in store.files.get(where, []):
        path = out / name
        if path not in now and path.is_file():
            path.unlink()
            removed.append(path)
            parent = path.parent
            while parent != out and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    store.files[where] = sorted(str(p.relative_to(out)) for p in now)
    return removed


class LiveArchive:
    """The same pages for the web app, rendered on first request and kept in memory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store()
        self._lock = threading.Lock()  # one render at a time: it is CPU-bound and rare
        self._pages: dict[tuple[str, str], pages.Rendered] = {}

    def catalog(self, sent: Mapping[str, datetime]) -> Catalog:
        with self._lock:
            return catalog(self.settings, sent, self.store)

    def rendered(self, entry: Entry, site: str) -> pages.Rendered:
        key = hashlib.sha256(
            f"{entry.source}\n{pages.fingerprint(self.settings, site)}".encode()
        ).hexdigest()
        done = self._pages.get((entry.slug, key))
        if done is not None:
            return done
        with self._lock:
            done = self._pages.get((entry.slug, key))
            if done is None:
                parsed = self.store.parsed.pop(entry.source, None)
                done = pages.render_issue(self.settings, entry, site, parsed)
                self._pages = {k: v for k, v in self._pages.items() if k[0] != entry.slug}
                self._pages[(entry.slug, key)] = done
            return done

    def page(self, slug: str, sent: Mapping[str, datetime], site: str) -> str | None:
        """An issue's page, or None when it is not public."""
        entry = next((e for e in self.catalog(sent).entries if e.slug == slug), None)
        return self.rendered(entry, site).page if entry is not None else None

    def index(
        self, sent: Mapping[str, datetime], href: Callable[[Entry], str], feed_href: str
    ) -> str:
        entries = self.catalog(sent).entries
        return pages.index_page(self.settings, entries, href=href, feed_href=feed_href)

    def feed(self, sent: Mapping[str, datetime], site: str) -> bytes:
        entries = self.catalog(sent).entries
        shown = entries[: feed_mod.FEED_ENTRIES]
        contents = {e.slug: self.rendered(e, site).content for e in shown}
        return feed_mod.atom(self.settings, site, entries, contents)
