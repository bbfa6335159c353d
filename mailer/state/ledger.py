"""The send ledger: who was sent which issue, the suppression list, the schedule, and what came
back (bounces, complaints: `mailer bounces`), in SQLite."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mailer import when
from mailer.errors import LockedError, MailerError
from mailer.state.database import Database, PostgresDatabase, SQLiteDatabase
from mailer.state.database import LedgerGone as LedgerGone  # raised by check_identity
from mailer.state.locks import lock as lock  # callers take the ledger's lock here
from mailer.states import DeliveryState, Feedback, Reason, ScheduleState

if TYPE_CHECKING:
    from mailer.config import Settings

DB_NAME = "ledger.db"

# Each entry moves the schema one version up; PRAGMA user_version records how many have run.
# Never edit a released entry: append a new one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE deliveries (
            issue      TEXT NOT NULL,
            email      TEXT NOT NULL,
            state      TEXT NOT NULL CHECK (state IN ('sent', 'deferred', 'failed')),
            attempts   INTEGER NOT NULL,
            last_reply TEXT NOT NULL,
            first_at   TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (issue, email)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE suppressions (
            email      TEXT PRIMARY KEY,
            reason     TEXT NOT NULL CHECK (reason IN ('unsubscribed', 'bounced', 'manual')),
            source     TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE schedules (
            issue      TEXT PRIMARY KEY,
            send_at    TEXT NOT NULL,
            state      TEXT NOT NULL
                       CHECK (state IN ('scheduled', 'sending', 'sent', 'cancelled')),
            created_at TEXT NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 2: when a deferred reader is next due (Postfix's queue model); NULL for the others.
    ("ALTER TABLE deliveries ADD COLUMN next_try_at TEXT",),
    # 3: bounces and complaints. SQLite cannot change a CHECK: both tables are rebuilt with
    # the new values ('bounced' rows, 'complained' suppressions), their rows copied. Every
    # message `mailer bounces` handled is kept by its Message-ID (a second read is a no-op),
    # and what it said about each reader and issue, which the soft-bounce count reads.
    (
        """
        CREATE TABLE deliveries_v3 (
            issue       TEXT NOT NULL,
            email       TEXT NOT NULL,
            state       TEXT NOT NULL
                        CHECK (state IN ('sent', 'deferred', 'failed', 'bounced')),
            attempts    INTEGER NOT NULL,
            last_reply  TEXT NOT NULL,
            first_at    TEXT NOT NULL,
            updated_at  TEXT NOT NULL,
            next_try_at TEXT,
            PRIMARY KEY (issue, email)
        ) WITHOUT ROWID
        """,
        "INSERT INTO deliveries_v3 (issue, email, state, attempts, last_reply, first_at,"
        " updated_at, next_try_at) SELECT issue, email, state, attempts, last_reply, first_at,"
        " updated_at, next_try_at FROM deliveries",
        "DROP TABLE deliveries",
        "ALTER TABLE deliveries_v3 RENAME TO deliveries",
        """
        CREATE TABLE suppressions_v3 (
            email      TEXT PRIMARY KEY,
            reason     TEXT NOT NULL
                       CHECK (reason IN ('unsubscribed', 'bounced', 'manual', 'complained')),
            source     TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "INSERT INTO suppressions_v3 (email, reason, source, created_at)"
        " SELECT email, reason, source, created_at FROM suppressions",
        "DROP TABLE suppressions",
        "ALTER TABLE suppressions_v3 RENAME TO suppressions",
        """
        CREATE TABLE feedback_messages (
            message_id  TEXT PRIMARY KEY,
            kind        TEXT NOT NULL
                        CHECK (kind IN ('hard', 'soft', 'complaint', 'unsubscribe')),
            source      TEXT NOT NULL,
            received_at TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE feedback (
            message_id TEXT NOT NULL REFERENCES feedback_messages (message_id),
            email      TEXT NOT NULL,
            issue      TEXT NOT NULL,
            kind       TEXT NOT NULL
                       CHECK (kind IN ('hard', 'soft', 'complaint', 'unsubscribe')),
            status     TEXT NOT NULL,
            detail     TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (message_id, email)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX feedback_by_reader ON feedback (email, issue, kind)",
    ),
    # 4: several senders on one database (PostgreSQL). The outbox holds the readers a run
    # still owes, each claimed by one sender until its lease runs out; a recorded outcome
    # deletes its row in the same statement. `senders` is who is sending, for the shared
    # rate and `mailer status`. Times are the database's clock, in the ledger's text form.
    (
        """
        CREATE TABLE outbox (
            issue       TEXT NOT NULL,
            email       TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            claimed_by  TEXT,
            lease_until TEXT,
            PRIMARY KEY (issue, email)
        ) WITHOUT ROWID
        """,
        # Claims walk the outbox in list order and stop at a batch: O(batch), not O(list).
        "CREATE INDEX outbox_in_order ON outbox (issue, seq)",
        """
        CREATE TABLE senders (
            id           TEXT PRIMARY KEY,
            issue        TEXT NOT NULL,
            host         TEXT NOT NULL,
            pid          INTEGER NOT NULL,
            started_at   TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL,
            state        TEXT NOT NULL CHECK (state IN ('sending', 'done', 'stopped')),
            sent         INTEGER NOT NULL,
            deferred     INTEGER NOT NULL,
            failed       INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# PostgreSQL's clock as the ledger writes times (UTC ISO-8601, microseconds): leases are
# compared across machines, so they are read off one clock, the database's.
# statement_timestamp(): one value per statement (clock_timestamp() is read again per row).
_PG_NOW = (
    "to_char(statement_timestamp() AT TIME ZONE 'UTC',"
    """ 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
)
_PG_LATER = (
    "to_char((statement_timestamp() + make_interval(secs => ?)) AT TIME ZONE 'UTC',"
    """ 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
)
# Outbox row `o`'s copy was accepted already. A scalar subquery, not NOT EXISTS: PostgreSQL
# runs it per candidate on the primary key, where an anti-join planned while deliveries was
# still empty would scan all of this issue's deliveries for every candidate.
_ACCEPTED = (
    "coalesce((SELECT d.state IN ('sent', 'bounced') FROM deliveries d"
    " WHERE d.issue = o.issue AND d.email = o.email), false)"
)
_PG_AGO = _PG_LATER.replace("+ make_interval", "- make_interval")
# A shared ledger's record also takes the reader out of the outbox, in one statement
# (_RECORD_SHARED_SQL, below _RECORD_SQL).

_RECORD_SQL = """
    INSERT INTO deliveries
        (issue, email, state, attempts, last_reply, first_at, updated_at, next_try_at)
    VALUES (?, ?, ?, 1, ?, ?, ?, ?)
    ON CONFLICT (issue, email) DO UPDATE SET
        state = excluded.state,
        attempts = deliveries.attempts + 1,
        last_reply = excluded.last_reply,
        updated_at = excluded.updated_at,
        next_try_at = excluded.next_try_at
    -- A copy that was accepted stays accepted: nothing may make a resume send it again.
    -- A bounced one was accepted too (and its reader is suppressed): it stays as it is.
    WHERE deliveries.state NOT IN ('sent', 'bounced')
"""
_RECORD_SHARED_SQL = "WITH done AS (DELETE FROM outbox WHERE issue = ? AND email = ?)" + _RECORD_SQL
_DELIVERY_COLUMNS = "issue, email, state, attempts, last_reply, first_at, updated_at, next_try_at"


@dataclass(frozen=True)
class Delivery:
    """One recipient's outcome for one issue."""

    issue: str
    email: str
    state: DeliveryState
    attempts: int
    last_reply: str
    first_at: datetime
    updated_at: datetime
    next_try_at: datetime | None = None  # deferred only: when a run may try again


@dataclass(frozen=True)
class SenderRow:
    """One `mailer send` process that took part in an issue (a shared ledger)."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    state: str  # sending, done, stopped
    sent: int
    deferred: int
    failed: int
    live: bool  # sending, and heard from within one claim_timeout


@dataclass(frozen=True)
class Suppression:
    """An address that must never be mailed again."""

    email: str
    reason: Reason
    source: str
    created_at: datetime


@dataclass(frozen=True)
class FeedbackEvent:
    """What one incoming message said about one reader (and, when known, one issue)."""

    email: str
    kind: Feedback
    issue: str = ""  # "" when the message did not say which issue
    status: str = ""  # the DSN's status code (5.1.1), the ARF feedback type (abuse), ...
    detail: str = ""  # the diagnostic, for the delivery row and `mailer bounces -v`


@dataclass(frozen=True)
class FeedbackOutcome:
    """What recording one FeedbackEvent changed."""

    event: FeedbackEvent
    suppressed: bool  # newly on the suppression list
    bounced: bool  # a `sent` delivery row became `bounced`
    streak: int = 0  # soft: consecutive issues with a soft bounce, counting this one


@dataclass(frozen=True)
class Schedule:
    """When an issue is due to go out and how far it got."""

    issue: str
    send_at: datetime
    state: ScheduleState
    created_at: datetime


def _now() -> str:
    """Return the current time as stored: UTC ISO-8601 with microseconds (MAILER_NOW too)."""
    return when.now().isoformat(timespec="microseconds")


def _to_text(when: datetime) -> str:
    """Convert an aware datetime to stored UTC text (one fixed format: text order = time order)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {when!r}")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    """Parse a stored timestamp back into an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def _norm_email(email: str) -> str:
    """Normalise an address so that case and stray spaces never make two recipients of one."""
    norm = email.strip().lower()
    if not norm:
        raise ValueError("email must not be empty")
    return norm


def _delivery(row: tuple[Any, ...]) -> Delivery:
    """Build a Delivery from a row in _DELIVERY_COLUMNS order."""
    issue, email, state, attempts, reply, first_at, updated_at, next_try_at = row
    first, updated = _from_text(first_at), _from_text(updated_at)
    next_try = _from_text(next_try_at) if next_try_at else None
    return Delivery(issue, email, DeliveryState(state), attempts, reply, first, updated, next_try)


def _schedule(row: tuple[Any, ...]) -> Schedule:
    """Build a Schedule from an (issue, send_at, state, created_at) row."""
    issue, send_at, state, created_at = row
    return Schedule(issue, _from_text(send_at), ScheduleState(state), _from_text(created_at))


_OUR_BUGS = (sqlite3.ProgrammingError, sqlite3.IntegrityError)  # bad SQL or values: raised
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn the database's runtime failures (corruption, I/O, a lost server, a lock timeout)
    into a MailerError naming where the ledger is."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        ledger = args[0]
        assert isinstance(ledger, Ledger)
        try:
            return method(*args, **kwargs)
        except _OUR_BUGS:
            raise  # our own bug (bad SQL, bad value), not a problem with the file
        except MailerError:
            raise
        except Exception as exc:
            if isinstance(exc, ledger._failures):
                raise ledger._error(exc) from exc
            raise

    return wrapper


class Ledger:
    """Who was sent what: the SQLite file state_dir/ledger.db, or the PostgreSQL database
    `database_url` names (see mailer/state/database.py). Safe to share between threads and
    processes; with PostgreSQL, between machines too."""

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
            self._setup()
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
        return self._db.where

    def _setup(self) -> None:
        """Run any pending migrations, one process at a time."""
        conn = self._db
        version = conn.schema_version()
        if version == SCHEMA_VERSION:
            return
        self._check_version(version)
        conn.begin()
        try:
            if isinstance(conn, PostgresDatabase):
                conn.lock_schema()
            version = conn.schema_version()
            self._check_version(version)
            for statements in _MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(conn.adapt(sql))
            conn.set_schema_version(SCHEMA_VERSION)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _check_version(self, version: int) -> None:
        """Refuse a ledger written by a newer mailer rather than guess at its schema."""
        if version > SCHEMA_VERSION:
            raise MailerError(
                f"{self._db.where}: ledger schema version {version} is newer than this mailer "
                f"understands ({SCHEMA_VERSION})",
                hint="upgrade mailer",
            )

    def _error(self, exc: Exception) -> MailerError:
        """Describe a database failure as one line naming where the ledger is."""
        return self._db.describe(exc)

    @property
    def _db(self) -> Database:
        """The open connection; a closed ledger is a programming error."""
        if self._conn is None:
            raise RuntimeError("ledger is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_identity(self) -> None:
        """LedgerGone if the file this ledger opened is no longer the one at its path."""
        self._db.check_identity()

    @_guarded
    def data_version(self) -> int:
        """A number that changes whenever another connection adds suppressions."""
        with self._lock:
            return self._db.change_counter()

    # -- deliveries -----------------------------------------------------------------------

    def record(
        self,
        issue: str,
        email: str,
        state: DeliveryState,
        reply: str = "",
        next_try_at: datetime | None = None,
    ) -> None:
        """Upsert one recipient's outcome: count the attempt, keep first_at, replace the rest."""
        now = _now()
        retry = _to_text(next_try_at) if next_try_at is not None else None
        params = (issue, _norm_email(email), DeliveryState(state).value, reply, now, now, retry)
        # Inlined rather than @_guarded: this runs once per message sent.
        try:
            with self._lock:
                if self._shared:  # and out of the outbox: nobody else claims it now
                    self._db.execute(_RECORD_SHARED_SQL, (params[0], params[1], *params))
                else:
                    self._db.execute(_RECORD_SQL, params)
        except self._failures as exc:
            raise self._error(exc) from exc

    # -- several senders (PostgreSQL) ---------------------------------------------------

    @_guarded
    def join(self, sender: str, issue: str, host: str, pid: int) -> None:
        """Say that `sender` (a new id per run) is sending `issue`."""
        with self._lock:
            self._db.execute(
                "INSERT INTO senders (id, issue, host, pid, started_at, heartbeat_at, state,"
                f" sent, deferred, failed) VALUES (?, ?, ?, ?, {_PG_NOW}, {_PG_NOW},"
                " 'sending', 0, 0, 0)",
                (sender, issue, host, pid),
            )

    @_guarded
    def load_outbox(
        self, issue: str, emails: Sequence[str], attempts: Sequence[int] | None = None
    ) -> int:
        """Add the readers this run owes `issue` to its outbox (those already there, or
        whose copy was accepted meanwhile, are left alone); returns how many were added.

        `attempts`: each reader's tries when this run read the ledger (0 for all when not
        given). A reader tried since by another sender (its row says otherwise) is that
        sender's: put back, it would be sent again at once, whatever its next try time.

        One sender at a time (a lock per issue for the transaction), so a list is laid out
        once, in its order, whoever starts first.
        """
        with self._lock:
            conn = self._db
            conn.begin()
            assert isinstance(conn, PostgresDatabase)
            try:
                conn.xact_lock(f"mailer:outbox:{issue}")
                row = conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM outbox WHERE issue = ?", (issue,)
                ).fetchone()
                start = int(row[0]) if row else 0
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS owed (email TEXT, seq INTEGER,"
                    " attempts INTEGER) ON COMMIT DELETE ROWS"
                )
                tries = attempts if attempts is not None else [0] * len(emails)
                conn.copy_rows(
                    "COPY owed (email, seq, attempts) FROM STDIN",
                    (
                        (_norm_email(e), start + i, n)
                        for i, (e, n) in enumerate(zip(emails, tries, strict=True), 1)
                    ),
                )
                added = conn.execute(
                    "INSERT INTO outbox (issue, email, seq) SELECT ?, o.email, min(o.seq)"
                    " FROM owed o WHERE NOT EXISTS (SELECT 1 FROM deliveries d"
                    " WHERE d.issue = ? AND d.email = o.email"
                    " AND (d.state IN ('sent', 'bounced') OR d.attempts <> o.attempts))"
                    " GROUP BY o.email ON CONFLICT (issue, email) DO NOTHING",
                    (issue, issue),
                ).rowcount
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            # Fresh statistics for the claims to come: a planner that still thinks the
            # outbox empty joins it to deliveries row by row (80 ms a claim at 3,000 readers
            # instead of 2).
            conn.execute("ANALYZE outbox, deliveries")
        return added

    @_guarded
    def claim(
        self,
        issue: str,
        sender: str,
        count: int,
        lease: float,
        exclude: Sequence[str] = (),
        after: int = 0,
    ) -> list[tuple[str, int]]:
        """Up to `count` readers of the outbox after list position `after` that nobody holds
        (or whose lease ran out), now held by `sender` for `lease` seconds: (email, position)
        in list order. Other senders skip the rows being claimed; a reader whose copy was
        accepted meanwhile is never handed out.

        `after` is where the sender's last claim ended: the rows before it are mostly gone
        (recorded, deleted), and PostgreSQL's index still walks their dead entries until a
        vacuum, so starting from the front every time makes each claim cost the whole list
        sent so far (31 ms a claim at 20,000 readers, against under 1).
        """
        with self._lock:
            rows = self._db.execute(
                f"UPDATE outbox SET claimed_by = ?, lease_until = {_PG_LATER}"
                " WHERE issue = ? AND email IN (SELECT o.email FROM outbox o"
                f" WHERE o.issue = ? AND o.seq > ?"
                f" AND (o.claimed_by IS NULL OR o.lease_until < {_PG_NOW})"
                f" AND NOT (o.email = ANY (?::text[])) AND NOT {_ACCEPTED}"
                " ORDER BY o.seq LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING email, seq",
                (sender, lease, issue, issue, after, list(exclude), count),
            ).fetchall()
        return sorted(((str(e), int(q)) for e, q in rows), key=lambda r: r[1])

    @_guarded
    def unclaim(self, issue: str, sender: str, emails: Sequence[str]) -> None:
        """Give readers back to the pool (claimed, but not on this sender's list)."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET claimed_by = NULL, lease_until = NULL"
                " WHERE issue = ? AND claimed_by = ? AND email = ANY (?::text[])",
                (issue, sender, list(emails)),
            )

    @_guarded
    def held_elsewhere(self, issue: str, sender: str) -> int:
        """Readers of the outbox another sender holds under a lease still running."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM outbox o WHERE o.issue = ? AND o.claimed_by <> ?"
                f" AND o.lease_until >= {_PG_NOW} AND NOT {_ACCEPTED}",
                (issue, sender),
            ).fetchone()
        return int(row[0]) if row else 0

    @_guarded
    def outbox_left(self, issue: str) -> int:
        """Readers of the outbox never tried (no delivery row), held or not."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM outbox o WHERE o.issue = ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.issue = o.issue AND d.email = o.email)",
                (issue,),
            ).fetchone()
        return int(row[0]) if row else 0

    @_guarded
    def heartbeat(self, issue: str, sender: str, lease: float, counts: tuple[int, int, int]) -> int:
        """Renew `sender`'s leases and counts; returns how many senders of `issue` are live
        (heard from within one lease), this one included."""
        with self._lock:
            conn = self._db
            conn.execute(
                f"UPDATE outbox SET lease_until = {_PG_LATER} WHERE issue = ? AND claimed_by = ?",
                (lease, issue, sender),
            )
            conn.execute(
                f"UPDATE senders SET heartbeat_at = {_PG_NOW}, sent = ?, deferred = ?, failed = ?"
                " WHERE id = ?",
                (*counts, sender),
            )
            row = conn.execute(
                "SELECT count(*) FROM senders WHERE issue = ? AND state = 'sending'"
                f" AND heartbeat_at >= {_PG_AGO}",
                (issue, lease),
            ).fetchone()
        return max(1, int(row[0]) if row else 1)

    @_guarded
    def leave(self, issue: str, sender: str, state: str, counts: tuple[int, int, int]) -> None:
        """`sender` is done (or stopped): its unsent claims go back to the pool at once."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET claimed_by = NULL, lease_until = NULL"
                " WHERE issue = ? AND claimed_by = ?",
                (issue, sender),
            )
            self._db.execute(
                f"UPDATE senders SET state = ?, heartbeat_at = {_PG_NOW}, sent = ?,"
                " deferred = ?, failed = ? WHERE id = ?",
                (state, *counts, sender),
            )

    @_guarded
    def senders(self, issue: str, lease: float) -> list[SenderRow]:
        """Every sender that took part in `issue`, newest first; `live` if heard from within
        one lease."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, host, pid, started_at, heartbeat_at, state, sent, deferred, failed,"
                f" state = 'sending' AND heartbeat_at >= {_PG_AGO} FROM senders WHERE issue = ?"
                " ORDER BY started_at DESC",
                (lease, issue),
            ).fetchall()
        return [
            SenderRow(i, h, p, _from_text(st), _from_text(hb), state, s, d, f, bool(live))
            for i, h, p, st, hb, state, s, d, f, live in rows
        ]

    @_guarded
    def give_up(self, issue: str, first_before: datetime, after: str) -> int:
        """Deferred readers first tried before `first_before` become failed; returns how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE deliveries SET state = 'failed', next_try_at = NULL, updated_at = ?,"
                " last_reply = 'gave up after ' || attempts"
                " || CASE attempts WHEN 1 THEN ' try' ELSE ' tries' END || ' over ' || ? || ': '"
                " || last_reply"
                " WHERE issue = ? AND state = 'deferred' AND first_at < ?",
                (_now(), after, issue, _to_text(first_before)),
            )
        return cur.rowcount

    @_guarded
    def counts(self, issue: str) -> dict[DeliveryState, int]:
        """Return how many recipients of an issue are in each state; every state is present."""
        result = dict.fromkeys(DeliveryState, 0)
        with self._lock:
            rows = self._db.execute(
                "SELECT state, count(*) FROM deliveries WHERE issue = ? GROUP BY state", (issue,)
            ).fetchall()
        result.update((DeliveryState(state), count) for state, count in rows)
        return result

    def deliveries(self, issue: str, state: DeliveryState | None = None) -> Iterator[Delivery]:
        """Yield an issue's deliveries (optionally one state's) in the order first attempted."""
        state = DeliveryState(state) if state is not None else None
        # Fetched eagerly: a lazy cursor would hold the lock (or a read snapshot) while the
        # caller loops, and callers do call record() inside that loop.
        rows = self._fetch_deliveries(issue, state)
        return (_delivery(row) for row in rows)

    @_guarded
    def _fetch_deliveries(self, issue: str, state: DeliveryState | None) -> list[tuple[Any, ...]]:
        """Fetch delivery rows for deliveries()."""
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE issue = ?"
        params: tuple[str, ...] = (issue,)
        if state is not None:
            sql += " AND state = ?"
            params += (state.value,)
        with self._lock:
            return self._db.execute(sql + " ORDER BY first_at, email", params).fetchall()

    @_guarded
    def delivery(self, issue: str, email: str) -> Delivery | None:
        """One reader's row for one issue, or None if never attempted."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE issue = ? AND email = ?",
                (issue, _norm_email(email)),
            ).fetchone()
        return _delivery(row) if row else None

    @_guarded
    def issues(self) -> list[str]:
        """Return every issue with a delivery, ordered by its first delivery, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT issue FROM deliveries GROUP BY issue ORDER BY min(first_at), issue"
            ).fetchall()
        return [issue for (issue,) in rows]

    # -- suppressions ---------------------------------------------------------------------

    @_guarded
    def suppress(self, email: str, reason: Reason, source: str) -> bool:
        """Add an address to the suppression list; True if it was not already there."""
        reason = Reason(reason)
        # DO NOTHING keeps the first reason and date: a later bounce does not rewrite an
        # unsubscribe, and a double-clicked unsubscribe link is a no-op.
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (email) DO NOTHING",
                (_norm_email(email), reason.value, source, _now()),
            )
        return cur.rowcount == 1

    @_guarded
    def is_suppressed(self, email: str) -> bool:
        """Tell whether an address is on the suppression list."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM suppressions WHERE email = ?", (_norm_email(email),)
            ).fetchone()
        return row is not None

    @_guarded
    def suppressed_set(self) -> set[str]:
        """Return every suppressed address, lower-cased."""
        with self._lock:
            rows = self._db.execute("SELECT email FROM suppressions").fetchall()
        return {email for (email,) in rows}

    @_guarded
    def suppressions(self) -> list[Suppression]:
        """Return the suppression list, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT email, reason, source, created_at FROM suppressions"
                " ORDER BY created_at, email"
            ).fetchall()
        return [Suppression(e, Reason(r), s, _from_text(c)) for e, r, s, c in rows]

    # -- feedback: bounces, complaints, mailed unsubscribes -------------------------------

    @_guarded
    def feedback_seen(self, message_id: str) -> bool:
        """Tell whether the incoming message with this id was already handled."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM feedback_messages WHERE message_id = ?", (message_id,)
            ).fetchone()
        return row is not None

    @_guarded
    def is_reader(self, email: str) -> bool:
        """Tell whether this address was ever sent (or tried with) a copy of any issue."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM deliveries WHERE email = ? LIMIT 1", (_norm_email(email),)
            ).fetchone()
        return row is not None

    @_guarded
    def last_issue(self, email: str) -> str | None:
        """The newest issue whose copy our server accepted for this address, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT issue FROM deliveries WHERE email = ? AND state IN ('sent', 'bounced')"
                " ORDER BY first_at DESC, issue DESC LIMIT 1",
                (_norm_email(email),),
            ).fetchone()
        return row[0] if row else None

    @_guarded
    def feedback_counts(self, issue: str) -> dict[Feedback, int]:
        """Readers of an issue per kind of feedback about it; every kind is present."""
        result = dict.fromkeys(Feedback, 0)
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, count(DISTINCT email) FROM feedback WHERE issue = ? GROUP BY kind",
                (issue,),
            ).fetchall()
        result.update((Feedback(kind), count) for kind, count in rows)
        return result

    @_guarded
    def soft_streak(self, email: str) -> int:
        """Consecutive issues, newest first, whose accepted copy to `email` soft-bounced.

        Only issues our server accepted (`sent` or `bounced` rows) are in the sequence, in
        the order they were first sent; deferred and failed rows never reached the reader's
        server and neither count nor break it. The newest accepted issue without a soft
        bounce ends the run: a later copy that did not come back resets the count. Worked
        out from the whole history each time, so the order DSNs arrive in does not matter.
        """
        with self._lock:
            return self._soft_streak(_norm_email(email))

    def _soft_streak(self, email: str) -> int:
        rows = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM feedback f WHERE f.email = d.email"
            " AND f.issue = d.issue AND f.kind = 'soft')"
            " FROM deliveries d WHERE d.email = ? AND d.state IN ('sent', 'bounced')"
            " ORDER BY d.first_at DESC, d.issue DESC",
            (email,),
        ).fetchall()
        streak = 0
        for (bounced,) in rows:
            if not bounced:
                break
            streak += 1
        return streak

    @_guarded
    def record_feedback(
        self,
        message_id: str,
        kind: Feedback,
        events: Sequence[FeedbackEvent],
        *,
        source: str,
        soft_limit: int,
    ) -> list[FeedbackOutcome] | None:
        """Record one incoming message and act on it, all in one transaction.

        None when a message with this id was handled before: nothing changes. Otherwise:
        a hard bounce moves the reader's `sent` row for that issue to `bounced` and
        suppresses the reader (`bounced`); a soft one is kept, and when it makes
        `soft_limit` consecutive issues (see soft_streak) it does the same; a complaint
        suppresses as `complained`, a mailed unsubscribe as `unsubscribed`. An address that
        is already suppressed keeps its first reason.
        """
        kind = Feedback(kind)
        now = _now()
        with self._lock:
            conn = self._db
            conn.begin()
            try:
                cur = conn.execute(
                    "INSERT INTO feedback_messages (message_id, kind, source, received_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING",
                    (message_id, kind.value, source, now),
                )
                if cur.rowcount != 1:
                    conn.rollback()
                    return None
                outcomes = [self._apply(message_id, e, now, soft_limit) for e in events]
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return outcomes

    def _apply(
        self, message_id: str, event: FeedbackEvent, now: str, soft_limit: int
    ) -> FeedbackOutcome:
        """One event inside record_feedback's transaction (the lock is held)."""
        conn = self._db
        email = _norm_email(event.email)
        kind = Feedback(event.kind)
        conn.execute(
            "INSERT INTO feedback (message_id, email, issue, kind, status, detail, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, email) DO NOTHING",
            (message_id, email, event.issue, kind.value, event.status, event.detail, now),
        )
        what = " ".join(filter(None, (event.status, event.detail)))
        if kind is Feedback.COMPLAINT:
            new = self._suppress_in(email, Reason.COMPLAINED, f"complaint {event.status}", now)
            return FeedbackOutcome(event, new, False)
        if kind is Feedback.UNSUBSCRIBE:
            return FeedbackOutcome(
                event, self._suppress_in(email, Reason.UNSUBSCRIBED, "mailto", now), False
            )
        streak = 0
        if kind is Feedback.SOFT:
            streak = self._soft_streak(email)
            if streak < soft_limit:
                return FeedbackOutcome(event, False, False, streak)
            reply = f"bounced: soft bounces on {streak} issues in a row, the last {what}"
            source = f"soft bounces x{streak}"
        else:
            reply = f"bounced: {what}" if what else "bounced"
            source = f"bounce {event.status}".strip()
        cur = conn.execute(
            "UPDATE deliveries SET state = 'bounced', last_reply = ?, updated_at = ?,"
            " next_try_at = NULL WHERE issue = ? AND email = ? AND state = 'sent'",
            (reply, now, event.issue, email),
        )
        new = self._suppress_in(email, Reason.BOUNCED, source, now)
        return FeedbackOutcome(event, new, cur.rowcount == 1, streak)

    def _suppress_in(self, email: str, reason: Reason, source: str, now: str) -> bool:
        """suppress() for a caller that holds the lock inside a transaction."""
        cur = self._db.execute(
            "INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (email) DO NOTHING",
            (email, reason.value, source, now),
        )
        return cur.rowcount == 1

    # -- schedules ------------------------------------------------------------------------

    @_guarded
    def set_schedule(
        self, issue: str, send_at: datetime, state: ScheduleState = ScheduleState.SCHEDULED
    ) -> None:
        """Schedule an issue, replacing any earlier schedule for it and its state."""
        when = _to_text(send_at)
        now = _now()
        with self._lock:
            self._db.execute(
                "INSERT INTO schedules (issue, send_at, state, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (issue) DO UPDATE SET send_at = excluded.send_at,"
                " state = excluded.state, created_at = excluded.created_at",
                (issue, when, ScheduleState(state).value, now),
            )

    @_guarded
    def cancel_schedule(self, issue: str) -> bool:
        """Cancel a pending schedule; False if there is none still waiting to send."""
        # Only 'scheduled' can be cancelled: a 'sending' run is already under way and
        # cancelling it here would only make the ledger lie about it.
        with self._lock:
            cur = self._db.execute(
                "UPDATE schedules SET state = 'cancelled' WHERE issue = ? AND state = 'scheduled'",
                (issue,),
            )
        return cur.rowcount == 1

    @_guarded
    def set_schedule_state(self, issue: str, state: ScheduleState) -> None:
        """Move a schedule to another state; KeyError if the issue has none."""
        state = ScheduleState(state)
        with self._lock:
            cur = self._db.execute(
                "UPDATE schedules SET state = ? WHERE issue = ?", (state.value, issue)
            )
        if cur.rowcount != 1:
            raise KeyError(f"no schedule for issue {issue!r}")

    @_guarded
    def schedules(self) -> list[Schedule]:
        """Return every schedule, soonest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT issue, send_at, state, created_at FROM schedules ORDER BY send_at, issue"
            ).fetchall()
        return [_schedule(row) for row in rows]

    @_guarded
    def schedule(self, issue: str) -> Schedule | None:
        """Return one issue's schedule, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT issue, send_at, state, created_at FROM schedules WHERE issue = ?",
                (issue,),
            ).fetchone()
        return _schedule(row) if row else None


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
