"""Who is owed a copy of one issue: the ledger's history, read once, asked per subscriber.

The one place that decides it, for the send, its plan, `status` and picking the next issue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mailer.state.deliveries import Delivery
from mailer.state.reader_rows import Forgotten
from mailer.state.subscribers import Subscriber
from mailer.states import DeliveryState, Skip
from mailer.when import now as current_time

MAX_BACKOFF = 86400.0  # as Postfix's maximal_backoff_time: a deferred reader is tried daily

_ACCEPTED = (DeliveryState.SENT, DeliveryState.BOUNCED)


class History(Protocol):
    """The ledger as an audience reads it: one issue's rows and the suppression list."""

    def suppressed_set(self) -> set[str]: ...
    def deliveries(self, issue: str) -> Iterable[Delivery]: ...


class Watched(Protocol):
    """The ledger as a running send watches it (LedgerWatch)."""

    def check_identity(self) -> None: ...
    def data_version(self) -> int: ...
    def suppressed_set(self) -> set[str]: ...


def backoff(retry_delay: float, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th deferral: retry_delay, doubling, at most a day."""
    # The exponent stops at 64 (2.0 ** 1024 overflows): past it any retry_delay is capped.
    return min(retry_delay * 2.0 ** min(max(0, attempts - 1), 64), MAX_BACKOFF)


@dataclass(frozen=True)
class Audience:
    """A snapshot of one issue's history; `skip(subscriber)` says why it gets no copy, if so."""

    issue: str
    done: frozenset[str] = frozenset()  # accepted, or failed for good (unless retry_failed)
    # deferred reader -> (attempts, last try, next try time if stored)
    deferred: Mapping[str, tuple[int, datetime, datetime | None]] = field(default_factory=dict)
    suppressed: frozenset[str] = frozenset()
    now: datetime = field(default_factory=current_time)
    retry_delay: float = 30.0
    max_attempts: int = 5
    # failed for good (in `done` too, unless retry_failed) -> attempts
    failed: Mapping[str, int] = field(default_factory=dict)
    # Addresses erased on request (`subscribers forget`): only their keyed hashes are left.
    forgotten: Forgotten = field(default_factory=lambda: Forgotten("", ()))

    @classmethod
    def of(
        cls,
        ledger: History | None,
        issue: str,
        *,
        retry_failed: bool = False,
        retry_delay: float = 30.0,
        max_attempts: int = 5,
        now: datetime | None = None,
        secret: str = "",
    ) -> Audience:
        """Read the history of `issue` (nobody has had it when there is no ledger yet).

        `secret` keys the hashes forgotten addresses are suppressed by (MAILER_SECRET).
        """
        rows: Iterable[Delivery] = ()
        suppressed: Iterable[str] = ()
        if ledger is not None:
            suppressed = ledger.suppressed_set()
            rows = ledger.deliveries(issue)
        return cls.of_rows(
            issue,
            rows,
            suppressed,
            retry_failed=retry_failed,
            retry_delay=retry_delay,
            max_attempts=max_attempts,
            now=now,
            secret=secret,
        )

    @classmethod
    def of_rows(
        cls,
        issue: str,
        rows: Iterable[Delivery],
        suppressed: Iterable[str],
        *,
        retry_failed: bool = False,
        retry_delay: float = 30.0,
        max_attempts: int = 5,
        now: datetime | None = None,
        secret: str = "",
    ) -> Audience:
        """The audience of `issue` from rows a caller has read already (`mailer status`)."""
        done: set[str] = set()
        failed: dict[str, int] = {}
        deferred: dict[str, tuple[int, datetime, datetime | None]] = {}
        for d in rows:
            # A bounced copy was accepted first: never owed again, suppressed or not.
            if d.state in _ACCEPTED:
                done.add(d.email)
            elif d.state == DeliveryState.FAILED:
                failed[d.email] = d.attempts
                if not retry_failed:
                    done.add(d.email)
            elif d.state == DeliveryState.DEFERRED:
                deferred[d.email] = (d.attempts, d.updated_at, d.next_try_at)
        suppressed = frozenset(suppressed)
        return cls(
            issue,
            frozenset(done),
            deferred,
            suppressed,
            now or current_time(),
            retry_delay,
            max_attempts,
            failed,
            Forgotten(secret, suppressed),
        )

    def skip(self, subscriber: Subscriber) -> Skip | None:
        """None if this subscriber is owed a copy now; else why not."""
        key = subscriber.email.lower()
        if key in self.suppressed or key in self.forgotten:
            return Skip.SUPPRESSED
        if key in self.done:
            return Skip.FAILED_EARLIER if key in self.failed else Skip.ALREADY_DONE
        if key in self.deferred:
            # Its stored next try time (Postfix's queue model); a ledger from before those
            # were stored waits out the backoff, which stops growing at max_attempts.
            attempts, last, next_try = self.deferred[key]
            if next_try is not None:
                if self.now < next_try:
                    return Skip.NOT_DUE
                return None
            wait = backoff(self.retry_delay, min(attempts, self.max_attempts))
            if (self.now - last).total_seconds() < wait:
                return Skip.NOT_DUE
        return None

    def pending(self, subscriber: Subscriber) -> bool:
        """Owed a copy and never tried: `mailer status`'s pending (deferred ones are its own)."""
        return self.skip(subscriber) is None and subscriber.email.lower() not in self.deferred

    def attempts(self, email: str) -> int:
        """Tries the ledger held for this reader when it was read (0: never tried)."""
        key = email.lower()
        if key in self.deferred:
            return self.deferred[key][0]
        return self.failed.get(key, 0)


class LedgerWatch:
    """Keeps a running send true to the ledger: suppressions recorded by any process (the
    web endpoint, `mailer unsubscribe`, another host) count within `interval` seconds, and a
    ledger deleted or replaced under the run stops it before the next message (LedgerGone).

    One PRAGMA data_version per interval, not a query per message: the suppression list is
    read again only when another connection has committed something.
    """

    def __init__(
        self,
        ledger: Watched,
        suppressed: frozenset[str],
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        secret: str = "",
    ) -> None:
        self.ledger = ledger
        self.interval = interval
        self.clock = clock
        self.secret = secret
        self._suppressed = suppressed
        self._forgotten = Forgotten(secret, suppressed)
        self._version = ledger.data_version()
        self._due = clock() + interval
        self._lock = threading.Lock()

    def suppressed(self, email: str) -> bool:
        """Is this address suppressed now? Raises LedgerGone if the ledger went away."""
        self.ledger.check_identity()  # one stat(): cheap enough for every message
        now = self.clock()
        if now >= self._due:
            with self._lock:
                if now >= self._due:
                    version = self.ledger.data_version()
                    if version != self._version:
                        self._version = version
                        self._suppressed = frozenset(self.ledger.suppressed_set())
                        self._forgotten = Forgotten(self.secret, self._suppressed)
                    self._due = self.clock() + self.interval
        return email.lower() in self._suppressed or email in self._forgotten
