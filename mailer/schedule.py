"""Which issues are scheduled and which are due, and every change of a schedule's state.

A schedule comes from `send_at` in an issue's front matter or from `mailer schedule`
(stored in the ledger, and winning over the front matter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailer.compose import load
from mailer.compose.issue import slug_of
from mailer.config import Settings
from mailer.errors import InputError
from mailer.state.schedules import Schedule
from mailer.states import ScheduleState, ScheduleStatus

FRONT_MATTER = "front matter"
COMMAND = "mailer schedule"


class Schedules(Protocol):
    """The ledger as the schedule reads and moves it: one row per scheduled issue."""

    def schedules(self) -> list[Schedule]: ...
    def schedule(self, issue: str) -> Schedule | None: ...
    def set_schedule(
        self, issue: str, send_at: datetime, state: ScheduleState = ScheduleState.SCHEDULED
    ) -> None: ...
    def cancel_schedule(self, issue: str) -> bool: ...
    def set_schedule_state(self, issue: str, state: ScheduleState) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One scheduled issue and where its time came from."""

    issue: str
    send_at: datetime  # aware UTC
    state: ScheduleState
    source: str  # COMMAND or FRONT_MATTER

    def status(self, now: datetime, max_late: timedelta) -> ScheduleStatus:
        """What cron should do about it at `now`."""
        if self.state == ScheduleState.SENT:
            return ScheduleStatus.SENT
        if self.state == ScheduleState.CANCELLED:
            return ScheduleStatus.CANCELLED
        if self.send_at > now:
            return ScheduleStatus.FUTURE
        if self.state == ScheduleState.SENDING:
            return ScheduleStatus.SENDING  # started already: finishing it is never stale
        return ScheduleStatus.STALE if now - self.send_at > max_late else ScheduleStatus.DUE


def entries(settings: Settings, ledger: Schedules | None) -> tuple[list[Entry], list[str]]:
    """Every scheduled issue, ordered by time (`mailer schedule` wins over front matter),
    and the problems with send_at keys that could not be read."""
    found: dict[str, Entry] = {}
    problems: list[str] = []
    for path in load.files(settings.root):
        try:
            send_at = load.read(settings, path).send_at
        except InputError as exc:
            # A draft that does not build yet is not cron's business; a bad send_at is.
            if "send_at" in exc.message:
                problems.append(exc.message)
            continue
        if send_at is not None:
            slug = slug_of(path)
            found[slug] = Entry(slug, send_at, ScheduleState.SCHEDULED, FRONT_MATTER)
    if ledger is not None:
        for s in ledger.schedules():
            source = COMMAND
            if s.issue in found and found[s.issue].send_at == s.send_at:
                source = FRONT_MATTER
            found[s.issue] = Entry(s.issue, s.send_at, s.state, source)
    return sorted(found.values(), key=lambda e: e.send_at), problems


def due(
    entries: list[Entry], now: datetime, max_late: timedelta, *, force: bool
) -> tuple[list[Entry], list[Entry]]:
    """(to send now, too late to send without --force) at `now`."""
    send: list[Entry] = []
    stale: list[Entry] = []
    for entry in entries:
        status = entry.status(now, max_late)
        if status == ScheduleStatus.STALE and not force:
            stale.append(entry)
        elif status in (ScheduleStatus.DUE, ScheduleStatus.STALE, ScheduleStatus.SENDING):
            send.append(entry)
    return send, stale


def set_time(ledger: Schedules, slug: str, when: datetime) -> None:
    """Schedule `slug` for `when`; an issue already sending or sent is refused."""
    row = ledger.schedule(slug)
    if row is not None and row.state in (ScheduleState.SENDING, ScheduleState.SENT):
        raise InputError(f"{slug} is already {row.state}; it will not be sent twice")
    ledger.set_schedule(slug, when)


def cancel(settings: Settings, ledger: Schedules, slug: str) -> str:
    """Cancel `slug`'s schedule; returns where it came from (COMMAND or FRONT_MATTER)."""
    if ledger.cancel_schedule(slug):
        return COMMAND
    row = ledger.schedule(slug)
    if row is not None:
        raise InputError(f"{slug} is {row.state}; only a schedule not yet started can be cancelled")
    listed, _ = entries(settings, ledger)
    entry = next((e for e in listed if e.issue == slug), None)
    if entry is None:
        raise InputError(f"{slug} is not scheduled (or is already sending)")
    # A cancelled row in the ledger makes the front matter's send_at be ignored from now on.
    ledger.set_schedule(slug, entry.send_at, ScheduleState.CANCELLED)
    return FRONT_MATTER


def record_run(ledger: Schedules, entry: Entry, *, finished: bool, started: bool) -> None:
    """After cron's send of `entry`: "sent" when nobody is left, "sending" once a copy went
    out (finishing it is then never stale); a run that sent nothing leaves it as it was."""
    if not (finished or started):
        return
    if ledger.schedule(entry.issue) is None:
        ledger.set_schedule(entry.issue, entry.send_at)
    ledger.set_schedule_state(
        entry.issue, ScheduleState.SENT if finished else ScheduleState.SENDING
    )
