"""When each issue is due to go out (`mailer schedule`) and how far its send got."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.state.store import Store, from_text, guarded, now_text, to_text
from mailer.states import ScheduleState


@dataclass(frozen=True)
class Schedule:
    """When an issue is due to go out and how far it got."""

    issue: str
    send_at: datetime
    state: ScheduleState
    created_at: datetime


def _schedule(row: tuple[Any, ...]) -> Schedule:
    """Build a Schedule from an (issue, send_at, state, created_at) row."""
    issue, send_at, state, created_at = row
    return Schedule(issue, from_text(send_at), ScheduleState(state), from_text(created_at))


class ScheduleTable(Store):
    """The schedules table: one row per issue."""

    @guarded
    def set_schedule(
        self, issue: str, send_at: datetime, state: ScheduleState = ScheduleState.SCHEDULED
    ) -> None:
        """Schedule an issue, replacing any earlier schedule for it and its state."""
        due = to_text(send_at)
        now = now_text()
        with self._lock:
            self._db.execute(
                "INSERT INTO schedules (issue, send_at, state, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (issue) DO UPDATE SET send_at = excluded.send_at,"
                " state = excluded.state, created_at = excluded.created_at",
                (issue, due, ScheduleState(state).value, now),
            )

    @guarded
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

    @guarded
    def set_schedule_state(self, issue: str, state: ScheduleState) -> None:
        """Move a schedule to another state; KeyError if the issue has none."""
        state = ScheduleState(state)
        with self._lock:
            cur = self._db.execute(
                "UPDATE schedules SET state = ? WHERE issue = ?", (state.value, issue)
            )
        if cur.rowcount != 1:
            raise KeyError(f"no schedule for issue {issue!r}")

    @guarded
    def schedules(self) -> list[Schedule]:
        """Return every schedule, soonest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT issue, send_at, state, created_at FROM schedules ORDER BY send_at, issue"
            ).fetchall()
        return [_schedule(row) for row in rows]

    @guarded
    def schedule(self, issue: str) -> Schedule | None:
        """Return one issue's schedule, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT issue, send_at, state, created_at FROM schedules WHERE issue = ?",
                (issue,),
            ).fetchone()
        return _schedule(row) if row else None
