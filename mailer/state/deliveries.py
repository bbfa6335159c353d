"""Who was sent which issue (one row per reader and issue), and who must never be mailed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.state.database import Database
from mailer.state.store import Store, from_text, guarded, norm_email, now_text, to_text
from mailer.states import DeliveryState, Reason

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
# A shared ledger's record also takes the reader out of the outbox (outbox.py), in one
# statement: nobody else claims a reader once their outcome is written.
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
class Suppression:
    """An address that must never be mailed again."""

    email: str
    reason: Reason
    source: str
    created_at: datetime


def _delivery(row: tuple[Any, ...]) -> Delivery:
    """Build a Delivery from a row in _DELIVERY_COLUMNS order."""
    issue, email, state, attempts, reply, first_at, updated_at, next_try_at = row
    first, updated = from_text(first_at), from_text(updated_at)
    next_try = from_text(next_try_at) if next_try_at else None
    return Delivery(issue, email, DeliveryState(state), attempts, reply, first, updated, next_try)


# The status a reader of the store's list takes when suppressed for each reason.
_STATUS_OF = {
    Reason.UNSUBSCRIBED: "unsubscribed",
    Reason.MANUAL: "unsubscribed",
    Reason.BOUNCED: "bounced",
    Reason.COMPLAINED: "complained",
}


def add_suppression(conn: Database, email: str, reason: Reason, source: str, now: str) -> bool:
    """Suppress one normalised address (the caller holds the lock); True if it was new."""
    # DO NOTHING keeps the first reason and date: a later bounce does not rewrite an
    # unsubscribe, and a double-clicked unsubscribe link is a no-op.
    cur = conn.execute(
        "INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (email) DO NOTHING",
        (email, Reason(reason).value, source, now),
    )
    # The store's list follows, whoever suppressed (web, bounces, SNS, a command): a reader
    # who was pending or confirmed takes the status; one who had left keeps the first.
    conn.execute(
        "UPDATE subscribers SET status = ?, updated_at = ?"
        " WHERE email = ? AND status IN ('pending', 'confirmed')",
        (_STATUS_OF[Reason(reason)], now, email),
    )
    return cur.rowcount == 1


class DeliveryTable(Store):
    """The deliveries and suppressions tables."""

    def record(
        self,
        issue: str,
        email: str,
        state: DeliveryState,
        reply: str = "",
        next_try_at: datetime | None = None,
    ) -> None:
        """Upsert one recipient's outcome: count the attempt, keep first_at, replace the rest."""
        now = now_text()
        retry = to_text(next_try_at) if next_try_at is not None else None
        params = (issue, norm_email(email), DeliveryState(state).value, reply, now, now, retry)
        # Inlined rather than @guarded: this runs once per message sent.
        try:
            with self._lock:
                if self._shared:  # and out of the outbox: nobody else claims it now
                    self._db.execute(_RECORD_SHARED_SQL, (params[0], params[1], *params))
                else:
                    self._db.execute(_RECORD_SQL, params)
        except self._failures as exc:
            raise self._error(exc) from exc

    @guarded
    def give_up(self, issue: str, first_before: datetime, after: str) -> int:
        """Deferred readers first tried before `first_before` become failed; returns how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE deliveries SET state = 'failed', next_try_at = NULL, updated_at = ?,"
                " last_reply = 'gave up after ' || attempts"
                " || CASE attempts WHEN 1 THEN ' try' ELSE ' tries' END || ' over ' || ? || ': '"
                " || last_reply"
                " WHERE issue = ? AND state = 'deferred' AND first_at < ?",
                (now_text(), after, issue, to_text(first_before)),
            )
        return cur.rowcount

    @guarded
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

    @guarded
    def _fetch_deliveries(self, issue: str, state: DeliveryState | None) -> list[tuple[Any, ...]]:
        """Fetch delivery rows for deliveries()."""
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE issue = ?"
        params: tuple[str, ...] = (issue,)
        if state is not None:
            sql += " AND state = ?"
            params += (state.value,)
        with self._lock:
            return self._db.execute(sql + " ORDER BY first_at, email", params).fetchall()

    @guarded
    def delivery(self, issue: str, email: str) -> Delivery | None:
        """One reader's row for one issue, or None if never attempted."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE issue = ? AND email = ?",
                (issue, norm_email(email)),
            ).fetchone()
        return _delivery(row) if row else None

    @guarded
    def issues(self) -> list[str]:
        """Return every issue with a delivery, ordered by its first delivery, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT issue FROM deliveries GROUP BY issue ORDER BY min(first_at), issue"
            ).fetchall()
        return [issue for (issue,) in rows]

    @guarded
    def is_reader(self, email: str) -> bool:
        """Tell whether this address was ever sent (or tried with) a copy of any issue."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM deliveries WHERE email = ? LIMIT 1", (norm_email(email),)
            ).fetchone()
        return row is not None

    @guarded
    def last_issue(self, email: str) -> str | None:
        """The newest issue whose copy our server accepted for this address, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT issue FROM deliveries WHERE email = ? AND state IN ('sent', 'bounced')"
                " ORDER BY first_at DESC, issue DESC LIMIT 1",
                (norm_email(email),),
            ).fetchone()
        return row[0] if row else None

    # -- suppressions ---------------------------------------------------------------------

    @guarded
    def suppress(self, email: str, reason: Reason, source: str) -> bool:
        """Add an address to the suppression list; True if it was not already there."""
        reason = Reason(reason)
        with self._transaction() as conn:
            return add_suppression(conn, norm_email(email), reason, source, now_text())

    @guarded
    def is_suppressed(self, email: str) -> bool:
        """Tell whether an address is on the suppression list."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM suppressions WHERE email = ?", (norm_email(email),)
            ).fetchone()
        return row is not None

    @guarded
    def suppressed_set(self) -> set[str]:
        """Return every suppressed address, lower-cased."""
        with self._lock:
            rows = self._db.execute("SELECT email FROM suppressions").fetchall()
        return {email for (email,) in rows}

    @guarded
    def suppressions(self) -> list[Suppression]:
        """Return the suppression list, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT email, reason, source, created_at FROM suppressions"
                " ORDER BY created_at, email"
            ).fetchall()
        return [Suppression(e, Reason(r), s, from_text(c)) for e, r, s, c in rows]
