"""Which readers a send reads: a CSV file, or the store's confirmed readers, narrowed to a
segment (readers with any of some tags). Each pass opens a fresh listing with the shape
campaign.py and the Sender expect of a SubscriberList: iterable once, its merge-field
columns known before, its problems counted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mailer.config import EXAMPLE_SUBSCRIBERS, STORE
from mailer.errors import InputError
from mailer.state.ledger import existing_ledger
from mailer.state.reader_rows import fields_of, tag_name
from mailer.state.readers import PAGE
from mailer.state.subscribers import Problem, Subscriber, SubscriberList
from mailer.states import SubscriberStatus

if TYPE_CHECKING:
    from mailer.config import Settings


class Listing(Protocol):
    """What a send needs of a list: SubscriberList's shape."""

    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def rows_in_file(self) -> int: ...
    @property
    def problem_count(self) -> int: ...
    @property
    def skipped_count(self) -> int: ...
    @property
    def problems(self) -> list[Problem]: ...
    @property
    def skipped(self) -> list[Problem]: ...
    def __iter__(self) -> Iterator[Subscriber]: ...


class Pages(Protocol):
    """The ledger as a store listing reads it (state/readers.py)."""

    def confirmed_page(
        self, tags: Sequence[str], after: str, limit: int = PAGE
    ) -> list[tuple[str, str, str, str]]: ...
    def count_readers(self, status: Any = None, tags: Sequence[str] = ()) -> int: ...
    def reader_fields(self) -> tuple[str, ...]: ...
    def close(self) -> None: ...


def segment(value: object, where: Path) -> tuple[str, ...]:
    """Front matter `segment:` (a tag or a list of tags) as tags; InputError if malformed."""
    if value is None or value == "" or value == []:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise InputError(
            "front matter key 'segment' must be a tag or a list of tags, like [paid]", path=where
        )
    try:
        return tuple(dict.fromkeys(tag_name(t) for t in items))
    except ValueError as exc:
        raise InputError(f"front matter key 'segment': {exc}", path=where) from None


class StoreList:
    """The store's confirmed readers (with any of `tags`), iterated once, a page at a time:
    a reader unsubscribed or forgotten before their page is read is never yielded."""

    def __init__(self, ledger: Pages | None, tags: Sequence[str] = ()) -> None:
        self.ledger = ledger
        self.tags = tuple(tags)
        self.problems: list[Problem] = []
        self.skipped: list[Problem] = []
        self.problem_count = self.skipped_count = 0
        self.columns: tuple[str, ...] = ()
        self.rows_in_file = 0
        if ledger is not None:
            self.columns = ledger.reader_fields()
            self.rows_in_file = ledger.count_readers(SubscriberStatus.CONFIRMED, self.tags)
        self._iterated = False

    def __iter__(self) -> Iterator[Subscriber]:
        if self._iterated:
            raise RuntimeError("a StoreList can be iterated only once; make a new one")
        self._iterated = True
        return self._rows()

    def _rows(self) -> Iterator[Subscriber]:
        if self.ledger is None:
            return
        after, line = "", 0
        try:
            while True:
                rows = self.ledger.confirmed_page(self.tags, after)
                for _, address, name, fields in rows:
                    line += 1
                    yield Subscriber(address, name, fields_of(fields), line)
                if len(rows) < PAGE:
                    return
                after = rows[-1][0]
        finally:
            self.ledger.close()


class Segmented:
    """A CSV list narrowed to the readers whose `tags` column names any of some tags."""

    def __init__(self, listing: SubscriberList, tags: Sequence[str]) -> None:
        if "tags" not in listing.columns:
            raise InputError(
                "a segment needs tags, and this list has no 'tags' column",
                path=listing.path,
                hint="add a tags column (tags separated by commas), or use the store's list",
            )
        self.listing, self.tags = listing, frozenset(tags)
        self.columns = listing.columns
        self.rows_in_file = listing.rows_in_file
        self.problems, self.skipped = listing.problems, listing.skipped

    @property
    def problem_count(self) -> int:
        return self.listing.problem_count

    @property
    def skipped_count(self) -> int:
        return self.listing.skipped_count

    def __iter__(self) -> Iterator[Subscriber]:
        for subscriber in self.listing:
            tags = {" ".join(t.split()).lower() for t in subscriber.fields["tags"].split(",")}
            if not self.tags.isdisjoint(tags):
                yield subscriber


@dataclass(frozen=True)
class Roster:
    """Where a send's readers come from: a CSV file (path) or the store (path None)."""

    path: Path | None
    tags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How messages name the list."""
        where = self.path.name if self.path is not None else "the store"
        return f"{where} (tagged {', '.join(self.tags)})" if self.tags else where

    def with_tags(self, tags: Sequence[str]) -> Roster:
        """The same list narrowed to readers with any of `tags` (none: everyone)."""
        return Roster(self.path, tuple(tags))

    def open(self, settings: Settings) -> Listing:
        """A fresh listing, ready to be iterated once."""
        if self.path is None:
            return StoreList(existing_ledger(settings), self.tags)
        listing = SubscriberList(self.path)
        return Segmented(listing, self.tags) if self.tags else listing


def roster_for(settings: Settings, given: Path | None, *, dry_run: bool) -> Roster:
    """--subscribers, else `subscribers` (a file, or the store); a dry run of a project
    without its list falls back to the bundled example list."""
    if given is not None:
        return Roster(given)
    if settings.subscribers == STORE:
        return Roster(None)
    default = settings.root / settings.subscribers
    example = settings.root / EXAMPLE_SUBSCRIBERS
    if not default.exists() and dry_run and example.exists():
        return Roster(example)
    if not default.exists():
        raise InputError(
            f"no subscriber list at {default}",
            hint="pass --subscribers FILE or set `subscribers` in mailer.toml",
        )
    return Roster(default)
