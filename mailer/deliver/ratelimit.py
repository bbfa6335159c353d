"""One token bucket shared by every connection: a steady pace over long runs, no drift.

A throttling server halves the rate (multiplicative decrease); each message it accepts
afterwards gives back a fiftieth of the chosen rate (additive increase), as Postfix's
concurrency feedback does for connections: the rate settles where the server keeps up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

FLOOR = 0.2  # messages per second a throttling server can push the rate down to
START = 10.0  # where an unlimited rate starts from once the server throttles it
RECOVERY = 50  # accepted messages that give back the whole chosen rate


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
        self.chosen = rate  # what the user asked for: the ceiling of every recovery
        self.lowest = rate  # how far a throttling server pushed it down in this run
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

    def slow_down(self, factor: float = 0.5, floor: float = FLOOR) -> float:
        """Lower the rate (a throttling server); returns the new rate."""
        with self._lock:
            if self.rate == float("inf"):
                self.rate = START
            self.rate = max(floor, self.rate * factor)
            self.lowest = min(self.lowest, self.rate)
            return self.rate

    def speed_up(self) -> float:
        """One message accepted: a step back towards the chosen rate; returns the rate."""
        if self.rate >= self.chosen:  # read without the lock: the common case costs nothing
            return self.rate
        with self._lock:
            step = (self.chosen if self.chosen != float("inf") else START) / RECOVERY
            self.rate = min(self.chosen, self.rate + step)
            return self.rate
