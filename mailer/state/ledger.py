"""The send ledger: who was sent which issue, the suppression list, the schedule, and what came
back (bounces, complaints: `mailer bounces`), in SQLite or PostgreSQL.

`Ledger` is the whole store, what the CLI and the web app open; each table's methods live
in their own module (store.py holds the connection). Its consumers do not take it whole:
each types its parameter with a Protocol of the few methods it calls (deliver/audience.py:
History, deliver/claims.py: Outbox, ...), so what a stage may do to the state is in its
signature.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mailer.errors import LockedError
from mailer.state.database import LedgerGone as LedgerGone  # raised by check_identity
from mailer.state.database import PostgresDatabase
from mailer.state.deliveries import Delivery as Delivery
from mailer.state.deliveries import DeliveryTable
from mailer.state.deliveries import Suppression as Suppression
from mailer.state.feedback import FeedbackEvent as FeedbackEvent
from mailer.state.feedback import FeedbackOutcome as FeedbackOutcome
from mailer.state.feedback import FeedbackTable
from mailer.state.feeds import FeedTable
from mailer.state.locks import lock as lock  # callers take the ledger's lock here
from mailer.state.migrations import SCHEMA_VERSION as SCHEMA_VERSION
from mailer.state.outbox import OutboxTable
from mailer.state.readers import ReaderTable
from mailer.state.schedules import Schedule as Schedule
from mailer.state.schedules import ScheduleTable
from mailer.state.senders import SenderRow as SenderRow
from mailer.state.senders import SenderTable
from mailer.state.store import DB_NAME

if TYPE_CHECKING:
    from mailer.config import Settings


class Ledger(
    DeliveryTable, FeedbackTable, FeedTable, OutboxTable, SenderTable, ScheduleTable, ReaderTable
):
    """Who was sent what: the SQLite file state_dir/ledger.db, or the PostgreSQL database
    `database_url` names (see mailer/state/database.py). Safe to share between threads and
    processes; with PostgreSQL, between machines too."""


def open_ledger(settings: Settings) -> Ledger:
    """The project's ledger (database_url's, else the SQLite file), created on first use."""
    if settings.database_url:
        from mailer.config import masked_url

        where = masked_url(settings.database_url)
        return Ledger(settings.state_path, database_url=settings.database_url, where=where)
    return Ledger(settings.state_path)


@contextlib.contextmanager
def state_lock(settings: Settings, name: str) -> Iterator[None]:
    """One process at a time for `name`: on this machine (a flock in state_dir), or, with
    database_url, on every machine sharing the database (a PostgreSQL advisory lock held by
    a connection of its own, freed by the server when the holder dies)."""
    if not settings.database_url:
        with lock(settings.state_path, name):
            yield
        return
    from mailer.config import masked_url

    conn = PostgresDatabase(settings.database_url, masked_url(settings.database_url))
    try:
        with conn.advisory_lock(f"mailer:{name}") as held:
            if not held:
                raise LockedError(
                    f"{name}: locked by another mailer process using {conn.where}",
                    hint="another mailer run is busy with this; the lock frees itself when "
                    "that process ends",
                )
            yield
    finally:
        conn.close()


def existing_ledger(settings: Settings) -> Ledger | None:
    """The project's ledger, or None when nothing was ever recorded (nothing is created).

    A database_url always names one: it is opened (its tables made if need be).
    """
    if not settings.database_url and not (settings.state_path / DB_NAME).exists():
        return None
    return open_ledger(settings)
