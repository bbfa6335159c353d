"""The subscriber list and the suppression list: check, export, suppress by hand; backups;
the store's list (`subscribers = "store"`): add, remove, list, tag, import, forget."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailer.config import STORE, Settings
from mailer.deliver.preflight import check_secret
from mailer.errors import ConfigError, InputError
from mailer.state.backup import Backup, backup_postgres, backup_sqlite
from mailer.state.deliveries import Suppression
from mailer.state.imports import Report, run_import
from mailer.state.ledger import Ledger, existing_ledger, open_ledger
from mailer.state.reader_rows import Forgotten, Reader, Wanted, forget_key
from mailer.state.roster import Listing, Roster
from mailer.state.store import DB_NAME, now_text
from mailer.state.subscribers import Problem, Subscriber, SubscriberList, check_email
from mailer.states import Reason, SubscriberStatus


class SuppressionList(Protocol):
    """The ledger as the list commands use it: the suppression list alone."""

    def suppressed_set(self) -> set[str]: ...
    def suppress(self, email: str, reason: Reason, source: str) -> bool: ...
    def suppressions(self) -> list[Suppression]: ...


@contextlib.contextmanager
def _suppression_list(settings: Settings, *, create: bool) -> Iterator[SuppressionList | None]:
    """The project's suppression list, closed after; None when nothing was ever recorded."""
    book = open_ledger(settings) if create else existing_ledger(settings)
    if book is None:
        yield None
        return
    with book:
        yield book


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
    listing: Listing
    suppressed: frozenset[str]


def export(settings: Settings, path: Path | None) -> Export:
    """The list (the file given, else `subscribers`: a file or the store's confirmed readers)
    without suppressed, invalid or duplicate rows."""
    with _suppression_list(settings, create=False) as book:
        suppressed = frozenset(book.suppressed_set() if book is not None else ())
    store = path is None and settings.subscribers == STORE
    listing = Roster(None if store else path or settings.root / settings.subscribers)
    opened = listing.open(settings)
    forgotten = Forgotten(settings.signing_secret, suppressed)
    rows = (s for s in opened if s.email.lower() not in suppressed and s.email not in forgotten)
    return Export(tuple(sorted(opened.columns)), rows, opened, suppressed)


def suppress(settings: Settings, address: str, reason: Reason) -> tuple[str, bool]:
    """(normalised address, newly suppressed) — ValueError if it is no address."""
    normalised = check_email(address)
    with _suppression_list(settings, create=True) as book:
        assert book is not None
        return normalised, book.suppress(normalised, reason, "cli")


def suppressions(settings: Settings) -> list[Suppression]:
    """The suppression list, oldest first (empty when nothing was ever recorded)."""
    with _suppression_list(settings, create=False) as book:
        return book.suppressions() if book is not None else []


def backup(settings: Settings, path: Path) -> Backup:
    """A consistent copy of the store (ledger, suppressions, schedules), safe during a send."""
    if settings.database_url:
        return backup_postgres(settings.database_url, path)
    return backup_sqlite(settings.state_path / DB_NAME, path)


# -- the store's list ---------------------------------------------------------------------------


def in_use(settings: Settings) -> bool:
    """Whether sends read the store's list (`subscribers = "store"`)."""
    return settings.subscribers == STORE


def add(
    settings: Settings,
    address: str,
    *,
    name: str = "",
    fields: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
) -> tuple[str, Reader]:
    """Add (or update) a confirmed reader by hand: ("added" | "changed" | "unchanged", them).

    ValueError if it is no address; InputError if it is suppressed or forgotten.
    """
    email = check_email(address)
    now = now_text()
    want = Wanted(
        email,
        SubscriberStatus.CONFIRMED,
        "cli",
        name,
        fields or {},
        tuple(tags),
        signed_up_at=now,
        confirmed_at=now,
    )
    with open_ledger(settings) as book:
        forgotten = Forgotten(settings.signing_secret, book.forgotten_keys())
        done = book.apply_readers([want], forgotten=forgotten)
        if done.skipped:
            raise InputError(
                f"{email}: not added: {done.skipped[0][1]}",
                hint="only the reader can come back, through a confirmed signup",
            )
        reader = book.reader(email)
    assert reader is not None
    return ("added" if done.added else "changed" if done.changed else "unchanged"), reader


def remove(settings: Settings, address: str) -> tuple[str, bool, bool]:
    """Unsubscribe a reader by hand and suppress the address (`manual`): (the address, it
    was on the list, it was newly suppressed). ValueError if it is no address."""
    email = check_email(address)
    with open_ledger(settings) as book:
        listed, new = book.remove_reader(email)
    return email, listed, new


def readers(
    settings: Settings, status: SubscriberStatus | None = None, tags: Sequence[str] = ()
) -> Iterator[Reader]:
    """The store's readers (of one status, with any of these tags), in address order."""
    book = existing_ledger(settings)
    if book is None:
        return
    with book:
        yield from book.readers(status, tags)


def counts(settings: Settings) -> dict[SubscriberStatus, int]:
    """The store's readers per status."""
    book = existing_ledger(settings)
    if book is None:
        return dict.fromkeys(SubscriberStatus, 0)
    with book:
        return book.reader_counts()


def tag(
    settings: Settings, addresses: Sequence[str], add: Sequence[str], remove: Sequence[str]
) -> list[Reader]:
    """Add and remove tags on readers, all or none: InputError naming those not listed."""
    emails = [check_email(a) for a in addresses]
    with open_ledger(settings) as book:
        changed, missing = book.retag(emails, add, remove)
    if missing:
        raise InputError(
            f"not on the list: {', '.join(missing)} (nothing was changed)",
            hint="`mailer subscribers add EMAIL` adds a reader",
        )
    return changed


def import_file(
    settings: Settings,
    path: Path,
    *,
    fmt: str = "auto",
    tags: Sequence[str] = (),
    dry_run: bool = False,
    on_progress: Callable[[Report], None] | None = None,
) -> Report:
    """Import another service's export into the store (a dry run writes nothing)."""
    with contextlib.ExitStack() as stack:
        book = existing_ledger(settings) if dry_run else open_ledger(settings)
        if book is None:  # a dry run, and nothing recorded yet: an empty store, thrown away
            book = Ledger(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        stack.enter_context(book)
        return run_import(
            book,
            path,
            fmt=fmt,
            tags=tags,
            dry_run=dry_run,
            secret=settings.signing_secret,
            on_progress=on_progress,
        )


def forget(settings: Settings, address: str) -> tuple[str, dict[str, int]]:
    """Erase an address everywhere; a keyed hash of it stays in the suppressions, so it is
    never mailed nor imported again: (the address, rows deleted per table)."""
    if not settings.secret:
        raise ConfigError(
            "forget needs MAILER_SECRET: the hash left in the address's place is keyed with it",
            hint="set MAILER_SECRET in .env, the same one the unsubscribe links are signed with",
        )
    check_secret(settings)
    email = check_email(address)
    with open_ledger(settings) as book:
        return email, book.forget(email, forget_key(settings.secret, email))
