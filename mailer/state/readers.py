"""The store's list (`subscribers = "store"`): one row per reader with merge fields, tags, a
status and the consent record. Imports, the `subscribers` commands, the web app and (to
come) the signup form all write it through these methods; a send reads it a page at a time.

The suppression list stays the one authority on who must never get mail: a suppressed or
forgotten address is never added back here, except by `confirm`, a reader's own confirmed
signup. Suppressing an address (any way: web, bounces, `mailer unsubscribe`) sets its
reader's status too (deliveries.py: add_suppression).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailer.state.database import Database
from mailer.state.deliveries import add_suppression
from mailer.state.reader_rows import (
    ACTIVE,
    COLUMNS,
    FORGOTTEN_PREFIX,
    REASON_OF,
    Forgotten,
    Reader,
    Row,
    Wanted,
    merged,
    reader_of,
    tags_of,
    tags_text,
)
from mailer.state.store import Store, guarded, norm_email, now_text
from mailer.states import Reason, SubscriberStatus

CHUNK = 500  # addresses per `IN (...)`: far below every SQLite build's variable limit
PAGE = 1000  # readers per query when a send or `list` walks the list

_INSERT = f"INSERT INTO subscribers ({COLUMNS}, updated_at) VALUES ({', '.join('?' * 11)})"
_UPDATE = (
    "UPDATE subscribers SET name = ?, fields = ?, tags = ?, status = ?, confirmed_at = ?,"
    " updated_at = ? WHERE email = ?"
)
_SUPPRESS = (
    "INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (email) DO NOTHING"
)
_FIELD = "INSERT INTO subscriber_fields (name) VALUES (?) ON CONFLICT (name) DO NOTHING"


@dataclass
class Applied:
    """What writing a batch of wanted readers changed (or, in a dry run, would change)."""

    added: int = 0
    changed: int = 0
    suppressed: int = 0  # newly on the suppression list: the export said they had left
    unchanged: int = 0
    skipped: list[tuple[Wanted, str]] = field(default_factory=list)  # and why


def _like(tag: str) -> str:
    """`LIKE` pattern for one tag in the stored ",a,b," text."""
    escaped = tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%,{escaped},%"


def _where(status: SubscriberStatus | None, tags: Sequence[str]) -> tuple[str, list[Any]]:
    """The WHERE clauses (each starting with AND) for a status and any of some tags."""
    sql, params = "", []
    if status is not None:
        sql += " AND status = ?"
        params.append(SubscriberStatus(status).value)
    if tags:
        sql += " AND (" + " OR ".join("tags LIKE ? ESCAPE '\\'" for _ in tags) + ")"
        params += [_like(t) for t in tags]
    return sql, params


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class ReaderTable(Store):
    """The subscribers and subscriber_fields tables."""

    # -- writing many: imports and `subscribers add` -------------------------------------

    @guarded
    def apply_readers(
        self, wanted: Sequence[Wanted], *, forgotten: Forgotten, dry_run: bool = False
    ) -> Applied:
        """Add or update these readers (distinct addresses) in one transaction.

        A suppressed or forgotten address is skipped; a reader who left stays gone. A wanted
        reader who has left (an export's unsubscribed or cleaned row) is suppressed.
        """
        if dry_run:
            with self._lock:
                return self._apply_readers(self._db, wanted, forgotten, write=False)
        with self._transaction() as conn:
            return self._apply_readers(conn, wanted, forgotten, write=True)

    def _apply_readers(
        self, conn: Database, wanted: Sequence[Wanted], forgotten: Forgotten, *, write: bool
    ) -> Applied:
        # In key order: the lookups and the writes walk the B-tree once, not at random.
        keys = sorted(w.key for w in wanted)
        old: dict[str, Row] = {}
        suppressed: dict[str, str] = {}
        for part in _chunks(keys):
            marks = ", ".join("?" * len(part))
            for row in conn.execute(
                f"SELECT {COLUMNS} FROM subscribers WHERE email IN ({marks})", part
            ).fetchall():
                old[row[0]] = tuple(row)
            for email, reason in conn.execute(
                f"SELECT email, reason FROM suppressions WHERE email IN ({marks})", part
            ).fetchall():
                suppressed[email] = reason
        now = now_text()
        done = Applied()
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        suppress: list[tuple[str, str, str, str]] = []
        names: set[str] = set()
        for want in wanted:
            before = old.get(want.key)
            active = want.status in ACTIVE
            if want.key in forgotten:
                done.skipped.append((want, "forgotten on request: never added again"))
                continue
            if active and want.key in suppressed:
                done.skipped.append((want, f"suppressed ({suppressed[want.key]})"))
                continue
            if active and before is not None and SubscriberStatus(before[5]) not in ACTIVE:
                done.skipped.append((want, before[5]))
                continue
            newly = not active and want.key not in suppressed
            if newly:
                suppress.append((want.key, REASON_OF[want.status].value, want.source, now))
                done.suppressed += 1
            if before is None and not active:
                # One who left needs no row: the suppression keeps them from mail.
                done.unchanged += 0 if newly else 1
                continue
            after = merged(before, want, now)
            if before is None:
                inserts.append((*after, now))
                done.added += 1
            elif after != before:
                updates.append((*after[2:6], after[8], now, want.key))
                done.changed += 0 if newly else 1
            else:
                done.unchanged += 0 if newly else 1
            names.update(want.fields)
        if write:
            if inserts:
                conn.executemany(_INSERT, sorted(inserts))
            if updates:
                conn.executemany(_UPDATE, sorted(updates, key=lambda u: u[-1]))
            if suppress:
                conn.executemany(_SUPPRESS, suppress)
            if names:
                conn.executemany(_FIELD, [(n,) for n in sorted(names)])
        return done

    # -- one reader -----------------------------------------------------------------------

    @guarded
    def reader(self, email: str) -> Reader | None:
        """The reader with this address, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM subscribers WHERE email = ?", (norm_email(email),)
            ).fetchone()
        return reader_of(tuple(row)) if row else None

    @guarded
    def retag(
        self, emails: Sequence[str], add: Sequence[str], remove: Sequence[str]
    ) -> tuple[list[Reader], list[str]]:
        """Add and remove tags on these readers, all or none: (the readers after, the
        addresses that are not on the list, in which case nothing changed)."""
        keys = list(dict.fromkeys(norm_email(e) for e in emails))
        now = now_text()
        with self._transaction() as conn:
            rows: dict[str, Row] = {}
            for part in _chunks(keys):
                marks = ", ".join("?" * len(part))
                for row in conn.execute(
                    f"SELECT {COLUMNS} FROM subscribers WHERE email IN ({marks})", part
                ).fetchall():
                    rows[row[0]] = tuple(row)
            missing = [e for e in keys if e not in rows]
            if missing:
                return [], missing
            out = []
            for key in keys:
                row = rows[key]
                tags = tags_text(t for t in (*tags_of(row[4]), *add) if t not in remove)
                if tags != row[4]:
                    conn.execute(
                        "UPDATE subscribers SET tags = ?, updated_at = ? WHERE email = ?",
                        (tags, now, key),
                    )
                    row = (*row[:4], tags, *row[5:])
                out.append(reader_of(row))
        return out, []

    @guarded
    def remove_reader(self, email: str, source: str = "cli") -> tuple[bool, bool]:
        """Suppress `email` by hand (its reader, if any, becomes unsubscribed): (it was on
        the list, it was newly suppressed)."""
        key = norm_email(email)
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM subscribers WHERE email = ?", (key,)).fetchone()
            new = add_suppression(conn, key, Reason.MANUAL, source, now_text())
        return row is not None, new

    @guarded
    def forget(self, email: str, key: str) -> dict[str, int]:
        """Erase `email` from every table, leaving `key` (forget_key) in the suppressions:
        how many rows each table lost."""
        address = norm_email(email)
        lost = {}
        with self._transaction() as conn:
            for table in ("subscribers", "deliveries", "feedback", "outbox", "suppressions"):
                cur = conn.execute(f"DELETE FROM {table} WHERE email = ?", (address,))
                lost[table] = max(cur.rowcount, 0)
            conn.execute(_SUPPRESS, (key, Reason.MANUAL.value, "forget", now_text()))
        return lost

    @guarded
    def forgotten_keys(self) -> list[str]:
        """Every keyed hash `forget` left in the suppressions."""
        with self._lock:
            rows = self._db.execute(
                "SELECT email FROM suppressions WHERE email LIKE ?", (FORGOTTEN_PREFIX + "%",)
            ).fetchall()
        return [email for (email,) in rows]

    # -- the signup form (a reader's own double opt-in) -------------------------------------

    @guarded
    def signup(self, want: Wanted) -> Reader:
        """Record a signup as pending (source "form", its page in form_url), whatever came
        before: a reader who left may sign up again, and stays suppressed until `confirm`.
        A pending or confirmed reader keeps their status; name, fields and tags are added."""
        now = now_text()
        pending = Wanted(
            want.email,
            SubscriberStatus.PENDING,
            want.source,
            want.name,
            want.fields,
            want.tags,
            signed_up_at=now,
            form_url=want.form_url,
        )
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM subscribers WHERE email = ?", (pending.key,)
            ).fetchone()
            before: Row | None = tuple(row) if row else None
            if before is not None and SubscriberStatus(before[5]) not in ACTIVE:
                conn.execute("DELETE FROM subscribers WHERE email = ?", (pending.key,))
                before = None  # a new signup: a new consent record
            after = merged(before, pending, now)
            if before is None:
                conn.execute(_INSERT, (*after, now))
            elif after != before:
                conn.execute(_UPDATE, (*after[2:6], after[8], now, pending.key))
            if pending.fields:
                conn.executemany(_FIELD, [(n,) for n in sorted(pending.fields)])
        return reader_of(after)

    @guarded
    def confirm(self, email: str, forgotten_key: str = "") -> Reader | None:
        """The reader followed their confirmation link: pending becomes confirmed (now), and
        their suppression, and the keyed hash of an earlier `forget`, are lifted. None when
        there is no such reader; a reader who is not pending is returned unchanged."""
        key = norm_email(email)
        now = now_text()
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM subscribers WHERE email = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            if row[5] != SubscriberStatus.PENDING.value:
                return reader_of(tuple(row))
            conn.execute(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, updated_at = ?"
                " WHERE email = ?",
                (now, now, key),
            )
            conn.execute("DELETE FROM suppressions WHERE email IN (?, ?)", (key, forgotten_key))
            row = conn.execute(
                f"SELECT {COLUMNS} FROM subscribers WHERE email = ?", (key,)
            ).fetchone()
        return reader_of(tuple(row))

    # -- reading many -----------------------------------------------------------------------

    def readers(
        self, status: SubscriberStatus | None = None, tags: Sequence[str] = ()
    ) -> Iterator[Reader]:
        """Every reader (of one status, with any of these tags), in address order, read a
        page at a time so that nothing holds the lock while the caller loops."""
        after = ""
        while True:
            rows = self._page(f"SELECT {COLUMNS} FROM subscribers", status, tags, after, PAGE)
            yield from (reader_of(tuple(row)) for row in rows)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    @guarded
    def confirmed_page(
        self, tags: Sequence[str], after: str, limit: int = PAGE
    ) -> list[tuple[str, str, str, str]]:
        """(key, address, name, fields) of the next confirmed readers after `after`: a send."""
        sql = "SELECT email, address, name, fields FROM subscribers"
        return self._page(sql, SubscriberStatus.CONFIRMED, tags, after, limit)

    @guarded
    def _page(
        self,
        select: str,
        status: SubscriberStatus | None,
        tags: Sequence[str],
        after: str,
        limit: int,
    ) -> list[Any]:
        where, params = _where(status, tags)
        sql = f"{select} WHERE email > ?{where} ORDER BY email LIMIT ?"
        with self._lock:
            return self._db.execute(sql, (after, *params, limit)).fetchall()

    @guarded
    def count_readers(
        self, status: SubscriberStatus | None = None, tags: Sequence[str] = ()
    ) -> int:
        """How many readers there are (of one status, with any of these tags)."""
        where, params = _where(status, tags)
        with self._lock:
            row = self._db.execute(
                f"SELECT count(*) FROM subscribers WHERE 1 = 1{where}", params
            ).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def reader_counts(self) -> dict[SubscriberStatus, int]:
        """Readers per status; every status is present."""
        counts = dict.fromkeys(SubscriberStatus, 0)
        with self._lock:
            rows = self._db.execute(
                "SELECT status, count(*) FROM subscribers GROUP BY status"
            ).fetchall()
        counts.update((SubscriberStatus(s), int(n)) for s, n in rows)
        return counts

    @guarded
    def reader_fields(self) -> tuple[str, ...]:
        """Every merge field any reader has had, sorted: what templates may use."""
        with self._lock:
            rows = self._db.execute("SELECT name FROM subscriber_fields ORDER BY name").fetchall()
        return tuple(name for (name,) in rows)
