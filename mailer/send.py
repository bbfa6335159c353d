"""The send loop: recipients -> rate limit -> transport -> recorder. Never prints.

A Sender knows nothing of dry runs or test copies: those are a transport (DryRunTransport,
Outbox) and a recorder (NullRecorder, the ledger) handed to the same loop.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .audience import Audience, backoff
from .config import Settings
from .errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, MailerError
from .message import Composer
from .ratelimit import RateLimiter
from .render import Email
from .states import DeliveryState, Skip
from .subscribers import Subscriber
from .transports import Result, Transport, TransportFactory

KEEP_FAILURES = 50  # replies kept in the summary; the ledger keeps them all
FREE_TRIES_FACTOR = 3  # even a throttling server gets at most this many times max_attempts
SENT, DEFERRED, FAILED = DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED


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
        )

    def unpaced(self) -> SendOptions:
        """The same run with no waiting: for a dry run or a single test copy."""
        return dataclasses.replace(self, rate=float("inf"), pause=0.0)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th deferral."""
        return backoff(self.retry_delay, attempts)


class Recorder(Protocol):
    """Where each outcome is written as it happens: the ledger, or nowhere."""

    def record(self, issue: str, email: str, state: DeliveryState, reply: str = "") -> None: ...


class NullRecorder:
    """Records nothing (a dry run, a test copy); keeps the last reply for each address."""

    def __init__(self) -> None:
        self.replies: dict[str, tuple[DeliveryState, str]] = {}

    def record(self, issue: str, email: str, state: DeliveryState, reply: str = "") -> None:
        self.replies[email] = (state, reply)


@dataclass(frozen=True)
class Summary:
    """What a send did, for the user and for cron's exit code."""

    issue: str
    dry_run: bool = False
    rows: int = 0  # subscriber rows read
    sent: int = 0
    deferred: int = 0  # still deferred at the end (will be retried by a later run)
    failed: int = 0
    already_done: int = 0  # sent (or failed) in an earlier run
    suppressed: int = 0
    not_due: int = 0  # deferred earlier, backoff not over yet
    invalid: int = 0
    skipped: int = 0  # unsubscribed / duplicate rows in the list
    retries: int = 0
    slowdowns: int = 0
    interrupted: bool = False
    error: str = ""  # why the run stopped early (server gone, login refused...)
    error_code: int = EXIT_TEMPFAIL
    elapsed: float = 0.0
    failures: tuple[tuple[str, str], ...] = ()  # (address, server reply)

    @property
    def attempted(self) -> int:
        return self.sent + self.deferred + self.failed

    @property
    def exit_code(self) -> int:
        if self.error:
            return self.error_code
        if self.dry_run:
            return EXIT_OK
        if self.failed:
            return EXIT_FAILED
        if self.deferred or self.interrupted or self.not_due:
            return EXIT_TEMPFAIL
        return EXIT_OK


@dataclass
class _Tally:
    """The counters a run keeps while it goes; frozen into a Summary at the end."""

    rows: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skips: dict[Skip, int] = field(default_factory=lambda: dict.fromkeys(Skip, 0))
    retries: int = 0
    slowdowns: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(self.skips.values())


@dataclass(frozen=True)
class Progress:
    """Counters after each message; `total` is the number of rows to go through."""

    done: int  # rows settled: sent, failed, given up for this run, or skipped
    total: int
    sent: int
    deferred: int
    failed: int


