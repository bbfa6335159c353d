"""A run's work: fresh readers from the list, and retries, for the sending threads."""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mailer.state.subscribers import Subscriber


class Wait(enum.Enum):
    WAIT = "nothing to take yet"


WAIT = Wait.WAIT


class Later(enum.Enum):
    LATER = "nothing from the source now: ask again soon"


LATER = Later.LATER  # what a source yields when more may come (another sender's claims)
LATER_PAUSE = 0.2  # seconds before asking such a source again


@dataclass(order=True)
class Retry:
    due: float
    seq: int
    subscriber: Subscriber = field(compare=False)
    attempts: int = field(compare=False)


class WorkQueue:
    """Recipients for the worker threads: due retries first, then the next from the list.

    Workers pull from the list themselves (under the lock), so there is no producer thread
    to hand items over: on a GIL-bound send every hand-off costs time. Once the list is
    used up, a retry is taken only if it falls due within `window` seconds of the last
    fresh reader; the rest stay deferred for a later run, so every run ends.
    """

    def __init__(self, source: Iterator[tuple[Subscriber, int] | Later], window: float) -> None:
        self.cond = threading.Condition()
        self.source = source
        self.window = window
        self.retries: list[Retry] = []
        self.producing = True
        self.in_flight = 0
        self.stopped = False
        self.fresh_at = time.monotonic()
        self._seq = itertools.count()
        self._peeked: tuple[Subscriber, int] | None = None
        # Readers taken but never tried (they were behind a lost reply in a pipeline):
        # handed out again first, not counted as deferred if the run ends before.
        self.returned: list[tuple[Subscriber, int]] = []
        self._later_until = 0.0  # the source said LATER: not asked again before this

    def _next_fresh(self) -> tuple[Subscriber, int] | None:
        """The next recipient from the list, looked at but not taken (call under the lock).

        None when the list is used up, or (still `producing`) when the source said LATER:
        the lock is never held while a source waits for something.
        """
        if self._peeked is None and self.producing and time.monotonic() >= self._later_until:
            item = next(self.source, None)
            if item is LATER:
                self._later_until = time.monotonic() + LATER_PAUSE
                return None
            self._peeked = item
            self.producing = item is not None
        return self._peeked

    def _eligible(self) -> bool:
        """Is the soonest retry one this run will still make? (call under the lock)"""
        if not self.retries:
            return False
        return self.producing or self.retries[0].due <= self.fresh_at + self.window

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def take(
        self, *, fresh_first: bool = False, wait: bool = True
    ) -> tuple[Subscriber, int] | None | Wait:
        """The next recipient and its attempts so far, or None when this run is done.

        fresh_first: the server just lost a reader; try a new one before any retry, so that
        a dead server trips the circuit breaker on different readers, not on one reader's
        attempts. wait=False: return WAIT instead of waiting (a worker with replies owed
        reads them first: the run cannot end while they are in flight).
        """
        with self.cond:
            while not self.stopped:
                if self.returned:
                    return self.returned.pop()
                now = time.monotonic()
                if fresh_first and self._next_fresh() is not None:
                    pass  # taken just below
                elif self.retries and self.retries[0].due <= now and self._eligible():
                    item = heapq.heappop(self.retries)
                    self.in_flight += 1
                    return item.subscriber, item.attempts
                fresh = self._next_fresh()
                if fresh is not None:
                    self.in_flight += 1
                    self._peeked = None
                    self.fresh_at = now
                    return fresh
                eligible = self._eligible()
                if not self.in_flight and not eligible and not self.producing:
                    self.cond.notify_all()
                    return None
                if not wait:
                    return WAIT
                pause = self.retries[0].due - now if eligible else 0.5
                if self.producing:  # the source said LATER
                    pause = min(pause, self._later_until - now)
                self.cond.wait(min(max(pause, 0.001), 0.5))
            return None

    def give_back(self, item: tuple[Subscriber, int]) -> None:
        """A reader taken but never tried: the next take hands it out again, as it was."""
        with self.cond:
            if self.stopped:
                self.in_flight -= 1  # never handed out again; kept only to be counted
            self.returned.append(item)  # else still in flight: the run cannot end without it
            self.cond.notify_all()

    def done(self, retry: tuple[Subscriber, int, float] | None = None) -> None:
        with self.cond:
            self.in_flight -= 1
            if retry is not None:
                subscriber, attempts, delay = retry
                heapq.heappush(
                    self.retries,
                    Retry(time.monotonic() + delay, next(self._seq), subscriber, attempts),
                )
            self.cond.notify_all()

    def has_work(self) -> bool:
        """Anything left to send in this run, now or later."""
        with self.cond:
            fresh = self._next_fresh() is not None or self.producing
            return (fresh or self._eligible()) and not self.stopped

    def untried(self, never_tried: Callable[[Subscriber], bool]) -> int:
        """Readers never tried, once the run has stopped, among those given back, the one
        looked at and the rest of the list, read to its end (not for a shared outbox:
        reading that claims readers)."""
        with self.cond:
            left = [s for s, _ in self.returned]
            if self._peeked is not None:
                left.append(self._peeked[0])
            self.returned.clear()
            self._peeked = None
            count = sum(map(never_tried, left))
            while self.producing:
                item = next(self.source, None)
                self.producing = item is not None
                if item is not None and item is not LATER:
                    count += never_tried(item[0])
            return count
