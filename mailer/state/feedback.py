"""What came back about our mail (bounces, complaints, mailed unsubscribes), kept per
incoming message so that reading one twice changes nothing (`mailer bounces`, POST /sns)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailer.state.deliveries import add_suppression
from mailer.state.store import Store, guarded, norm_email, now_text
from mailer.states import Feedback, Reason


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


class FeedbackTable(Store):
    """The feedback_messages and feedback tables, and what they change in the others."""

    @guarded
    def feedback_seen(self, message_id: str) -> bool:
        """Tell whether the incoming message with this id was already handled."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM feedback_messages WHERE message_id = ?", (message_id,)
            ).fetchone()
        return row is not None

    @guarded
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

    @guarded
    def soft_streak(self, email: str) -> int:
        """Consecutive issues, newest first, whose accepted copy to `email` soft-bounced.

        Only issues our server accepted (`sent` or `bounced` rows) are in the sequence, in
        the order they were first sent; deferred and failed rows never reached the reader's
        server and neither count nor break it. The newest accepted issue without a soft
        bounce ends the run: a later copy that did not come back resets the count. Worked
        out from the whole history each time, so the order DSNs arrive in does not matter.
        """
        with self._lock:
            return self._soft_streak(norm_email(email))

    def _soft_streak(self, email: str) -> int:
        """soft_streak() for a caller that holds the lock."""
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

    @guarded
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
        now = now_text()
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO feedback_messages (message_id, kind, source, received_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING",
                (message_id, kind.value, source, now),
            )
            if cur.rowcount != 1:
                return None  # the transaction wrote nothing: committing it changes nothing
            return [self._apply(message_id, e, now, soft_limit) for e in events]

    def _apply(
        self, message_id: str, event: FeedbackEvent, now: str, soft_limit: int
    ) -> FeedbackOutcome:
        """One event inside record_feedback's transaction (the lock is held)."""
        conn = self._db
        email = norm_email(event.email)
        kind = Feedback(event.kind)
        conn.execute(
            "INSERT INTO feedback (message_id, email, issue, kind, status, detail, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, email) DO NOTHING",
            (message_id, email, event.issue, kind.value, event.status, event.detail, now),
        )
        what = " ".join(filter(None, (event.status, event.detail)))
        if kind is Feedback.COMPLAINT:
            source = f"complaint {event.status}"
            return FeedbackOutcome(
                event, add_suppression(conn, email, Reason.COMPLAINED, source, now), False
            )
        if kind is Feedback.UNSUBSCRIBE:
            return FeedbackOutcome(
                event, add_suppression(conn, email, Reason.UNSUBSCRIBED, "mailto", now), False
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
        new = add_suppression(conn, email, Reason.BOUNCED, source, now)
        return FeedbackOutcome(event, new, cur.rowcount == 1, streak)
