"""One token bucket shared by every connection: a steady pace over long runs, no drift."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Hands out send slots at `rate` per second (virtual scheduling: slots never drift)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()
        self.senders = (
            1  # processes sharing the rate (mailer/deliver/claims.py): each takes its part
        )

    @property
    def interval(self) -> float:
        return 0.0 if self.rate == float("inf") else self.senders / self.rate

    def share(self, senders: int) -> None:
        """Pace at rate / senders from now on: `senders` processes send this list."""
        with self._lock:
            self.senders = max(1, senders)

    def acquire(self) -> None:
        """Wait for the next slot."""
        if self.rate == float("inf"):
            return
        with self._lock:
            now = self.clock()
            # A pause longer than one slot does not earn a burst afterwards.
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)

    def slow_down(self, factor: float = 0.5, floor: float = 0.2) -> float:
        """Lower the rate (a throttling server); returns the new rate."""
        with self._lock:
            if self.rate == float("inf"):
                self.rate = 10.0
            self.rate = max(floor, self.rate * factor)
            return self.rate
