"""Which issues are scheduled and which are due: front matter `send_at`, `mailer schedule`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from . import issue as issue_mod
from .config import Settings, parse_duration
from .errors import InputError
from .ledger import Ledger

FUTURE, DUE, STALE, SENDING, SENT, CANCELLED = (
    "future",
    "due",
    "stale",
    "sending",
    "sent",
    "cancelled",
)


@dataclass(frozen=True)
class Entry:
    """One scheduled issue and where its time came from."""

    issue: str
    send_at: datetime  # aware UTC
    state: str  # the ledger's: scheduled | sending | sent | cancelled
    source: str  # "mailer schedule" or "front matter"

    def status(self, now: datetime, max_late: timedelta) -> str:
        """future, due, stale (too late to send without --force), sending, sent or cancelled."""
        if self.state in ("sent", "cancelled"):
            return SENT if self.state == "sent" else CANCELLED
        if self.send_at > now:
            return FUTURE
        if self.state == "sending":
            return SENDING  # started already: finishing it is never stale
        return STALE if now - self.send_at > max_late else DUE


def max_late(settings: Settings) -> timedelta:
    return timedelta(seconds=parse_duration(settings.max_late))


def entries(settings: Settings, ledger: Ledger | None) -> tuple[list[Entry], list[str]]:
    """Every scheduled issue, ordered by time (`mailer schedule` wins over front matter),
    and the problems with send_at keys that could not be read."""
    found: dict[str, Entry] = {}
    problems: list[str] = []
    for path in sorted((settings.root / "issues").glob("*.md")):
        try:
            send_at = issue_mod.read(path, default_lang=settings.lang).send_at
        except InputError as exc:
            # A draft that does not build yet is not cron's business; a bad send_at is.
            if "send_at" in exc.message:
                problems.append(exc.message)
            continue
        if send_at is not None:
            found[path.stem] = Entry(path.stem, send_at, "scheduled", "front matter")
    if ledger is not None:
        for s in ledger.schedules():
            source = "mailer schedule"
            if s.issue in found and found[s.issue].send_at == s.send_at:
                source = "front matter"
            found[s.issue] = Entry(s.issue, s.send_at, s.state, source)
    return sorted(found.values(), key=lambda e: e.send_at), problems
