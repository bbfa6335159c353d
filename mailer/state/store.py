"""The ledger's core: one connection, its lock, its schema, and how its failures are told.

Every table's methods (deliveries.py, feedback.py, outbox.py, senders.py, schedules.py) are
a mixin over `Store`; ledger.py puts them together. Times are stored as text in one fixed
form (UTC ISO-8601 with microseconds), so text order is time order on both backends.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, Self, TypeVar

from mailer import when
from mailer.errors import MailerError, StoreDamaged
from mailer.state import migrations
from mailer.state.database import DAMAGED, Database, PostgresDatabase, SQLiteDatabase

DB_NAME = "ledger.db"

_OUR_BUGS = (sqlite3.ProgrammingError, sqlite3.IntegrityError)  # bad SQL or values: raised
_P = ParamSpec("_P")
_R = TypeVar("_R")


def now_text() -> str:
    """Return the current time as stored: UTC ISO-8601 with microseconds (MAILER_NOW too)."""
    return when.now().isoformat(timespec="microseconds")


def to_text(moment: datetime) -> str:
    """Convert an aware datetime to stored UTC text (one fixed format: text order = time order)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    """Parse a stored timestamp back into an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def norm_email(email: str) -> str:
    """Normalise an address so that case and stray spaces never make two recipients of one."""
    norm = email.strip().lower()
    if not norm:
        raise ValueError("email must not be empty")
    return norm


def guarded(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn the database's runtime failures (corruption, I/O, a lost server, a lock timeout)
    into a MailerError naming where the ledger is."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        store = args[0]
        assert isinstance(store, Store)
        try:
            return method(*args, **kwargs)
        except _OUR_BUGS:
            raise  # our own bug (bad SQL, bad value), not a problem with the file
        except MailerError:
            raise
        except Exception as exc:
            if isinstance(exc, store._failures):
                raise store._error(exc) from exc
            raise

    return wrapper


class Store:
    """One connection to the ledger, its schema up to date; every use of it holds `_lock`."""

    def __init__(self, state_dir: Path, *, database_url: str = "", where: str = "") -> None:
        """Open (and create if need be) the ledger and bring its schema up to date."""
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        # Serialises use of the one connection: neither driver's objects are safe unguarded.
        self._lock = threading.Lock()
        self._conn: Database | None = None
        if database_url:
            self._conn = PostgresDatabase(database_url, where or database_url)
        else:
            self._conn = SQLiteDatabase(self.path)
        self._failures = self._conn.failures
        self._shared = self._conn.shared
        try:
            migrations.migrate(self._conn)
        except Exception as exc:
            conn, self._conn = self._conn, None
            conn.close()
            if isinstance(exc, self._failures) and not isinstance(exc, _OUR_BUGS):
                raise conn.describe(exc) from exc
            raise

    @property
    def shared(self) -> bool:
        """Several machines may use this ledger at once (PostgreSQL)."""
        return self._db.shared

    @property
    def where(self) -> str:
        """The file, or the database's URL without its password: for messages and caches."""
        return self._db.where

    def _error(self, exc: Exception) -> MailerError:
        """Describe a database failure as one line naming where the ledger is."""
        return self._db.describe(exc)

    @property
    def _db(self) -> Database:
        """The open connection; a closed ledger is a programming error."""
        if self._conn is None:
            raise RuntimeError("ledger is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Database]:
        """Hold the lock and one transaction for the block; any exception rolls it back."""
        with self._lock:
            conn = self._db
            conn.begin()
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def damage_error(self) -> StoreDamaged | None:
        """What is wrong if the ledger no longer reads back whole (a WAL overwritten, say)."""
        with self._lock:
            found = self._db.damage()
        if not found:
            return None
        return StoreDamaged(
            f"{self.where}: the ledger failed its integrity check: {found}", hint=DAMAGED
        )

    def check_identity(self) -> None:
        """LedgerGone if the file this ledger opened is no longer the one at its path."""
        self._db.check_identity()

    @guarded
    def ledger_id(self) -> str:
        """This ledger's own id: made on first use, kept inside it (and in its backups)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO mailer_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                ("ledger_id", uuid.uuid4().hex),
            )
            row = db.execute("SELECT value FROM mailer_meta WHERE key = ?", ("ledger_id",))
            return str(row.fetchone()[0])

    @guarded
    def data_version(self) -> int:
        """A number that changes whenever another connection adds suppressions."""
        with self._lock:
            return self._db.change_counter()
