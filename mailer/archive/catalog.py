"""Which issues are public, and when each was published.

Public: every issue the list was sent (the ledger knows) unless its front matter says
`published: false`, and every issue whose front matter says `published: true`. Never one that
says `draft: true`, never the welcome issue. Its date: front matter `date`, else the time its
first copy went out.

Reading an issue parses all of its Markdown, so what a read found is kept by the hash of the
file's bytes (a Store): with hundreds of issues only the changed ones are read again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from mailer.compose import issue as issue_mod
from mailer.compose import load
from mailer.compose.fields import fill_text
from mailer.config import Settings
from mailer.errors import InputError, MailerError
from mailer.when import now, parse_when

# Bump when what a Store keeps changes shape: an old file is then read as empty.
STORE_FORMAT = 2


@dataclass(frozen=True)
class Facts:
    """What one read of an issue file says about its place in the archive."""

    title: str
    preheader: str
    lang: str
    listed: bool | None  # front matter `published`: True, False, or not said
    draft: bool
    date: str  # ISO 8601 from front matter `date`, "" if none
    updated: str  # ISO 8601 from front matter `updated`, "" if none
    send_at: str = ""  # ISO 8601 from front matter `send_at`, "" if none
    problem: str = ""  # why `date` or `updated` was not understood


@dataclass(frozen=True)
class Entry:
    """One public issue."""

    slug: str
    path: Path
    title: str
    preheader: str
    lang: str
    published: datetime
    updated: datetime
    source: str  # sha256 of the file's bytes and the settings it is read with


@dataclass(frozen=True)
class Catalog:
    """The public issues, newest first, and what was wrong with the files left out."""

    entries: tuple[Entry, ...]
    warnings: tuple[str, ...]


class Store:
    """What earlier reads and renders found, by content hash; a JSON file or memory."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        ok = data is not None and data.get("format") == STORE_FORMAT
        self.issues: dict[str, dict[str, Any]] = dict(data["issues"]) if ok and data else {}
        self.files: dict[str, list[str]] = dict(data["files"]) if ok and data else {}
        self._stamps: dict[Path, tuple[tuple[int, int], str]] = {}
        # Issues read in this process, by source hash: a page rendered next needs no new read.
        self.parsed: dict[str, issue_mod.Issue] = {}

    @classmethod
    def load(cls, path: Path) -> Store:
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()  # no cache, or a damaged one: everything is read again

    def dump(self) -> bytes:
        data = {"format": STORE_FORMAT, "issues": self.issues, "files": self.files}
        return json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")

    def facts(self, slug: str, source: str) -> Facts | None:
        kept = self.issues.get(slug, {})
        if kept.get("source") != source:
            return None
        try:
            return Facts(**kept["facts"])
        except (KeyError, TypeError):
            return None

    def keep_facts(self, slug: str, source: str, facts: Facts) -> None:
        kept = self.issues.setdefault(slug, {})
        if kept.get("source") != source:
            kept.clear()
        kept.update(source=source, facts=asdict(facts))

    def rendered(self, slug: str, key: str) -> dict[str, Any] | None:
        kept = self.issues.get(slug, {}).get("rendered")
        return kept if isinstance(kept, dict) and kept.get("key") == key else None

    def keep_rendered(self, slug: str, key: str, **values: Any) -> None:
        self.issues.setdefault(slug, {})["rendered"] = {"key": key, **values}

    def digest(self, path: Path, context: str) -> str:
        """The hash of a file's bytes and `context`, remembered while its stat stays the same."""
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        known = self._stamps.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        value = hashlib.sha256(path.read_bytes() + context.encode("utf-8")).hexdigest()
        self._stamps[path] = (stamp, value)
        return value


def welcome_issue(settings: Settings) -> str:
    """The issue sent to new subscribers, if a setting names one: never in the archive."""
    return str(getattr(settings, "welcome", "") or "")


