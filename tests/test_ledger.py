"""The send ledger against real SQLite files and a real PostgreSQL, real threads and real
processes. Every test taking `ledger` or `open_ledger` runs on both backends, with the same
assertions; the rest are about the SQLite file (WAL, corruption, its lock, migrations)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import DEFERRED, FAILED, SENT, delivery, done

from mailer.errors import LockedError, MailerError, StoreDamaged
from mailer.state.ledger import SCHEMA_VERSION, FeedbackEvent, Ledger, lock
from mailer.state.migrations import MIGRATIONS
from mailer.states import DeliveryState, Feedback, Reason

BOUNCED = DeliveryState.BOUNCED

ROOT = Path(__file__).resolve().parent.parent

# Holds a lock until a line arrives on stdin; says "locked" once it has it.
HOLDER = """
import sys
from pathlib import Path
from mailer.state.ledger import lock
with lock(Path(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""

# Records n own addresses plus n shared ones (also recorded by its twin) once told to go.
WRITER = """
import sys
from pathlib import Path
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState
SENT, DEFERRED = DeliveryState.SENT, DeliveryState.DEFERRED
state, tag, n, url = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
with Ledger(state, database_url=url) as ledger:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        ledger.record("issue-1", f"{tag}-{i}@example.org", SENT)
        ledger.record("issue-1", f"shared-{i}@example.org", DEFERRED)
"""


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """Start a Python child that can import mailer from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """ "" for the SQLite file, else a fresh PostgreSQL database (password in PGPASSWORD)."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("database_with_password"))


@pytest.fixture
def open_ledger(tmp_path: Path, database_url: str) -> Callable[[], Ledger]:
    """Opens the ledger of this test's backend (the same one each time)."""
    return lambda: Ledger(tmp_path / "state", database_url=database_url)


@pytest.fixture
def ledger(open_ledger: Callable[[], Ledger]) -> Iterator[Ledger]:
    with open_ledger() as led:
        yield led


def _is_utc(when: datetime) -> bool:
    return when.tzinfo is not None and when.utcoffset() == timedelta(0)


# -- opening ------------------------------------------------------------------------------


def test_open_creates_dir_wal_and_schema_version(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    Ledger(state).close()
    db = state / "ledger.db"
    assert db.is_file()
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()


def test_data_survives_reopen(open_ledger: Callable[[], Ledger]) -> None:
    with open_ledger() as led:
        led.record("issue-1", "a@example.org", SENT)
        led.suppress("b@example.org", "manual", "cli")
    with open_ledger() as led:
        assert done(led, "issue-1") == {"a@example.org"}
        assert led.is_suppressed("b@example.org")


def test_corrupt_file_is_a_mailer_error_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").write_bytes(b"this is not a database, just junk\n" * 200)
    with pytest.raises(StoreDamaged) as info:
        Ledger(tmp_path)
    assert str(tmp_path / "ledger.db") in info.value.format_message()
    assert info.value.exit_code == 74
    assert str(info.value.hint).startswith("restore the latest `mailer backup` copy")
    assert "Moving the file aside starts an empty ledger with no suppressions" in str(
        info.value.hint
    )


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "ledger.db")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(MailerError, match="newer"):
        Ledger(tmp_path)


def test_closed_ledger_refuses_use(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.close()
    led.close()  # twice is harmless
    with pytest.raises(RuntimeError):
        led.record("issue-1", "a@example.org", SENT)


# -- deliveries ---------------------------------------------------------------------------


def test_record_upserts_counts_attempts_and_keeps_first_at(ledger: Ledger) -> None:
    assert delivery(ledger, "issue-1", "a@example.org") is None
    ledger.record("issue-1", "A@Example.org", DEFERRED, "451 try later")
    first = delivery(ledger, "issue-1", "a@example.org")
    assert first is not None
    assert (first.state, first.attempts, first.last_reply) == (DEFERRED, 1, "451 try later")
    assert first.email == "a@example.org"

    ledger.record("issue-1", "a@example.org", SENT, "250 ok")
    second = delivery(ledger, "issue-1", "A@EXAMPLE.ORG")
    assert second is not None
    assert (second.state, second.attempts, second.last_reply) == (SENT, 2, "250 ok")
    assert second.first_at == first.first_at
    assert second.updated_at > first.updated_at
    # Same address under another issue is a separate delivery.
    assert delivery(ledger, "issue-2", "a@example.org") is None


def test_record_rejects_unknown_state(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.record("issue-1", "a@example.org", "delivered")
    assert delivery(ledger, "issue-1", "a@example.org") is None


def test_counts_always_has_every_state(ledger: Ledger) -> None:
    assert ledger.counts("issue-1") == {SENT: 0, DEFERRED: 0, FAILED: 0, BOUNCED: 0}
    ledger.record("issue-1", "a@example.org", SENT)
    ledger.record("issue-1", "b@example.org", SENT)
    ledger.record("issue-1", "c@example.org", FAILED)
    ledger.record("issue-2", "d@example.org", DEFERRED)
    assert ledger.counts("issue-1") == {SENT: 2, DEFERRED: 0, FAILED: 1, BOUNCED: 0}
    assert ledger.counts("issue-2") == {SENT: 0, DEFERRED: 1, FAILED: 0, BOUNCED: 0}


def test_done_is_sent_and_failed_lower_cased_not_deferred(ledger: Ledger) -> None:
    ledger.record("issue-1", "Sent@Example.org", SENT)
    ledger.record("issue-1", "failed@example.org", FAILED)
    ledger.record("issue-1", "later@example.org", DEFERRED)
    ledger.record("issue-2", "other@example.org", SENT)
    assert done(ledger, "issue-1") == {"sent@example.org", "failed@example.org"}


def test_deliveries_filters_by_state(ledger: Ledger) -> None:
    ledger.record("issue-1", "a@example.org", SENT)
    ledger.record("issue-1", "b@example.org", FAILED, "550 no such user")
    ledger.record("issue-1", "c@example.org", SENT)
    assert [d.email for d in ledger.deliveries("issue-1")] == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    failed = list(ledger.deliveries("issue-1", FAILED))
    assert [(d.email, d.last_reply) for d in failed] == [("b@example.org", "550 no such user")]
    assert list(ledger.deliveries("issue-9")) == []


def test_deliveries_loop_may_record(ledger: Ledger) -> None:
    # The retry loop records while iterating; a lazily held lock would deadlock here.
    for i in range(3):
        ledger.record("issue-1", f"r{i}@example.org", DEFERRED)
    for d in ledger.deliveries("issue-1", DEFERRED):
        ledger.record(d.issue, d.email, SENT)
    assert ledger.counts("issue-1") == {SENT: 3, DEFERRED: 0, FAILED: 0, BOUNCED: 0}


def test_issues_oldest_activity_first(ledger: Ledger) -> None:
    assert ledger.issues() == []
    ledger.record("zeta", "a@example.org", SENT)
    ledger.record("alpha", "a@example.org", SENT)
    ledger.record("zeta", "b@example.org", SENT)
    assert ledger.issues() == ["zeta", "alpha"]


def test_delivery_timestamps_are_aware_utc(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    ledger.record("issue-1", "a@example.org", SENT)
    after = datetime.now(UTC)
    got = delivery(ledger, "issue-1", "a@example.org")
    assert got is not None
    assert _is_utc(got.first_at) and _is_utc(got.updated_at)
    assert before <= got.first_at <= after


# -- suppressions -------------------------------------------------------------------------


def test_suppress_twice_is_harmless_and_case_insensitive(ledger: Ledger) -> None:
    assert ledger.suppress("Bob@Example.org", "unsubscribed", "web") is True
    assert ledger.suppress("bob@example.org", "bounced", "smtp") is False
    assert ledger.is_suppressed("BOB@example.ORG")
    assert not ledger.is_suppressed("alice@example.org")
    assert ledger.suppressed_set() == {"bob@example.org"}
    [only] = ledger.suppressions()
    # The first reason wins: a later bounce does not rewrite the unsubscribe.
    assert (only.email, only.reason, only.source) == ("bob@example.org", "unsubscribed", "web")
    assert _is_utc(only.created_at)


def test_suppress_rejects_unknown_reason(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.suppress("a@example.org", "annoyed", "cli")
    assert not ledger.is_suppressed("a@example.org")


# -- schedules ----------------------------------------------------------------------------


def test_schedule_round_trip_in_utc(ledger: Ledger) -> None:
    paris = timezone(timedelta(hours=2))
    when = datetime(2030, 5, 1, 9, 0, tzinfo=paris)
    ledger.set_schedule("issue-1", when)
    got = ledger.schedule("issue-1")
    assert got is not None
    assert got.send_at == when
    assert _is_utc(got.send_at) and got.send_at.hour == 7
    assert _is_utc(got.created_at)
    assert got.state == "scheduled"
    assert ledger.schedule("issue-9") is None


def test_schedule_rejects_naive_datetime(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.set_schedule("issue-1", datetime(2030, 5, 1, 9, 0))
    assert ledger.schedule("issue-1") is None


def test_reschedule_replaces_and_resets_state(ledger: Ledger) -> None:
    ledger.set_schedule("issue-1", datetime(2030, 1, 1, tzinfo=UTC))
    ledger.set_schedule_state("issue-1", "sending")
    assert ledger.schedule("issue-1").state == "sending"  # type: ignore[union-attr]
    later = datetime(2030, 2, 1, tzinfo=UTC)
    ledger.set_schedule("issue-1", later)
    got = ledger.schedule("issue-1")
    assert got is not None and (got.send_at, got.state) == (later, "scheduled")
    assert len(ledger.schedules()) == 1


def test_cancel_schedule(ledger: Ledger) -> None:
    assert ledger.cancel_schedule("issue-1") is False
    ledger.set_schedule("issue-1", datetime(2030, 1, 1, tzinfo=UTC))
    assert ledger.cancel_schedule("issue-1") is True
    assert ledger.schedule("issue-1").state == "cancelled"  # type: ignore[union-attr]
    assert ledger.cancel_schedule("issue-1") is False
    # A run already under way cannot be cancelled from the ledger.
    ledger.set_schedule("issue-2", datetime(2030, 1, 1, tzinfo=UTC))
    ledger.set_schedule_state("issue-2", "sending")
    assert ledger.cancel_schedule("issue-2") is False
    assert ledger.schedule("issue-2").state == "sending"  # type: ignore[union-attr]


def test_set_schedule_state_checks_state_and_issue(ledger: Ledger) -> None:
    ledger.set_schedule("issue-1", datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        ledger.set_schedule_state("issue-1", "done")
    with pytest.raises(KeyError):
        ledger.set_schedule_state("issue-9", "sent")
    ledger.set_schedule_state("issue-1", "sent")
    assert ledger.schedule("issue-1").state == "sent"  # type: ignore[union-attr]


def test_schedules_ordered_by_send_at_across_zones(ledger: Ledger) -> None:
    tokyo = timezone(timedelta(hours=9))
    # 10:00 in Tokyo is 01:00 UTC: earlier than 03:00 UTC despite the larger wall-clock hour.
    ledger.set_schedule("late", datetime(2030, 1, 1, 3, 0, tzinfo=UTC))
    ledger.set_schedule("early", datetime(2030, 1, 1, 10, 0, tzinfo=tokyo))
    ledger.set_schedule("middle", datetime(2030, 1, 1, 2, 0, tzinfo=UTC))
    assert [s.issue for s in ledger.schedules()] == ["early", "middle", "late"]


# -- concurrency --------------------------------------------------------------------------


def test_twenty_threads_on_one_ledger_lose_nothing(ledger: Ledger) -> None:
    threads, per_thread = 20, 200
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                ledger.record("issue-1", f"t{t}-{i}@example.org", SENT)
                ledger.record("issue-1", f"shared-{i}@example.org", DEFERRED)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    assert ledger.counts("issue-1") == {
        SENT: threads * per_thread,
        DEFERRED: per_thread,
        FAILED: 0,
        BOUNCED: 0,
    }
    # Every thread's upsert of a shared address counted: no lost increments.
    attempts = {d.attempts for d in ledger.deliveries("issue-1") if d.email.startswith("shared-")}
    assert attempts == {threads}


@pytest.mark.slow
def test_two_processes_recording_lose_nothing(
    tmp_path: Path, database_url: str, open_ledger: Callable[[], Ledger]
) -> None:
    n = 1500
    # Both open the fresh database at once, so this also races the schema creation.
    state = str(tmp_path / "state")
    procs = [_spawn(WRITER, state, tag, str(n), database_url) for tag in ("p1", "p2")]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with open_ledger() as led:
        assert led.counts("issue-1") == {SENT: 2 * n, DEFERRED: n, FAILED: 0, BOUNCED: 0}
        shared = [d for d in led.deliveries("issue-1") if d.email.startswith("shared-")]
        assert len(shared) == n
        assert {d.attempts for d in shared} == {2}


# -- the lock -----------------------------------------------------------------------------


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process holding lock 'issue-1' in tmp_path until told (or killed)."""
    proc = _spawn(HOLDER, str(tmp_path), "issue-1")
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_lock_held_by_another_process_names_its_pid(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(LockedError) as info, lock(tmp_path, "issue-1"):
        pass
    assert f"process {holder.pid}" in str(info.value)
    assert info.value.exit_code == 75
    # A different name is a different lock.
    with lock(tmp_path, "issue-2"):
        pass


def test_lock_is_free_after_holder_is_sigkilled(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(LockedError), lock(tmp_path, "issue-1"):
        pass
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    with lock(tmp_path, "issue-1"):
        pass


def test_lock_wait_succeeds_when_holder_releases_in_time(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    def release() -> None:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()

    timer = threading.Timer(0.3, release)
    started = time.monotonic()
    timer.start()
    try:
        with lock(tmp_path, "issue-1", wait=10):
            waited = time.monotonic() - started
    finally:
        timer.cancel()
    assert waited >= 0.25  # it really had to wait for the holder
    assert holder.wait(timeout=10) == 0


def test_lock_wait_times_out(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    started = time.monotonic()
    with pytest.raises(LockedError), lock(tmp_path, "issue-1", wait=0.3):
        pass
    assert time.monotonic() - started >= 0.3


def test_lock_excludes_within_one_process_and_is_reusable(tmp_path: Path) -> None:
    with lock(tmp_path, "send"), pytest.raises(LockedError), lock(tmp_path, "send"):
        pass
    with lock(tmp_path, "send"):
        pass


def test_lock_rejects_path_like_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError), lock(tmp_path, "../escape"):
        pass


# Ledger.record's cost per call is measured by bench/ledger_bench.py (make bench).


def test_sent_is_never_downgraded(open_ledger: Callable[[], Ledger]) -> None:
    """A later deferral or failure must not turn an accepted copy back into one to resend."""
    with open_ledger() as ledger:
        ledger.record("issue-1", "a@example.com", SENT, "250 ok")
        ledger.record("issue-1", "a@example.com", DEFERRED, "451 later")
        ledger.record("issue-1", "a@example.com", FAILED, "550 no")
        got = delivery(ledger, "issue-1", "a@example.com")
        assert got is not None
        assert (got.state, got.attempts, got.last_reply) == (SENT, 1, "250 ok")
        assert done(ledger, "issue-1") == {"a@example.com"}


# -- schema 3: bounces and complaints -----------------------------------------------------


def test_version_2_ledger_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    """A ledger written before bounces existed: its rows survive the table rebuilds."""
    tmp_path.mkdir(exist_ok=True)
    raw = sqlite3.connect(tmp_path / "ledger.db")
    for statements in MIGRATIONS[:2]:
        for sql in statements:
            raw.execute(sql)
    raw.execute("PRAGMA user_version = 2")
    raw.execute(
        "INSERT INTO deliveries VALUES ('issue-1', 'a@example.org', 'deferred', 2, '451 later',"
        " '2026-01-01T00:00:00.000000+00:00', '2026-01-01T01:00:00.000000+00:00',"
        " '2026-01-01T02:00:00.000000+00:00')"
    )
    raw.execute(
        "INSERT INTO deliveries VALUES ('issue-1', 'b@example.org', 'sent', 1, '250 ok',"
        " '2026-01-01T00:00:01.000000+00:00', '2026-01-01T00:00:01.000000+00:00', NULL)"
    )
    raw.execute(
        "INSERT INTO suppressions VALUES ('c@example.org', 'unsubscribed', 'web',"
        " '2026-01-01T00:00:02.000000+00:00')"
    )
    raw.commit()
    raw.close()
    with Ledger(tmp_path) as ledger:
        a = delivery(ledger, "issue-1", "a@example.org")
        assert a is not None
        assert (a.state, a.attempts, a.last_reply) == (DEFERRED, 2, "451 later")
        assert a.next_try_at == datetime(2026, 1, 1, 2, tzinfo=UTC)
        assert ledger.counts("issue-1") == {SENT: 1, DEFERRED: 1, FAILED: 0, BOUNCED: 0}
        [c] = ledger.suppressions()
        assert (c.email, c.reason, c.source) == ("c@example.org", Reason.UNSUBSCRIBED, "web")
        # The new values are allowed now.
        ledger.suppress("d@example.org", Reason.COMPLAINED, "complaint abuse")
        outcome = ledger.record_feedback(
            "<dsn-1@mx>",
            Feedback.HARD,
            [FeedbackEvent("b@example.org", Feedback.HARD, "issue-1", "5.1.1", "no such user")],
            source="maildir",
            soft_limit=3,
        )
        assert outcome is not None and outcome[0].bounced and outcome[0].suppressed
        b = delivery(ledger, "issue-1", "b@example.org")
        assert b is not None and b.state == BOUNCED
    raw = sqlite3.connect(tmp_path / "ledger.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {
        *("deliveries", "suppressions", "schedules", "feedback_messages", "feedback"),
        *("outbox", "senders"),  # 4: several senders on one (PostgreSQL) database
        "mailer_meta",  # 5: the ledger's own id (state/continuity.py)
        *("feeds", "feed_entries"),  # 6: what `mailer digest` read
        *("subscribers", "subscriber_fields"),  # 7: the list in the store
    }
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO suppressions VALUES ('e@example.org', 'annoyed', 'x', 'now')")
    raw.close()


def _hard(email: str, issue: str = "issue-1") -> list[FeedbackEvent]:
    return [FeedbackEvent(email, Feedback.HARD, issue, "5.1.1", "no such user")]


def test_record_feedback_is_once_per_message_id(ledger: Ledger) -> None:
    ledger.record("issue-1", "a@example.org", SENT, "250 ok")
    first = ledger.record_feedback(
        "<m1@x>", Feedback.HARD, _hard("a@example.org"), source="t", soft_limit=3
    )
    assert first is not None
    assert [(o.suppressed, o.bounced) for o in first] == [(True, True)]
    assert ledger.feedback_seen("<m1@x>") and not ledger.feedback_seen("<m2@x>")
    again = ledger.record_feedback(
        "<m1@x>", Feedback.HARD, _hard("a@example.org"), source="t", soft_limit=3
    )
    assert again is None
    # Another message about the same copy: recorded, changes nothing more.
    other = ledger.record_feedback(
        "<m2@x>", Feedback.HARD, _hard("a@example.org"), source="t", soft_limit=3
    )
    assert other is not None and [(o.suppressed, o.bounced) for o in other] == [(False, False)]
    got = delivery(ledger, "issue-1", "a@example.org")
    assert got is not None
    assert (got.state, got.attempts, got.last_reply) == (BOUNCED, 1, "bounced: 5.1.1 no such user")
    assert ledger.feedback_counts("issue-1") == {
        Feedback.HARD: 1,
        Feedback.SOFT: 0,
        Feedback.COMPLAINT: 0,
        Feedback.UNSUBSCRIBE: 0,
    }


def test_only_a_sent_row_becomes_bounced(ledger: Ledger) -> None:
    ledger.record("issue-1", "f@example.org", FAILED, "550 no")
    ledger.record("issue-1", "d@example.org", DEFERRED, "451 later")
    for n, email in enumerate(("f@example.org", "d@example.org", "nobody@example.org")):
        ledger.record_feedback(f"<m{n}@x>", Feedback.HARD, _hard(email), source="t", soft_limit=3)
    assert ledger.counts("issue-1") == {SENT: 0, DEFERRED: 1, FAILED: 1, BOUNCED: 0}
    assert ledger.suppressed_set() == {"f@example.org", "d@example.org", "nobody@example.org"}


def test_an_earlier_reason_is_kept(ledger: Ledger) -> None:
    ledger.record("issue-1", "a@example.org", SENT)
    ledger.suppress("a@example.org", Reason.UNSUBSCRIBED, "web")
    [outcome] = (
        ledger.record_feedback(
            "<m@x>", Feedback.HARD, _hard("a@example.org"), source="t", soft_limit=3
        )
        or []
    )
    assert (outcome.suppressed, outcome.bounced) == (False, True)
    [only] = ledger.suppressions()
    assert only.reason == Reason.UNSUBSCRIBED


def test_a_failed_feedback_transaction_leaves_nothing(ledger: Ledger) -> None:
    ledger.record("issue-1", "a@example.org", SENT)
    bad = [*_hard("a@example.org"), FeedbackEvent("", Feedback.HARD)]  # "" is no address
    with pytest.raises(ValueError):
        ledger.record_feedback("<m@x>", Feedback.HARD, bad, source="t", soft_limit=3)
    assert not ledger.feedback_seen("<m@x>")
    assert ledger.suppressions() == []
    got = delivery(ledger, "issue-1", "a@example.org")
    assert got is not None and got.state == SENT
