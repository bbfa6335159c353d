"""The ledger's schema, one version at a time, for SQLite and PostgreSQL alike.

Each statement is written once; the database adapts it to its dialect (database.py: adapt).
SQLite records the version in PRAGMA user_version, PostgreSQL in a mailer_schema table.
"""

from __future__ import annotations

from mailer.errors import MailerError
from mailer.state.database import Database, PostgresDatabase

# Each entry moves the schema one version up; the stored schema version is how many have run.
# Never edit a released entry: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # 5: facts about the ledger itself. `ledger_id` is made once per ledger and travels with
    # its backups: a send tells by it whether this is the ledger earlier runs recorded in.
    (
        """
        CREATE TABLE mailer_meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 6: `mailer digest`: each feed's validators for the next conditional GET, and the
    # entries already put in a digest (by guid or id, else link), so none comes twice.
    (
        "CREATE TABLE feeds (url TEXT PRIMARY KEY, etag TEXT NOT NULL,"
        " last_modified TEXT NOT NULL, checked_at TEXT NOT NULL) WITHOUT ROWID",
        "CREATE TABLE feed_entries (url TEXT NOT NULL, entry TEXT NOT NULL, issue TEXT NOT NULL,"
        " seen_at TEXT NOT NULL, PRIMARY KEY (url, entry)) WITHOUT ROWID",
    ),
    # 7: the list itself, for `subscribers = "store"` (state/readers.py): one row per reader,
    # keyed like suppressions and deliveries (lower-cased), with the address as sent, merge
    # fields (a JSON object), tags (",a,b,": one LIKE finds a tag), a status and the consent
    # record. No index beside the key: a send walks the key in order and skips the few who
    # are not confirmed, and an import of a million readers writes one B-tree, not two.
    # subscriber_fields names every field any reader has had: a send checks its templates
    # against them without reading every row.
    (
        """
        CREATE TABLE subscribers (
            email        TEXT PRIMARY KEY,
            address      TEXT NOT NULL,
            name         TEXT NOT NULL,
            fields       TEXT NOT NULL,
            tags         TEXT NOT NULL,
            status       TEXT NOT NULL CHECK (status IN
                         ('pending', 'confirmed', 'unsubscribed', 'bounced', 'complained')),
            source       TEXT NOT NULL,
            signed_up_at TEXT NOT NULL,
            confirmed_at TEXT,
            form_url     TEXT NOT NULL,
            updated_at   TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE TABLE subscriber_fields (name TEXT PRIMARY KEY) WITHOUT ROWID",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Database) -> None:
    """Run any pending migrations, one process at a time (each in one transaction)."""
    version = conn.schema_version()
    if version == SCHEMA_VERSION:
        return
    _check_version(conn, version)
    conn.begin()
    try:
        if isinstance(conn, PostgresDatabase):
            conn.lock_schema()
        version = conn.schema_version()  # another process may have migrated meanwhile
        _check_version(conn, version)
        for statements in MIGRATIONS[version:]:
            for sql in statements:
                conn.execute(conn.adapt(sql))
        conn.set_schema_version(SCHEMA_VERSION)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _check_version(conn: Database, version: int) -> None:
    """Refuse a ledger written by a newer mailer rather than guess at its schema."""
    if version > SCHEMA_VERSION:
        raise MailerError(
            f"{conn.where}: ledger schema version {version} is newer than this mailer "
            f"understands ({SCHEMA_VERSION})",
            hint="upgrade mailer",
        )
