"""The readers a shared run still owes an issue (PostgreSQL), handed out in batches so that
two senders never hold the same reader (deliver/claims.py). A recorded outcome deletes its
row in the same statement (deliveries.py: record)."""

from __future__ import annotations

from collections.abc import Sequence

from mailer.state.database import PG_LATER, PG_NOW, PostgresDatabase
from mailer.state.store import Store, guarded, norm_email

# Outbox row `o`'s copy was accepted already. A scalar subquery, not NOT EXISTS: PostgreSQL
# runs it per candidate on the primary key, where an anti-join planned while deliveries was
# still empty would scan all of this issue's deliveries for every candidate.
_ACCEPTED = (
    "coalesce((SELECT d.state IN ('sent', 'bounced') FROM deliveries d"
    " WHERE d.issue = o.issue AND d.email = o.email), false)"
)


class OutboxTable(Store):
    """The outbox table: one row per reader a run still owes, with who holds it until when."""

    @guarded
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
        with self._transaction() as conn:
            assert isinstance(conn, PostgresDatabase)
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
                    (norm_email(e), start + i, n)
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
        # Fresh statistics for the claims to come: a planner that still thinks the outbox
        # empty joins it to deliveries row by row (80 ms a claim at 3,000 readers instead
        # of 2).
        with self._lock:
            self._db.execute("ANALYZE outbox, deliveries")
        return added

    @guarded
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
                f"UPDATE outbox SET claimed_by = ?, lease_until = {PG_LATER}"
                " WHERE issue = ? AND email IN (SELECT o.email FROM outbox o"
                f" WHERE o.issue = ? AND o.seq > ?"
                f" AND (o.claimed_by IS NULL OR o.lease_until < {PG_NOW})"
                f" AND NOT (o.email = ANY (?::text[])) AND NOT {_ACCEPTED}"
                " ORDER BY o.seq LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING email, seq",
                (sender, lease, issue, issue, after, list(exclude), count),
            ).fetchall()
        return sorted(((str(e), int(q)) for e, q in rows), key=lambda r: r[1])

    @guarded
    def unclaim(self, issue: str, sender: str, emails: Sequence[str]) -> None:
        """Give readers back to the pool (claimed, but not on this sender's list)."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET claimed_by = NULL, lease_until = NULL"
                " WHERE issue = ? AND claimed_by = ? AND email = ANY (?::text[])",
                (issue, sender, list(emails)),
            )

    @guarded
    def held_elsewhere(self, issue: str, sender: str) -> int:
        """Readers of the outbox another sender holds under a lease still running."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM outbox o WHERE o.issue = ? AND o.claimed_by <> ?"
                f" AND o.lease_until >= {PG_NOW} AND NOT {_ACCEPTED}",
                (issue, sender),
            ).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def outbox_left(self, issue: str) -> int:
        """Readers of the outbox never tried (no delivery row), held or not."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM outbox o WHERE o.issue = ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.issue = o.issue AND d.email = o.email)",
                (issue,),
            ).fetchone()
        return int(row[0]) if row else 0