def catalog(settings: Settings, sent: Mapping[str, datetime], store: Store) -> Catalog:
    """The public issues (newest first), given when each sent issue first went out."""
    context = f"{settings.lang}\n{settings.base_url}"
    welcome = welcome_issue(settings)
    entries: list[Entry] = []
    warnings: list[str] = []
    paths = load.files(settings.root)
    store.parsed.clear()  # only what this call reads is kept, for the renders that follow it
    for path in paths:
        slug = issue_mod.slug_of(path)
        if slug == welcome or (slug not in sent and not _may_be_listed(path)):
            continue
        try:
            source = store.digest(path, context)
        except OSError:
            continue  # removed while we looked
        facts = store.facts(slug, source)
        if facts is None:
            try:
                facts = read_facts(path, settings, store.parsed, source)
            except MailerError as exc:
                if slug in sent:
                    raise
                warnings.append(f"{exc.format_message()} (left out of the archive)")
                continue
            store.keep_facts(slug, source, facts)
        entry = _entry(slug, path, source, facts, sent.get(slug), warnings)
        if entry is not None:
            entries.append(entry)
    entries.sort(key=lambda e: (e.published, e.slug), reverse=True)
    return Catalog(tuple(entries), tuple(warnings))


def _may_be_listed(path: Path) -> bool:
    """An unsent issue is public only if it says `published:` (a cheap look before parsing)."""
    try:
        head = path.read_bytes()[:8192]
    except OSError:
        return False
    return b"published:" in head


def _entry(
    slug: str,
    path: Path,
    source: str,
    facts: Facts,
    first_send: datetime | None,
    warnings: list[str],
) -> Entry | None:
    if facts.draft or facts.listed is False or (first_send is None and facts.listed is not True):
        return None
    if first_send is None and facts.send_at and datetime.fromisoformat(facts.send_at) > now():
        return None  # scheduled: public once it goes out, not before
    if facts.problem:
        warnings.append(f"{path}: {facts.problem}")
    published = datetime.fromisoformat(facts.date) if facts.date else first_send
    if published is None:
        warnings.append(
            f"{path}: says `published: true` but was never sent and has no `date`"
            " (left out of the archive; add `date: 2026-01-31`)"
        )
        return None
    updated = datetime.fromisoformat(facts.updated) if facts.updated else published
    return Entry(
        slug=slug,
        path=path,
        title=facts.title,
        preheader=facts.preheader,
        lang=facts.lang,
        published=published,
        updated=max(updated, published),
        source=source,
    )


def read_facts(
    path: Path, settings: Settings, parsed_by_source: dict[str, issue_mod.Issue], source: str
) -> Facts:
    """Read an issue file for what the archive needs of it (the parsed issue is kept)."""
    parsed = load.read(settings, path)
    parsed_by_source[source] = parsed
    meta = parsed.meta
    tz = meta.get("tz") if isinstance(meta.get("tz"), str) else None
    problems = []
    when: dict[str, str] = {}
    for key in ("date", "updated"):
        value = meta.get(key)
        if value in (None, ""):
            when[key] = ""
            continue
        try:
            when[key] = moment(value, tz).isoformat()
        except ValueError:
            when[key] = ""
            problems.append(f"front matter key {key!r} is not a date: {value!r}")
    preheader = parsed.preheader
    if parsed.preheader_from_body:  # its merge fields as the public page fills them
        preheader = fill_text(preheader, {"email": "you"}, settings.name_fallback)
    return Facts(
        title=parsed.title,
        preheader=preheader,
        lang=parsed.lang,
        listed=_flag(meta.get("published")),
        draft=_flag(meta.get("draft")) is True,
        date=when["date"],
        updated=when["updated"],
        send_at=parsed.send_at.isoformat() if parsed.send_at else "",
        problem="; ".join(problems),
    )


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    return None


def moment(value: object, tz: str | None = None) -> datetime:
    """A front matter date as an aware UTC time: a date (midnight UTC), an ISO 8601 or RFC 2822
    time; a time without a zone is taken in front matter `tz`, else UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            try:
                return moment(date.fromisoformat(text))
            except ValueError:
                pass
        for zone in (tz, tz or "UTC"):  # a zone in the text wins; without one, tz or UTC
            try:
                return parse_when(text, zone)
            except ValueError:
                pass
        try:  # Jekyll's "2020-01-10 10:00:00 +0000"
            return datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z").astimezone(UTC)
        except ValueError:
            pass
        try:
            return parsedate_to_datetime(text).astimezone(UTC)
        except (TypeError, ValueError, IndexError):
            raise ValueError(text) from None
    if isinstance(value, datetime):
        return parse_when(value, tz or "UTC")
    raise ValueError(str(value))


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` unless the file already holds exactly it; True if written.

    Through a temporary file and a rename: a web server never serves half a page.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_bytes(data)
        os.replace(temp, path)
    except OSError as exc:
        raise MailerError(f"{path}: cannot write: {exc.strerror}") from None
    return True
