"""Where the ledger lives: one SQLite file (the default) or PostgreSQL (`database_url`).

Both speak the same small dialect to the ledger, so its SQL is written once: `?`
placeholders, `execute` returning a cursor (rowcount, fetchone, fetchall), explicit
transactions, a schema version, a number that changes when suppressions are added, and their
own failures described as one MailerError line. Nothing here knows the ledger's tables.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from mailer.errors import EXIT_TEMPFAIL, DiskFull, MailerError, StoreDamaged
from mailer.values import masked_url

_BUSY_MS = 5000  # how long a statement waits for another process's write before giving up
_CONNECT_TIMEOUT = 10  # seconds to reach PostgreSQL


DAMAGED = (
    "restore the latest `mailer backup` copy (docs/operations.md#backups). Moving the file"
    " aside starts an empty ledger with no suppressions, and sends of issues already started"
    " then refuse until --ledger-was-reset"
)


class LedgerGone(MailerError):
    """The ledger file was deleted or replaced under a running send."""

    exit_code = EXIT_TEMPFAIL


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """One connection to where the ledger lives (callers serialise its use)."""

    where: str  # the file, or the URL without its password: for messages
    failures: tuple[type[Exception], ...]  # runtime failures that are not our own bugs
    shared: bool  # several machines can use it at once (PostgreSQL)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def begin(self) -> None: ...  # takes the write lock at once where that is a thing
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    @property
    def in_transaction(self) -> bool: ...
    def schema_version(self) -> int: ...
    def set_schema_version(self, version: int) -> None: ...
    def adapt(self, ddl: str) -> str: ...  # a migration statement in this dialect
    def change_counter(self) -> int: ...  # changes when another connection adds suppressions
    def check_identity(self) -> None: ...
    def damage(self) -> str: ...  # "" when the store reads back whole, else what is wrong
    def describe(self, exc: Exception) -> MailerError: ...
    def close(self) -> None: ...


class SQLiteDatabase:
    """state_dir/ledger.db in WAL mode; one process's writes wait for another's up to 5 s."""

    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self.failures: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MailerError(
                f"{path}: cannot create the state directory: {exc.strerror or exc}"
            ) from exc
        # isolation_level=None: we issue BEGIN ourselves, so a lone statement is its own
        # short transaction instead of one the module keeps open behind our back.
        try:
            self._conn = sqlite3.connect(
                path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:
            raise self.describe(exc) from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            mode = self._enable_wal()
            if mode != "wal":
                raise MailerError(f"{path}: cannot switch the ledger to WAL mode (got {mode})")
            # NORMAL in WAL mode survives a process crash or kill -9; only a power cut can lose
            # the last commits, and it spares the hot path an fsync per record.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._identity = _identity(path)
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.DatabaseError):  # a damaged file: say so, with a hint
                raise self.describe(exc) from exc
            raise

    def _enable_wal(self) -> str:
        """Switch the file to WAL (a persistent setting) and return the journal mode in force."""
        # The switch needs an exclusive lock and SQLite answers BUSY at once, skipping the
        # busy handler, when another process is opening the same fresh file: retry ourselves.
        deadline = time.monotonic() + _BUSY_MS / 1000
        while True:
            try:
                mode = str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
                if mode != "wal":
                    mode = str(
                        self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    ).lower()
                return mode
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def begin(self) -> None:
        # IMMEDIATE takes the write lock up front: two processes cannot both decide.
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:  # SQLite may have rolled back already (disk full)
            self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version = {int(version)}")

    def adapt(self, ddl: str) -> str:
        return ddl

    def change_counter(self) -> int:
        # data_version changes whenever another connection commits, whatever it wrote.
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def damage(self) -> str:
        # A second connection, with no page cache of its own, reads every page from the file
        # and the WAL as the next process would: a WAL overwritten under this process shows
        # here, not only when the next command opens the file.
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=_BUSY_MS / 1000)
            ) as fresh:
                rows = fresh.execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        found = [str(row[0]) for row in rows]
        return "" if found == ["ok"] else "; ".join(found)

    def check_identity(self) -> None:
        if _identity(self.path) != self._identity:
            raise LedgerGone(
                f"{self.path} was deleted or replaced while in use; stopped here, and the next"
                " send of an issue already started refuses until the ledger is back",
                hint="put the ledger back, or restore a backup: docs/operations.md#backups",
            )

    def describe(self, exc: Exception) -> MailerError:
        detail = str(exc)
        hint = None
        code = getattr(exc, "sqlite_errorcode", 0)
        # A full disk shows as SQLITE_FULL, or, when the WAL index cannot grow, as an I/O error.
        if code == sqlite3.SQLITE_FULL or (code & 0xFF == sqlite3.SQLITE_IOERR and self._full()):
            if code != sqlite3.SQLITE_FULL:
                detail += " (the disk is full)"
            return DiskFull(
                f"{self.path}: cannot use the ledger: {detail}",
                hint="free some space there, then run the same command again",
            )
        if isinstance(exc, sqlite3.OperationalError) and "locked" in detail:
            hint = "another process kept the ledger busy for over 5 s; try again"
        elif not isinstance(exc, sqlite3.OperationalError):
            return StoreDamaged(f"{self.path}: cannot use the ledger: {detail}", hint=DAMAGED)
        return MailerError(f"{self.path}: cannot use the ledger: {detail}", hint=hint)

    def _full(self) -> bool:
        try:
            return os.statvfs(self.path.parent).f_bavail == 0
        except OSError:
            return False

    def close(self) -> None:
        self._conn.close()


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at path; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# PostgreSQL's clock as the ledger writes times (UTC ISO-8601, microseconds), for the SQL of
# a shared ledger: leases are compared across machines, so they are read off one clock, the
# database's. statement_timestamp(): one value per statement (clock_timestamp() is read
# again per row). PG_LATER and PG_AGO take a number of seconds as their one parameter.
PG_NOW = (
    "to_char(statement_timestamp() AT TIME ZONE 'UTC',"
    """ 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
)
PG_LATER = (
    "to_char((statement_timestamp() + make_interval(secs => ?)) AT TIME ZONE 'UTC',"
    """ 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
)
PG_AGO = PG_LATER.replace("+ make_interval", "- make_interval")


class PostgresDatabase:
    """A PostgreSQL database shared by several senders and the web app (psycopg 3).

    The connection is in autocommit mode, so a lone statement is its own transaction, as
    with SQLite; `begin` opens one explicitly. The password comes from the URL (when it is
    in .env or the environment) or from libpq's PGPASSWORD, never from mailer.toml.
    """

    shared = True

    def __init__(self, url: str, where: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise MailerError(
                "database_url needs psycopg: pip install 'mailer[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self.where = masked_url(where)  # a caller's `where` may be the URL itself
        # psycopg.Error is every failure the server or the connection reports; a bad query
        # of ours shows up in the tests, which run against a real PostgreSQL.
        self.failures: tuple[type[Exception], ...] = (psycopg.Error,)
        try:
            self._conn = psycopg.connect(
                url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT, application_name="mailer"
            )
        except psycopg.Error as exc:
            raise self.describe(exc) from None
        self._sql: dict[str, str] = {}

    def _translate(self, sql: str) -> str:
        done = self._sql.get(sql)
        if done is None:
            done = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return done

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(self._translate(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        # psycopg pipelines executemany: one round trip for the batch, not one per row.
        with self._conn.cursor() as cur:
            cur.executemany(self._translate(sql), rows)

    def begin(self) -> None:
        self._conn.execute("BEGIN")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self._conn.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        status = self._conn.info.transaction_status
        return status != self._psycopg.pq.TransactionStatus.IDLE

    def schema_version(self) -> int:
        found = self._conn.execute("SELECT to_regclass('mailer_schema')").fetchone()
        if not found or found[0] is None:
            return 0
        row = self._conn.execute("SELECT max(version) FROM mailer_schema").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def xact_lock(self, name: str) -> None:
        """Inside a transaction: wait for, then hold until it ends, the lock named `name`."""
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key(name),))

    def lock_schema(self) -> None:
        """Inside a transaction: one process at a time creates or migrates the tables (two
        racing to CREATE TABLE IF NOT EXISTS can both try, and one fails)."""
        self.xact_lock("mailer:schema")
        self._conn.execute("CREATE TABLE IF NOT EXISTS mailer_schema (version INTEGER NOT NULL)")

    def set_schema_version(self, version: int) -> None:
        self._conn.execute("DELETE FROM mailer_schema")
        self._conn.execute("INSERT INTO mailer_schema (version) VALUES (%s)", (int(version),))

    def adapt(self, ddl: str) -> str:
        return ddl.replace(") WITHOUT ROWID", ")")

    def change_counter(self) -> int:
        # An added suppression changes their number and their newest time; a confirmed
        # signup may lift one meanwhile, which would leave the number alone.
        row = self._conn.execute(
            "SELECT count(*), coalesce(max(created_at), '') FROM suppressions"
        ).fetchone()
        return zlib.crc32(f"{row[0]}|{row[1]}".encode()) if row else 0

    def check_identity(self) -> None:
        return None  # a database cannot be swapped under us like a file

    def damage(self) -> str:
        return ""  # PostgreSQL checks its own pages (and reports what it finds as errors)

    def describe(self, exc: Exception) -> MailerError:
        # libpq quotes a URL it cannot parse whole, password and all.
        detail = " ".join(str(exc).replace(self._url, self.where).split())
        return MailerError(f"{self.where}: cannot use the ledger: {detail}")

    def close(self) -> None:
        self._conn.close()

    def copy_rows(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """COPY rows in (a list of 100,000 readers in well under a second)."""
        with self._conn.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    @contextlib.contextmanager
    def advisory_lock(self, name: str) -> Iterator[bool]:
        """Hold a session lock named `name` for the block; yields False if someone has it."""
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (_key(name),)).fetchone()
        got = bool(row and row[0])
        try:
            yield got
        finally:
            if got:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (_key(name),))


def _key(name: str) -> int:
    """A stable 63-bit advisory-lock key for a name (the same on every machine)."""
    return zlib.crc32(name.encode()) | (zlib.adler32(name.encode()) << 32) & 0x7FFFFFFFFFFFFFFF
