"""The token bucket (mailer.deliver.ratelimit) and the pace of a whole send, on an injected clock.

No test here waits for real time: the clock is a counter that `sleep` moves forward.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from conftest import SENT

from mailer.config import parse_rate
from mailer.deliver.message import Message
from mailer.deliver.options import SendOptions, estimate
from mailer.deliver.ratelimit import RateLimiter
from mailer.deliver.sender import Sender
from mailer.deliver.transports import Outbox, Result
from mailer.errors import ConfigError
from mailer.state.subscribers import Subscriber


class FakeClock:
    """A monotonic clock that only `sleep` (and `advance`) move.

    Thread-aware: a sleeper wakes at the time it read plus what it slept, so two threads
    sleeping "at once" do not add their sleeps up.
    """

    def __init__(self, overshoot: float = 0.0) -> None:
        self.t = 0.0
        self.overshoot = overshoot  # real sleeps wake late; this models it
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._read = threading.local()

    def __call__(self) -> float:
        with self._lock:
            self._read.t = self.t
            return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, "asked to sleep a negative time"
        with self._lock:
            self.sleeps.append(seconds)
            start = getattr(self._read, "t", self.t)
            self.t = max(self.t, start + seconds + self.overshoot)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


# -- RateLimiter alone --------------------------------------------------------------------


def grants(limiter: RateLimiter, clock: FakeClock, until: float, work: float = 0.0) -> int:
    """Acquire slots one after another until the clock passes `until`; count them."""
    count = 0
    while True:
        limiter.acquire()
        if clock.t >= until:
            return count
        count += 1
        clock.advance(work)  # the send itself takes time


@pytest.mark.parametrize("work", [0.0, 0.01, 0.049])
def test_sixty_seconds_at_20_per_second_is_1200(work: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(20.0, clock=clock, sleep=clock.sleep)
    sent = grants(limiter, clock, 60.0, work)
    assert abs(sent - 1200) <= 24  # 2%
    assert abs(sent - 1200) <= 1  # virtual scheduling: exact on a perfect clock (float ends)


def test_late_wakeups_do_not_drift() -> None:
    # Each sleep wakes 5 ms late (10% of a slot). A limiter that sleeps a fixed interval
    # after each send would lose 10% (about 1090 in 60 s); slots must not drift.
    clock = FakeClock(overshoot=0.005)
    limiter = RateLimiter(20.0, clock=clock, sleep=clock.sleep)
    sent = grants(limiter, clock, 60.0)
    assert abs(sent - 1200) <= 24


def test_long_run_stays_exact() -> None:
    # An hour at 3/s (an interval that is not exact in binary): 10800 +- 2%.
    clock = FakeClock(overshoot=0.001)
    limiter = RateLimiter(3.0, clock=clock, sleep=clock.sleep)
    sent = grants(limiter, clock, 3600.0, work=0.002)
    assert abs(sent - 10800) <= 216


def test_first_slot_is_immediate_then_one_interval_apart() -> None:
    clock = FakeClock()
    clock.advance(100.0)
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(5):
        limiter.acquire()
        times.append(clock.t)
    assert times == pytest.approx([100.0, 100.25, 100.5, 100.75, 101.0])


def test_idle_time_earns_no_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.advance(30.0)  # a long pause between batches
    times = []
    for _ in range(4):
        limiter.acquire()
        times.append(clock.t)
    assert times == pytest.approx([30.0, 30.1, 30.2, 30.3])


def test_unlimited_never_sleeps() -> None:
    clock = FakeClock()
    limiter = RateLimiter(float("inf"), clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire()
    assert clock.sleeps == [] and clock.t == 0.0


def test_shared_by_threads_the_total_rate_holds() -> None:
    # Four connections share one bucket: 20/s in total, not 20/s each.
    clock = FakeClock()
    limiter = RateLimiter(20.0, clock=clock, sleep=clock.sleep)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(400):
            limiter.acquire()
            with lock:
                stamps.append(clock.t)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    in_first_minute = sum(1 for s in stamps if s < 60.0)
    assert abs(in_first_minute - 1200) <= 24
    assert len(stamps) == 1600


def test_slow_down_halves_with_a_floor() -> None:
    limiter = RateLimiter(20.0)
    assert limiter.slow_down() == 10.0
    assert limiter.rate == 10.0 and limiter.interval == pytest.approx(0.1)
    for _ in range(20):
        limiter.slow_down()
    assert limiter.rate == pytest.approx(0.2)
    unlimited = RateLimiter(float("inf"))
    assert unlimited.slow_down() < float("inf")


def test_each_accepted_message_gives_back_a_fiftieth_of_the_chosen_rate() -> None:
    limiter = RateLimiter(20.0)
    limiter.slow_down()
    limiter.slow_down()  # a throttling server: 5/s
    for _ in range(37):
        limiter.speed_up()
    assert limiter.rate == pytest.approx(5.0 + 37 * 0.4)
    assert limiter.speed_up() == 20.0  # never above what was chosen
    assert limiter.speed_up() == 20.0
    assert limiter.lowest == 5.0
    unlimited = RateLimiter(float("inf"))
    assert unlimited.speed_up() == float("inf")  # nothing to recover from
    assert unlimited.slow_down() == 5.0  # from 10/s, halved
    assert unlimited.speed_up() == pytest.approx(5.2)  # steps of 10/50, with no ceiling


def test_slow_down_takes_effect_on_the_next_slot() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.acquire()  # t = 0.1
    limiter.slow_down()  # 5/s
    limiter.acquire()  # the slot booked at 10/s: 0.2
    limiter.acquire()  # now 0.2 apart
    assert clock.t == pytest.approx(0.4)


# -- the pace of a whole send: Sender with an injected clock --------------------------------


class StubComposer:
    """Stands in for Composer: the bytes do not matter for pacing."""

    def compose(self, subscriber: Subscriber) -> Message:
        return Message(subscriber.email, f"<{subscriber.email}>", b"Subject: x\r\n\r\nx\r\n")


def taking(clock: FakeClock, work: float) -> Callable[[Message, int], Result]:
    """An Outbox reply: accepts each message after `work` seconds on the fake clock."""

    def reply(message: Message, n: int) -> Result:
        clock.advance(work)  # the send itself takes time
        return Result(SENT, 250, "250 ok")

    return reply


def paced_send(rate: float, connections: int, n: int, work: float = 0.0) -> list[float]:
    """When (on the fake clock) each of n messages went out."""
    clock = FakeClock()
    outbox = Outbox(clock=clock, reply=taking(clock, work))
    email = SimpleNamespace(issue=SimpleNamespace(slug="issue-2"))
    sender = Sender(
        email,  # type: ignore[arg-type]
        StubComposer(),  # type: ignore[arg-type]
        outbox.transport,
        None,
        SendOptions(rate=rate, connections=connections, batch_size=10_000),
        clock=clock,
        sleep=clock.sleep,
    )
    subs = (Subscriber(f"r{i}@example.com", "", {}, i + 2) for i in range(n))
    summary = sender.run(subs, n)
    assert summary.sent == n and summary.exit_code == 0
    assert len(outbox.messages) == n
    return outbox.sent_at


@pytest.mark.parametrize("connections", [1, 2, 4])
def test_send_at_20_per_second_for_60_seconds(connections: int) -> None:
    log = paced_send(20.0, connections, 1500, work=0.003)
    in_minute = sum(1 for t in log if t < 60.0)
    assert abs(in_minute - 1200) <= 24, in_minute


def test_send_rate_per_minute() -> None:
    log = paced_send(parse_rate("600/min"), 2, 700)
    assert abs(sum(1 for t in log if t < 60.0) - 600) <= 12


# -- estimates and rate strings ----------------------------------------------------------


def test_estimate_matches_the_rate_and_pauses() -> None:
    assert estimate(1200, SendOptions(rate=20.0)) == pytest.approx(60.0)
    assert estimate(0, SendOptions(rate=20.0)) == 0.0
    # 1000 at 100 per batch over 2 connections: 5 batches each, 4 pauses of 10 s.
    options = SendOptions(rate=20.0, batch_size=100, connections=2, pause=10.0)
    assert estimate(1000, options) == pytest.approx(50.0 + 40.0)
    assert estimate(1000, SendOptions(rate=float("inf"))) == 0.0


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("20/s", 20.0),
        ("20 / sec", 20.0),
        ("600/min", 10.0),
        ("600/m", 10.0),
        ("3600/h", 1.0),
        ("0.5/s", 0.5),
        ("off", float("inf")),
        ("0", float("inf")),
        ("unlimited", float("inf")),
    ],
)
def test_parse_rate(text: str, per_second: float) -> None:
    assert parse_rate(text) == per_second


@pytest.mark.parametrize("text", ["20", "fast", "20/day", "-5/s", "0/s", ""])
def test_bad_rate_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="rate"):
        parse_rate(text)
