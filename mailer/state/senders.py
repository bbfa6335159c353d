"""Who is sending an issue on a shared ledger (PostgreSQL): one row per `mailer send` run,
kept alive by its heartbeat, for the shared rate and `mailer status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailer.state.database import PG_AGO, PG_LATER, PG_NOW
from mailer.state.store import Store, from_text, guarded


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


class SenderTable(Store):
    """The senders table (a heartbeat and a goodbye also renew or free the sender's claims)."""

    @guarded
    def join(self, sender: str, issue: str, host: str, pid: int) -> None:
        """Say that `sender` (a new id per run) is sending `issue`."""
        with self._lock:
            self._db.execute(
                "INSERT INTO senders (id, issue, host, pid, started_at, heartbeat_at, state,"
                f" sent, deferred, failed) VALUES (?, ?, ?, ?, {PG_NOW}, {PG_NOW},"
                " 'sending', 0, 0, 0)",
                (sender, issue, host, pid),
            )

    @guarded
    def heartbeat(self, issue: str, sender: str, lease: float, counts: tuple[int, int, int]) -> int:
        """Renew `sender`'s leases and counts; returns how many senders of `issue` are live
        (heard from within one lease), this one included."""
        with self._lock:
            conn = self._db
            conn.execute(
                f"UPDATE outbox SET lease_until = {PG_LATER} WHERE issue = ? AND claimed_by = ?",
                (lease, issue, sender),
            )
            conn.execute(
                f"UPDATE senders SET heartbeat_at = {PG_NOW}, sent = ?, deferred = ?, failed = ?"
                " WHERE id = ?",
                (*counts, sender),
            )
            row = conn.execute(
                "SELECT count(*) FROM senders WHERE issue = ? AND state = 'sending'"
                f" AND heartbeat_at >= {PG_AGO}",
                (issue, lease),
            ).fetchone()
        return max(1, int(row[0]) if row else 1)

    @guarded
    def leave(self, issue: str, sender: str, state: str, counts: tuple[int, int, int]) -> None:
        """`sender` is done (or stopped): its unsent claims go back to the pool at once."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET claimed_by = NULL, lease_until = NULL"
                " WHERE issue = ? AND claimed_by = ?",
                (issue, sender),
            )
            self._db.execute(
                f"UPDATE senders SET state = ?, heartbeat_at = {PG_NOW}, sent = ?,"
                " deferred = ?, failed = ? WHERE id = ?",
                (state, *counts, sender),
            )

    @guarded
    def senders(self, issue: str, lease: float) -> list[SenderRow]:
        """Every sender that took part in `issue`, newest first; `live` if heard from within
        one lease."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, host, pid, started_at, heartbeat_at, state, sent, deferred, failed,"
                f" state = 'sending' AND heartbeat_at >= {PG_AGO} FROM senders WHERE issue = ?"
                " ORDER BY started_at DESC",
                (lease, issue),
            ).fetchall()
        return [
            SenderRow(i, h, p, from_text(st), from_text(hb), state, s, d, f, bool(live))
            for i, h, p, st, hb, state, s, d, f, live in rows
        ]
