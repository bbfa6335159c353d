"""A consistent copy of the store, safe to take while a send runs.

SQLite: the online backup API copies the ledger page by page under a read transaction, so the
copy is one moment of the database (WAL included) and a running send is never blocked for
long. PostgreSQL: `pg_dump`, which takes its own consistent snapshot.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mailer.errors import EXIT_TEMPFAIL, ConfigError, MailerError, io_error

PAGES_PER_STEP = 1024  # pages copied between two chances for a writer to get the lock


class BackupError(MailerError):
    """The copy could not be written (a full disk, a vanished folder): try again."""

    exit_code = EXIT_TEMPFAIL


@dataclass(frozen=True)
class Backup:
    """Where the copy went, how large it is, and what made it."""

    path: Path
    size: int
    how: str  # "sqlite backup API" or "pg_dump"


def backup_sqlite(source: Path, dest: Path) -> Backup:
    """Copy the SQLite ledger at `source` to `dest` (which must not exist)."""
    if not source.is_file():
        raise ConfigError(f"no ledger at {source}: nothing has been recorded yet")
    _refuse_existing(dest)
    partial = dest.with_name(dest.name + ".partial")
    try:
        with (
            sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src,
            sqlite3.connect(partial) as dst,
        ):
            src.backup(dst, pages=PAGES_PER_STEP)
            # Sanity check the copy before it takes the name: a backup that cannot be read
            # back is worse than none, as it would be trusted.
            ok = dst.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"the copy at {partial} failed its check: {ok}")
        os.replace(partial, dest)
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot write the backup {dest}: {_reason(exc)}") from None
    return Backup(dest, dest.stat().st_size, "sqlite backup API")


def backup_postgres(database_url: str, dest: Path) -> Backup:
    """Run pg_dump (custom format, restorable with pg_restore) into `dest`."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise ConfigError(
            "the ledger is in PostgreSQL and pg_dump is not on PATH",
            hint="install PostgreSQL's client tools, or run `pg_dump -Fc -f FILE DBNAME` "
            "where they are",
        )
    _refuse_existing(dest)
    parts = urlsplit(database_url)
    env = dict(os.environ)
    if parts.password:  # never on the command line, where `ps` would show it
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = (f"{parts.username}@" if parts.username else "") + host
        netloc += f":{parts.port}" if parts.port else ""
        database_url = urlunsplit(parts._replace(netloc=netloc))
    partial = dest.with_name(dest.name + ".partial")
    done = subprocess.run(
        [pg_dump, "--format=custom", f"--file={partial}", f"--dbname={database_url}"],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"pg_dump failed: {last}")
    os.replace(partial, dest)
    return Backup(dest, dest.stat().st_size, "pg_dump")


def _refuse_existing(dest: Path) -> None:
    if dest.exists():
        raise ConfigError(f"{dest} exists: not replacing it", hint="name a new file")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(dest.parent, "cannot make the folder for the backup", exc) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
