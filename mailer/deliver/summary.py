"""What a send tells as it goes (Progress) and at the end (Summary), the tally behind both,
and where each outcome is recorded (Recorder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mailer.errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL
from mailer.states import DeliveryState, Skip

KEEP_FAILURES = 50  # replies kept in the summary; the ledger keeps them all


@dataclass(frozen=True)
class Progress:
    """Counters after each message; `total` is the number of rows to go through."""

    done: int  # rows settled: sent, failed, deferred (for now), or skipped
    total: int
    sent: int
    deferred: int  # readers whose last outcome in this run is a deferral, retried or not
    failed: int


@dataclass(frozen=True)
class Summary:
    """What a send did, for the user and for cron's exit code."""

    issue: str
    dry_run: bool = False
    rows: int = 0  # subscriber rows read
    sent: int = 0
    deferred: int = 0  # still deferred at the end (will be retried by a later run)
    failed: int = 0
    already_done: int = 0  # sent in an earlier run
    failed_earlier: int = 0  # failed for good in an earlier run (--retry-failed resends)
    suppressed: int = 0
    not_due: int = 0  # deferred earlier, backoff not over yet
    invalid: int = 0
    skipped: int = 0  # unsubscribed / duplicate rows in the list
    retries: int = 0
    slowdowns: int = 0
    interrupted: bool = False
    signal: str = ""  # the signal that stopped it: SIGINT, SIGTERM, SIGHUP
    uncertain: int = 0  # copies lost after the whole message went out: they may have arrived
    unrecorded: int = 0  # copies maybe at the server, no outcome recorded (a second signal)
    untried: int = 0  # readers owed a copy and never tried, when the server stalled the run
    lowest_rate: float = float("inf")  # how far a throttling server pushed the rate down
    end_rate: float = float("inf")  # the rate when the run ended
    reconciled: int = 0  # outcomes replayed from an earlier run's journal
    given_up: int = 0  # deferred longer than give_up_after: failed for good at this run's start
    error: str = ""  # why the run stopped early (server gone, login refused...)
    error_code: int = EXIT_TEMPFAIL
    elapsed: float = 0.0
    failures: tuple[tuple[str, str], ...] = ()  # (address, server reply)

    @property
    def attempted(self) -> int:
        return self.sent + self.deferred + self.failed

    @property
    def twice(self) -> int:
        """Copies that may arrive twice: no outcome recorded, or lost after the whole body."""
        return self.unrecorded + self.uncertain

    @property
    def exit_code(self) -> int:
        if self.error:
            return self.error_code
        if self.dry_run:
            return EXIT_OK
        if self.interrupted:
            return EXIT_TEMPFAIL
        if self.failed or self.given_up:
            return EXIT_FAILED
        if self.deferred or self.not_due:
            return EXIT_TEMPFAIL
        return EXIT_OK


@dataclass
class Tally:
    """The counters a run keeps while it goes; frozen into a Summary at the end."""

    rows: int = 0
    sent: int = 0
    failed: int = 0
    deferred_now: set[str] = field(default_factory=set)  # last outcome a deferral, as recorded
    skips: dict[Skip, int] = field(default_factory=lambda: dict.fromkeys(Skip, 0))
    retries: int = 0
    slowdowns: int = 0
    uncertain: int = 0
    drops: set[str] = field(default_factory=set)  # readers lost in a row (circuit breaker)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def deferred(self) -> int:
        return len(self.deferred_now)

    @property
    def skipped(self) -> int:
        return sum(self.skips.values())


class Recorder(Protocol):
    """Where each outcome is written as it happens: the ledger, or nowhere."""

    def record(
        self,
        issue: str,
        email: str,
        state: DeliveryState,
        reply: str = "",
        next_try_at: datetime | None = None,
    ) -> None: ...
