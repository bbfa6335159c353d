"""How fast and how hard a send tries (SendOptions), and how long it would take (estimate)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mailer.config import Settings
from mailer.deliver.audience import backoff


@dataclass(frozen=True)
class SendOptions:
    """How fast and how hard to try."""

    rate: float = 10.0  # messages per second over all connections (inf: no limit)
    batch_size: int = 100  # messages per connection before QUIT and a fresh one
    pause: float = 0.0  # seconds between batches on a connection
    connections: int = 1
    max_attempts: int = 5  # tries per recipient before it stays deferred
    retry_delay: float = 30.0  # first backoff after a 4xx; doubles each try
    retry_failed: bool = False  # send again to recipients marked failed
    throttle_streak: int = 3  # this many throttling replies in a row halve the rate
    retry_window: float = 120.0  # in-run retries only this long after the last fresh reader;
    # also the longest a run goes on with nothing accepted while fresh readers remain
    circuit_breaker: int = 5  # timeouts or drops in a row, across readers, that stop the run

    @classmethod
    def from_settings(cls, settings: Settings, *, retry_failed: bool = False) -> SendOptions:
        return cls(
            rate=settings.rate,
            batch_size=settings.batch_size,
            pause=settings.pause,
            connections=settings.connections,
            max_attempts=settings.max_attempts,
            retry_delay=settings.retry_delay,
            retry_failed=retry_failed,
            retry_window=settings.retry_window.total_seconds(),
            circuit_breaker=settings.circuit_breaker,
        )

    def unpaced(self) -> SendOptions:
        """The same run with no waiting: for a dry run or a single test copy."""
        return dataclasses.replace(self, rate=float("inf"), pause=0.0)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th deferral."""
        return backoff(self.retry_delay, attempts)


def estimate(recipients: int, options: SendOptions) -> float:
    """Seconds a real send to `recipients` would take at the chosen rate, batches and pauses."""
    if not recipients:
        return 0.0
    pace = 0.0 if options.rate == float("inf") else recipients / options.rate
    batches_per_connection = -(-recipients // (options.batch_size * options.connections))
    return pace + max(0, batches_per_connection - 1) * options.pause