def estimate(recipients: int, options: SendOptions) -> float:
    """Seconds a real send to `recipients` would take at the chosen rate, batches and pauses."""
    if not recipients:
        return 0.0
    pace = 0.0 if options.rate == float("inf") else recipients / options.rate
    batches_per_connection = -(-recipients // (options.batch_size * options.connections))
    return pace + max(0, batches_per_connection - 1) * options.pause


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    subscriber: Subscriber = field(compare=False)
    attempts: int = field(compare=False)


class _Queue:
    """Recipients for the worker threads: due retries first, then the next from the list.

    Workers pull from the list themselves (under the lock), so there is no producer thread
    to hand items over: on a GIL-bound send every hand-off costs time.
    """

    def __init__(self, source: Iterator[tuple[Subscriber, int]]) -> None:
        self.cond = threading.Condition()
        self.source = source
        self.retries: list[_Retry] = []
        self.producing = True
        self.in_flight = 0
        self.stopped = False
        self._seq = itertools.count()
        self._peeked: tuple[Subscriber, int] | None = None

    def _next_fresh(self) -> tuple[Subscriber, int] | None:
        """The next recipient from the list, looked at but not taken (call under the lock)."""
        if self._peeked is None and self.producing:
            self._peeked = next(self.source, None)
            self.producing = self._peeked is not None
        return self._peeked

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def take(self) -> tuple[Subscriber, int] | None:
        """The next recipient and its attempts so far, or None when everything is settled."""
        with self.cond:
            while not self.stopped:
                now = time.monotonic()
                if self.retries and self.retries[0].due <= now:
                    item = heapq.heappop(self.retries)
                    self.in_flight += 1
                    return item.subscriber, item.attempts
                fresh = self._next_fresh()
                if fresh is not None:
                    self.in_flight += 1
                    self._peeked = None
                    return fresh
                if not self.in_flight and not self.retries:
                    self.cond.notify_all()
                    return None
                wait = self.retries[0].due - now if self.retries else 0.5
                self.cond.wait(min(max(wait, 0.001), 0.5))
            return None

    def done(self, retry: tuple[Subscriber, int, float] | None = None) -> None:
        with self.cond:
            self.in_flight -= 1
            if retry is not None:
                subscriber, attempts, delay = retry
                heapq.heappush(
                    self.retries,
                    _Retry(time.monotonic() + delay, next(self._seq), subscriber, attempts),
                )
            self.cond.notify_all()

    def has_work(self) -> bool:
        """Anything left to send, now or later."""
        with self.cond:
            return bool(self.retries or self._next_fresh()) and not self.stopped

    def leftover(self) -> Iterator[Subscriber]:
        """Retries still waiting when the run ends."""
        return (r.subscriber for r in self.retries)


class Sender:
    """Sends one Email to a list through a transport, recording every outcome as it happens."""

    def __init__(
        self,
        email: Email,
        composer: Composer,
        transports: TransportFactory,
        recorder: Recorder | None,
        options: SendOptions,
        *,
        audience: Audience | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.issue = email.issue.slug
        self.composer = composer
        self.transports = transports
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self.options = options
        self.audience = audience if audience is not None else Audience(self.issue)
        self.sleep = sleep
        self.limiter = RateLimiter(options.rate, clock=clock, sleep=sleep)
        self._tally = _Tally()
        self._lock = threading.Lock()
        self._last_throttled: str | None = None  # reader of the last reply, if it was a throttle
        self._throttle_streak: set[str] = set()  # readers throttled in a row
        self._tries: dict[str, int] = {}  # deferrals per reader in this run
        self._errors: list[MailerError] = []
        self._total = 0
        self._on_progress: Callable[[Progress], None] | None = None

    # -- choosing who gets a copy --------------------------------------------------------

    def _recipients(self, subscribers: Iterable[Subscriber]) -> Iterator[tuple[Subscriber, int]]:
        """Subscribers still owed this issue, with the attempts this run has spent on each."""
        tally = self._tally
        for subscriber in subscribers:
            tally.rows += 1
            skip = self.audience.skip(subscriber)
            if skip is None:
                yield subscriber, 0
            else:
                tally.skips[skip] += 1

    # -- the loop ------------------------------------------------------------------------

    def run(
        self,
        subscribers: Iterable[Subscriber],
        total: int = 0,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Summary:
        """Send to everyone owed a copy; returns the summary (also on Ctrl-C)."""
        started = time.monotonic()
        self._total = total
        self._on_progress = on_progress
        queue = _Queue(self._recipients(subscribers))
        if not queue.has_work():  # nobody is owed a copy: no connection, nothing to say
            return self._summary(started, queue, interrupted=False)
        first = self.transports()
        first.open()  # a wrong password or a dead server stops us here, before anyone is marked
        workers = [
            threading.Thread(
                target=self._work,
                args=(queue, first if i == 0 else None),
                daemon=True,
                name=f"send-{i}",
            )
            for i in range(self.options.connections)
        ]
        for worker in workers:
            worker.start()
        interrupted = False
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.2)
        except KeyboardInterrupt:
            # Stop after the messages in flight; the ledger already holds everything sent.
            interrupted = True
            queue.stop()
            for worker in workers:
                worker.join()
        return self._summary(started, queue, interrupted=interrupted)

    def _summary(self, started: float, queue: _Queue, *, interrupted: bool) -> Summary:
        t = self._tally
        error, code = "", EXIT_TEMPFAIL
        if self._errors and not interrupted:
            error, code = self._errors[0].format_message(), self._errors[0].exit_code
        return Summary(
            self.issue,
            rows=t.rows,
            sent=t.sent,
            deferred=t.deferred + sum(1 for _ in queue.leftover()),
            failed=t.failed,
            already_done=t.skips[Skip.ALREADY_DONE],
            suppressed=t.skips[Skip.SUPPRESSED],
            not_due=t.skips[Skip.NOT_DUE],
            retries=t.retries,
            slowdowns=t.slowdowns,
            interrupted=interrupted,
            error=error,
            error_code=code,
            elapsed=time.monotonic() - started,
            failures=tuple(t.failures),
        )

    def _work(self, queue: _Queue, transport: Transport | None) -> None:
        try:
            self._work_loop(queue, transport)
        except Exception as exc:
            # A worker must never die silently, nor print a traceback: the run stops with
            # the error as its summary, and the ledger still holds everything sent so far.
            self._errors.append(MailerError(f"sending stopped by an unexpected error: {exc!r}"))
            queue.stop()

    def _work_loop(self, queue: _Queue, transport: Transport | None) -> None:
        in_batch = 0
        open_failures = 0
        try:
            while (item := queue.take()) is not None:
                subscriber, attempts = item
                try:
                    if transport is None:
                        transport = self.transports()
                        transport.open()
                        open_failures = 0
                except MailerError as exc:
                    transport = None
                    open_failures += 1
                    if open_failures >= 3:
                        self._stop(queue, exc, subscriber, attempts)
                        return
                    queue.done((subscriber, attempts, self.options.backoff(open_failures)))
                    continue
                try:
                    message = self.composer.compose(subscriber)
                except (ValueError, UnicodeError) as exc:
                    # One reader whose message cannot be built must not stop the others.
                    failed = Result(FAILED, 0, f"cannot build a message for this address: {exc}")
                    queue.done(self._settle(subscriber, attempts, failed))
                    continue
                self.limiter.acquire()
                try:
                    result = transport.send(message)
                except MailerError as exc:  # the server refuses us, not this reader: stop
                    transport = None
                    self._stop(queue, exc, subscriber, attempts)
                    return
                queue.done(self._settle(subscriber, attempts, result))
                if result.dropped:
                    transport, in_batch = None, 0
                    continue
                in_batch += 1
                if in_batch >= self.options.batch_size:
                    transport.close()
                    transport, in_batch = None, 0
                    if self.options.pause and queue.has_work():
                        self.sleep(self.options.pause)
        finally:
            if transport is not None:
                transport.close()

    def _stop(self, queue: _Queue, exc: MailerError, subscriber: Subscriber, attempts: int) -> None:
        """End the run for everyone: the item goes back unmarked, the error is reported."""
        self._errors.append(exc)
        queue.done((subscriber, attempts, 0))
        queue.stop()

    def _settle(
        self, subscriber: Subscriber, attempts: int, result: Result
    ) -> tuple[Subscriber, int, float] | None:
        """Record one outcome; returns the retry to schedule, if any."""
        s, opts = self._tally, self.options
        self.recorder.record(self.issue, subscriber.email, result.state, result.reply)
        retry = None
        with self._lock:
            if result.state == SENT:
                s.sent += 1
                self._last_throttled = None
                self._throttle_streak.clear()
            elif result.state == FAILED:
                s.failed += 1
                self._last_throttled = None
                self._throttle_streak.clear()
                if len(s.failures) < KEEP_FAILURES:
                    s.failures.append((subscriber.email, result.reply))
            else:
                spent = attempts + 1
                tries = self._tries[subscriber.email] = self._tries.get(subscriber.email, 0) + 1
                if result.throttled:
                    # Throttling is the server pacing us (several readers deferred in a row), not
                    # a problem with this reader: such tries are free, the rate goes down instead.
                    # One reader deferred again and again is just that reader (greylisting).
                    free = self._last_throttled not in (None, subscriber.email)
                    if free and tries < FREE_TRIES_FACTOR * opts.max_attempts:
                        spent = attempts
                    self._throttle_streak.add(subscriber.email)
                    if len(self._throttle_streak) >= opts.throttle_streak:
                        self.limiter.slow_down()
                        s.slowdowns += 1
                        self._throttle_streak.clear()
                    self._last_throttled = subscriber.email
                else:
                    self._last_throttled = None
                    self._throttle_streak.clear()
                if spent < opts.max_attempts:
                    s.retries += 1
                    retry = (subscriber, spent, opts.backoff(tries))
                else:
                    s.deferred += 1
                    if len(s.failures) < KEEP_FAILURES:
                        s.failures.append((subscriber.email, result.reply))
            if self._on_progress is not None:
                done = s.sent + s.failed + s.deferred + s.skipped
                self._on_progress(Progress(done, self._total, s.sent, s.deferred, s.failed))
        return retry
