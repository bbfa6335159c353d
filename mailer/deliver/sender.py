"""The send loop: recipients -> rate limit -> transport -> recorder. Never prints.

A Sender knows nothing of dry runs or test copies: those are a transport (DryRunTransport,
Outbox) and a recorder (NullRecorder, the ledger) handed to the same loop.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, Protocol

from mailer.compose.render import Email
from mailer.config import Settings
from mailer.deliver.audience import Audience, backoff
from mailer.deliver.claims import Claims
from mailer.deliver.message import Composer
from mailer.deliver.ratelimit import RateLimiter
from mailer.deliver.transports import Done, Pipeline, Result, Transport, TransportFactory, pipeline
from mailer.deliver.workqueue import WAIT, Later, WorkQueue
from mailer.errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, MailerError
from mailer.state.subscribers import Subscriber
from mailer.states import DeliveryState, Skip
from mailer.when import now as wall_now

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
    retry_window: float = 120.0  # in-run retries only this long after the last fresh reader
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


class NullRecorder:
    """Records nothing (a dry run, a test copy); keeps the last reply for each address."""

    def __init__(self) -> None:
        self.replies: dict[str, tuple[DeliveryState, str]] = {}

    def record(
        self,
        issue: str,
        email: str,
        state: DeliveryState,
        reply: str = "",
        next_try_at: datetime | None = None,
    ) -> None:
        self.replies[email] = (state, reply)


class Watch(Protocol):
    """Asked before each message: is this reader suppressed now? (audience.LedgerWatch)"""

    def suppressed(self, email: str) -> bool: ...


class ServerNotAnswering(MailerError):
    """Timeouts or dropped connections in a row, across readers: the circuit breaker."""

    exit_code = EXIT_TEMPFAIL


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
    signal: str = ""  # the signal that stopped it: SIGINT, SIGTERM, SIGHUP
    uncertain: int = 0  # copies lost after the whole message went out: they may have arrived
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
class _Tally:
    """The counters a run keeps while it goes; frozen into a Summary at the end."""

    rows: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skips: dict[Skip, int] = field(default_factory=lambda: dict.fromkeys(Skip, 0))
    retries: int = 0
    slowdowns: int = 0
    uncertain: int = 0
    drops: set[str] = field(default_factory=set)  # readers lost in a row (circuit breaker)
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


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Sender:
    """Sends one Email to a list through a transport, recording every outcome as it happens.

    SIGINT, SIGTERM and SIGHUP stop it gently: no new reader is taken, the replies already
    owed are awaited (each at most smtp_timeout) and recorded. A second signal stops at once,
    after the reply being recorded, if any, is recorded.
    """

    def __init__(
        self,
        email: Email,
        composer: Composer,
        transports: TransportFactory,
        recorder: Recorder | None,
        options: SendOptions,
        *,
        audience: Audience | None = None,
        watch: Watch | None = None,
        claims: Claims | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], datetime] = wall_now,
    ) -> None:
        self.issue = email.issue.slug
        self.composer = composer
        self.transports = transports
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self.options = options
        self.audience = audience if audience is not None else Audience(self.issue)
        self.watch = watch
        self.claims = claims  # a shared ledger: this run's share of the list (claims.py)
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.limiter = RateLimiter(options.rate, clock=clock, sleep=sleep)
        self._tally = _Tally()
        self._lock = threading.Lock()  # the tally, and each outcome's recording
        self._last_throttled: str | None = None  # reader of the last reply, if it was a throttle
        self._throttle_streak: set[str] = set()  # readers throttled in a row
        self._tries: dict[str, int] = {}  # deferrals per reader in this run
        self._errors: list[MailerError] = []
        self._total = 0
        self._on_progress: Callable[[Progress], None] | None = None
        self._queue: WorkQueue | None = None
        self._signal = ""
        self._finished = threading.Event()  # every worker has ended, or a second signal came
        self._live = 0

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
        """Send to everyone owed a copy; returns the summary (also after a signal)."""
        started = time.monotonic()
        self._total = total
        self._on_progress = on_progress
        fresh = self._recipients(subscribers)
        if self.claims is None:
            return self._run(started, fresh)
        t = self._tally
        self.claims.join(lambda: (t.sent, t.deferred, t.failed), self.limiter.share)
        try:
            return self._run(started, self.claims.stream(fresh))
        finally:
            self.claims.leave(finished=not (self._signal or self._errors))

    def _run(self, started: float, fresh: Iterator[tuple[Subscriber, int] | Later]) -> Summary:
        queue = self._queue = WorkQueue(fresh, self.options.retry_window)
        if not queue.has_work():  # nobody is owed a copy: no connection, nothing to say
            return self._summary(started, queue)
        first = self.transports()
        first.open()  # a wrong password or a dead server stops us here, before anyone is marked
        self._live = self.options.connections
        workers = [
            threading.Thread(
                target=self._work,
                args=(queue, first if i == 0 else None),
                daemon=True,  # only ever abandoned after a second signal, outcomes recorded
                name=f"send-{i}",
            )
            for i in range(self.options.connections)
        ]
        previous = self._catch_signals()
        try:
            for worker in workers:
                worker.start()
            self._finished.wait()
            if self._signal and any(w.is_alive() for w in workers):
                # A second signal: leave now, but never in the middle of recording an outcome.
                self._lock.acquire()
                return self._summary(started, queue, locked=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._summary(started, queue)

    def _catch_signals(self) -> dict[int, Any]:
        """Our handlers for SIGINT/SIGTERM/SIGHUP while sending (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._signal:
            self._signal = signal.Signals(signum).name
            if self._queue is not None:
                self._queue.stop()
        else:
            self._finished.set()

    def _summary(self, started: float, queue: WorkQueue, *, locked: bool = False) -> Summary:
        t = self._tally
        error, code = "", EXIT_TEMPFAIL
        if self._errors and not self._signal:
            error, code = self._errors[0].format_message(), self._errors[0].exit_code
        return Summary(
            self.issue,
            rows=t.rows,
            sent=t.sent,
            deferred=t.deferred + queue.leftover(),
            failed=t.failed,
            already_done=t.skips[Skip.ALREADY_DONE],
            suppressed=t.skips[Skip.SUPPRESSED],
            not_due=t.skips[Skip.NOT_DUE],
            retries=t.retries,
            slowdowns=t.slowdowns,
            interrupted=bool(self._signal),
            signal=self._signal,
            uncertain=t.uncertain,
            error=error,
            error_code=code,
            elapsed=time.monotonic() - started,
            failures=tuple(t.failures),
        )

    def _work(self, queue: WorkQueue, transport: Transport | None) -> None:
        try:
            self._work_loop(queue, transport)
        except MailerError as exc:  # the ledger is gone or cannot record: stop everyone
            self._errors.append(exc)
            queue.stop()
        except Exception as exc:
            # A worker must never die silently, nor print a traceback: the run stops with
            # the error as its summary, and the ledger still holds everything sent so far.
            self._errors.append(MailerError(f"sending stopped by an unexpected error: {exc!r}"))
            queue.stop()
        finally:
            with queue.cond:
                self._live -= 1
                if not self._live:
                    self._finished.set()

    def _work_loop(self, queue: WorkQueue, transport: Transport | None) -> None:
        pipe = pipeline(transport) if transport is not None else None
        in_batch = 0
        open_failures = 0
        try:
            while True:
                item = queue.take(fresh_first=bool(self._tally.drops), wait=pipe is None)
                if item is WAIT:  # nothing to send yet: first the replies this connection owes
                    if pipe is not None and not self._flush(queue, pipe):
                        pipe, in_batch = None, 0
                    item = queue.take(fresh_first=bool(self._tally.drops))
                if item is None or item is WAIT:
                    break
                subscriber, attempts = item
                if self.watch is not None and self.watch.suppressed(subscriber.email):
                    self._skip_suppressed()
                    queue.done()
                    continue
                try:
                    if pipe is None:
                        pipe = pipeline(self.transports())
                        pipe.open()
                        open_failures = 0
                except MailerError as exc:
                    pipe = None
                    open_failures += 1
                    if open_failures >= 3:
                        self._stop(queue, exc)
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
                    alive = pipe.submit(message, self._outcome(queue, subscriber, attempts))
                except MailerError as exc:  # the server refuses us, not this reader: stop
                    pipe = None
                    self._stop(queue, exc)
                    return
                if not alive:
                    pipe, in_batch = None, 0
                    continue
                in_batch += 1
                if in_batch >= self.options.batch_size:
                    self._flush(queue, pipe)
                    pipe.close()
                    pipe, in_batch = None, 0
                    if self.options.pause and queue.has_work():
                        self.sleep(self.options.pause)
        finally:
            if pipe is not None:
                self._flush(queue, pipe)
                pipe.close()

    def _flush(self, queue: WorkQueue, pipe: Pipeline) -> bool:
        """Send what waits and read every reply owed; False when the connection went."""
        try:
            return pipe.flush()
        except MailerError as exc:
            self._errors.append(exc)
            queue.stop()
            return False

    def _outcome(self, queue: WorkQueue, subscriber: Subscriber, attempts: int) -> Done:
        """What to do with one reader's outcome when it comes: record it, or give it back."""

        def done(result: Result | None) -> None:
            if result is None:
                queue.give_back((subscriber, attempts))
            else:
                queue.done(self._settle(subscriber, attempts, result))

        return done

    def _stop(self, queue: WorkQueue, exc: MailerError) -> None:
        """End the run for everyone: the reader in hand stays unmarked, the error is reported."""
        self._errors.append(exc)
        queue.done()
        queue.stop()

    def _skip_suppressed(self) -> None:
        with self._lock:
            self._tally.skips[Skip.SUPPRESSED] += 1
            self._progress()

    def _progress(self) -> None:
        s = self._tally
        if self._on_progress is not None:
            done = s.sent + s.failed + s.deferred + s.skipped
            self._on_progress(Progress(done, self._total, s.sent, s.deferred, s.failed))

    def _settle(
        self, subscriber: Subscriber, attempts: int, result: Result
    ) -> tuple[Subscriber, int, float] | None:
        """Record one outcome; returns the retry to schedule, if any."""
        with self._lock:
            retry, next_try = self._count(subscriber, attempts, result)
            self.recorder.record(self.issue, subscriber.email, result.state, result.reply, next_try)
            self._progress()
        return retry

    def _count(
        self, subscriber: Subscriber, attempts: int, result: Result
    ) -> tuple[tuple[Subscriber, int, float] | None, datetime | None]:
        """Update the tally for one outcome (under the lock): (retry to schedule, next try)."""
        s, opts = self._tally, self.options
        s.uncertain += result.uncertain
        # Different readers in a row: one reader that always hangs is that reader's problem.
        if result.dropped:
            s.drops.add(subscriber.email)
        else:
            s.drops.clear()
        if len(s.drops) >= opts.circuit_breaker and self._queue is not None:
            self._errors.append(
                ServerNotAnswering(
                    f"the server is not answering: timeouts or dropped connections for"
                    f" {len(s.drops)} readers in a row (last: {result.reply}); stopped,"
                    " nobody else was tried",
                    hint="try again later: the ledger holds everything sent so far",
                )
            )
            self._queue.stop()
        if result.state == SENT:
            s.sent += 1
            self._last_throttled = None
            self._throttle_streak.clear()
            return None, None
        if result.state == FAILED:
            s.failed += 1
            self._last_throttled = None
            self._throttle_streak.clear()
            if len(s.failures) < KEEP_FAILURES:
                s.failures.append((subscriber.email, result.reply))
            return None, None
        spent = attempts + 1
        tries = self._tries[subscriber.email] = self._tries.get(subscriber.email, 0) + 1
        if result.throttled:
            # Throttling is the server pacing us (several readers deferred in a row), not a
            # problem with this reader: such tries are free, the rate goes down instead. One
            # reader deferred again and again is just that reader (greylisting). The retry
            # window still ends the run.
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
        delay = opts.backoff(tries)
        next_try = self.wall_clock() + timedelta(seconds=delay)
        if spent < opts.max_attempts and not (self._queue and self._queue.stopped):
            s.retries += 1
            return (subscriber, spent, delay), next_try
        s.deferred += 1
        if len(s.failures) < KEEP_FAILURES:
            s.failures.append((subscriber.email, result.reply))
        return None, next_try
