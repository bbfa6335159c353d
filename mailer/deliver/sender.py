"""The send loop: recipients -> rate limit -> transport -> recorder. Never prints.

A Sender knows nothing of dry runs or test copies: those are a transport (DryRunTransport,
Outbox) and a recorder (NullRecorder, the ledger) handed to the same loop.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, Protocol

from mailer.compose.render import Email
from mailer.deliver.audience import Audience
from mailer.deliver.claims import Claims
from mailer.deliver.message import Composer
from mailer.deliver.options import SendOptions
from mailer.deliver.ratelimit import RateLimiter
from mailer.deliver.summary import KEEP_FAILURES, Progress, Recorder, Summary, Tally
from mailer.deliver.transports import Done, Pipeline, Result, Transport, TransportFactory, pipeline
from mailer.deliver.workqueue import WAIT, Later, WorkQueue
from mailer.errors import EXIT_TEMPFAIL, MailerError
from mailer.state.subscribers import Subscriber
from mailer.states import DeliveryState, Skip
from mailer.values import format_duration
from mailer.when import now as wall_now

FREE_TRIES_FACTOR = 3  # even a throttling server gets at most this many times max_attempts
SENT, DEFERRED, FAILED = DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED


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


class ServerDefersEveryone(MailerError):
    """Nothing accepted for retry_window while fresh readers remain: the run stops."""

    exit_code = EXIT_TEMPFAIL


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Sender:
    """Sends one Email to a list through a transport, recording every outcome as it happens.

    SIGINT, SIGTERM and SIGHUP stop it gently: no new reader is taken, the replies already
    owed are awaited (each at most smtp_timeout) and recorded. A second signal stops at once,
    after the reply being recorded, if any, is recorded; the summary counts the copies that
    may be at the server with no outcome recorded (`unrecorded`): those may arrive twice.

    A server that defers everyone does not keep a run going: when nothing has been accepted
    (or failed for good) for retry_window while fresh readers remain, the run stops, leaving
    the untried readers for the next run.
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
        self.clock = clock
        self.limiter = RateLimiter(options.rate, clock=clock, sleep=sleep)
        self._tally = Tally()
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
        # Per connection (under the lock): messages handed to it whose outcome is not recorded
        # yet. Its replies come in order and only the oldest of them can have its body at the
        # server, so a second signal leaves one copy in doubt per connection owing any.
        self._owed = [0] * options.connections
        self._settled_at = 0.0  # when a reader last got a final answer (sent or failed)
        self._stalled: ServerDefersEveryone | None = None

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
            return self._run(started, self.claims.stream(fresh, self.audience.attempts))
        finally:
            self.claims.leave(finished=not (self._signal or self._errors))

    def _run(self, started: float, fresh: Iterator[tuple[Subscriber, int] | Later]) -> Summary:
        queue = self._queue = WorkQueue(fresh, self.options.retry_window)
        if not queue.has_work():  # nobody is owed a copy: no connection, nothing to say
            return self._summary(started, queue)
        first = self.transports()
        first.open()  # a wrong password or a dead server stops us here, before anyone is marked
        self._live = self.options.connections
        self._settled_at = self.clock()
        workers = [
            threading.Thread(
                target=self._work,
                args=(queue, first if i == 0 else None, i),
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
        untried = 0
        if self._stalled is not None and self._errors[0] is self._stalled and not locked:
            untried = self._untried(queue)
            self._errors[0] = ServerDefersEveryone(
                f"the server deferred every reader for"
                f" {format_duration(timedelta(seconds=self.options.retry_window))}; stopped;"
                f" {t.deferred} deferred, {untried} not tried; the next run continues"
            )
        error, code = "", EXIT_TEMPFAIL
        if self._errors and not self._signal:
            error, code = self._errors[0].format_message(), self._errors[0].exit_code
        return Summary(
            self.issue,
            rows=t.rows,
            sent=t.sent,
            deferred=t.deferred,
            failed=t.failed,
            already_done=t.skips[Skip.ALREADY_DONE],
            failed_earlier=t.skips[Skip.FAILED_EARLIER],
            suppressed=t.skips[Skip.SUPPRESSED],
            not_due=t.skips[Skip.NOT_DUE],
            retries=t.retries,
            slowdowns=t.slowdowns,
            interrupted=bool(self._signal),
            signal=self._signal,
            uncertain=t.uncertain,
            unrecorded=sum(1 for owed in self._owed if owed),
            untried=untried,
            lowest_rate=self.limiter.lowest,
            end_rate=self.limiter.rate,
            error=error,
            error_code=code,
            elapsed=time.monotonic() - started,
            failures=tuple(t.failures),
        )

    def _untried(self, queue: WorkQueue) -> int:
        """Readers owed a copy that this run never tried (they stay pending in the ledger)."""
        if self.claims is None:
            deferred, audience = self._tally.deferred_now, self.audience
            return queue.untried(
                lambda s: s.email not in deferred and not audience.attempts(s.email)
            )
        return self.claims.untried()

    def _work(self, queue: WorkQueue, transport: Transport | None, worker: int) -> None:
        try:
            self._work_loop(queue, transport, worker)
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

    def _work_loop(self, queue: WorkQueue, transport: Transport | None, worker: int) -> None:
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
                with self._lock:  # a second signal holds it: nothing more is handed over
                    if queue.stopped:  # stopped while waiting for the slot: never tried
                        queue.give_back((subscriber, attempts))
                        continue
                    self._owed[worker] += 1
                try:
                    done = self._outcome(queue, subscriber, attempts, worker)
                    alive = pipe.submit(message, done)
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

    def _outcome(
        self, queue: WorkQueue, subscriber: Subscriber, attempts: int, worker: int
    ) -> Done:
        """What to do with one reader's outcome when it comes: record it, or give it back."""

        def done(result: Result | None) -> None:
            if result is None:
                with self._lock:
                    self._owed[worker] -= 1
                queue.give_back((subscriber, attempts))
            else:
                queue.done(self._settle(subscriber, attempts, result, worker))

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
        self, subscriber: Subscriber, attempts: int, result: Result, worker: int | None = None
    ) -> tuple[Subscriber, int, float] | None:
        """Record one outcome; returns the retry to schedule, if any."""
        with self._lock:
            retry, next_try = self._count(subscriber, attempts, result)
            self.recorder.record(self.issue, subscriber.email, result.state, result.reply, next_try)
            if worker is not None:  # handed to a connection, now recorded
                self._owed[worker] -= 1
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
        if result.state != DEFERRED:
            s.deferred_now.discard(subscriber.email)
            self._settled_at = self.clock()
            self._last_throttled = None
            self._throttle_streak.clear()
        if result.state == SENT:
            s.sent += 1
            self.limiter.speed_up()
            return None, None
        if result.state == FAILED:
            s.failed += 1
            if len(s.failures) < KEEP_FAILURES:
                s.failures.append((subscriber.email, result.reply))
            return None, None
        s.deferred_now.add(subscriber.email)
        if result.code:  # the server's own 4xx; silence is the circuit breaker's to judge
            self._check_stalled()
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
        if len(s.failures) < KEEP_FAILURES:
            s.failures.append((subscriber.email, result.reply))
        return None, next_try

    def _check_stalled(self) -> None:
        """A deferral (under the lock): stop the run if nothing has been settled for
        retry_window while fresh readers remain. Once the list is used up, the queue's own
        window ends the run; before, only this does, however slow the throttled pace."""
        queue = self._queue
        if queue is None or queue.stopped or not queue.producing or self._stalled is not None:
            return
        if self.clock() - self._settled_at < self.options.retry_window:
            return
        self._stalled = ServerDefersEveryone("the server deferred every reader")
        self._errors.append(self._stalled)
        queue.stop()
