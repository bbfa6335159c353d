"""Who is owed a copy of one issue: the ledger's history, read once, asked per subscriber.

The one place that decides it, for the send, its plan, `status` and picking the next issue.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .ledger import Ledger
from .states import DeliveryState, Skip
from .subscribers import Subscriber
from .when import now as current_time


def backoff(retry_delay: float, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th deferral: retry_delay, doubling."""
    return retry_delay * 2.0 ** max(0, attempts - 1)


@dataclass(frozen=True)
class Audience:
    """A snapshot of one issue's history; `skip(subscriber)` says why it gets no copy, if so."""

    issue: str
    done: frozenset[str] = frozenset()  # sent, or failed for good (unless retry_failed)
    deferred: Mapping[str, tuple[int, datetime]] = field(default_factory=dict)
    suppressed: frozenset[str] = frozenset()
    now: datetime = field(default_factory=current_time)
    retry_delay: float = 30.0
    max_attempts: int = 5

    @classmethod
    def of(
        cls,
        ledger: Ledger | None,
        issue: str,
        *,
        retry_failed: bool = False,
        retry_delay: float = 30.0,
        max_attempts: int = 5,
        now: datetime | None = None,
    ) -> Audience:
        """Read the history of `issue` (nobody has had it when there is no ledger yet)."""
        done: set[str] = set()
        deferred: dict[str, tuple[int, datetime]] = {}
        suppressed: frozenset[str] = frozenset()
        if ledger is not None:
            suppressed = frozenset(ledger.suppressed_set())
            for d in ledger.deliveries(issue):
                if d.state == DeliveryState.SENT or (
                    d.state == DeliveryState.FAILED and not retry_failed
                ):
                    done.add(d.email)
                elif d.state == DeliveryState.DEFERRED:
                    deferred[d.email] = (d.attempts, d.updated_at)
        return cls(
            issue,
            frozenset(done),
            deferred,
            suppressed,
            now or current_time(),
            retry_delay,
            max_attempts,
        )

    def skip(self, subscriber: Subscriber) -> Skip | None:
        """None if this subscriber is owed a copy now; else why not."""
        key = subscriber.email.lower()
        if key in self.suppressed:
            return Skip.SUPPRESSED
        if key in self.done:
            return Skip.ALREADY_DONE
        if key in self.deferred:
            # Each run gives a deferred reader max_attempts more tries, once the backoff
            # (which stops growing at max_attempts) has passed: deferred is never lost.
            attempts, last = self.deferred[key]
            wait = backoff(self.retry_delay, min(attempts, self.max_attempts))
            if (self.now - last).total_seconds() < wait:
                return Skip.NOT_DUE
        return None

    def owed(self, subscribers: Iterable[Subscriber]) -> Iterator[Subscriber]:
        """The subscribers owed a copy now, in list order."""
        return (s for s in subscribers if self.skip(s) is None)
