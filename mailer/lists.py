"""The subscriber list and the suppression list: check, export, suppress by hand; backups."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailer.config import Settings
from mailer.state.backup import Backup, backup_postgres, backup_sqlite
from mailer.state.ledger import DB_NAME, Suppression, existing_ledger, open_ledger
from mailer.state.subscribers import Problem, Subscriber, SubscriberList, check_email
from mailer.states import Reason


@dataclass(frozen=True)
class Checked:
    """A list read through: how many are good, the exact counts of bad and skipped rows,
    and the first of them (with their lines) as the list keeps them."""

    path: Path
    good: int
    invalid_count: int
    skipped_count: int
    invalid: tuple[Problem, ...]
    skipped: tuple[Problem, ...]


def check(path: Path) -> Checked:
    """Read the whole list, collecting what is wrong with each row."""
    listing = SubscriberList(path)
    good = sum(1 for _ in listing)
    return Checked(
        listing.path,
        good,
        listing.problem_count,
        listing.skipped_count,
        tuple(listing.problems),
        tuple(listing.skipped),
    )


@dataclass
class Export:
    """The rows `export` kept, streamed; the counts are complete once iterated."""

    columns: tuple[str, ...]
    rows: Iterator[Subscriber]
    listing: SubscriberList
    suppressed: frozenset[str]


def export(settings: Settings, path: Path) -> Export:
    """The list without suppressed, invalid or duplicate rows."""
    book = existing_ledger(settings)
    suppressed: frozenset[str] = frozenset()
    if book is not None:
        with book:
            suppressed = frozenset(book.suppressed_set())
    listing = SubscriberList(path)
    rows = (s for s in listing if s.email.lower() not in suppressed)
    return Export(tuple(sorted(listing.columns)), rows, listing, suppressed)


def suppress(settings: Settings, address: str, reason: Reason) -> tuple[str, bool]:
    """(normalised address, newly suppressed) — ValueError if it is no address."""
    normalised = check_email(address)
    with open_ledger(settings) as book:
        return normalised, book.suppress(normalised, reason, "cli")


def suppressions(settings: Settings) -> list[Suppression]:
    """The suppression list, oldest first (empty when nothing was ever recorded)."""
    book = existing_ledger(settings)
    if book is None:
        return []
    with book:
        return book.suppressions()


def backup(settings: Settings, path: Path) -> Backup:
    """A consistent copy of the store (ledger, suppressions, schedules), safe during a send."""
    if settings.database_url:
        return backup_postgres(settings.database_url, path)
    return backup_sqlite(settings.state_path / DB_NAME, path)
