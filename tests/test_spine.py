"""The send spine's new parts on their own: the retry window, giving up, the ledger watch,
the journal. End to end under faults and signals: test_faults.py, test_signals.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DEFERRED, FAILED, SENT, delivery, smtp_env
from smtp_server import SMTPServer

from mailer import config
from mailer.cli import main
from mailer.compose import issue as issue_mod
from mailer.compose import render as render_mod
from mailer.compose.render import Email
from mailer.deliver.audience import Audience, LedgerWatch
from mailer.deliver.journal import Journal, JournaledLedger, RecordFailed
from mailer.deliver.message import Composer
from mailer.deliver.sender import Sender, SendOptions
from mailer.deliver.transports import Outbox, Result
from mailer.state.ledger import Ledger, LedgerGone
from mailer.state.subscribers import Subscriber
from mailer.states import DeliveryState, Skip

OK = Result(SENT, 250, "250 ok")
GREYLISTED = Result(DEFERRED, 451, "451 4.7.1 greylisted")


@pytest.fixture(scope="module")
def email(module_project: Path) -> Email:
    settings = config.load(module_project, environ={})
    issue = issue_mod.read(module_project / "issues" / "issue-2.md")
    return render_mod.render(issue, settings)


@pytest.fixture(scope="module")
def composer(email: Email, module_project: Path) -> Composer:
    settings = config.load(module_project, environ={"MAILER_SECRET": "s"})
    return Composer(email, settings)


def people(n: int) -> list[Subscriber]:
    return [Subscriber(f"r{i:02d}@example.com", "", {}, i + 2) for i in range(n)]


def test_a_reader_deferred_for_ever_does_not_hold_the_run(
    email: Email, composer: Composer, tmp_path: Path
) -> None:
    """Throttling replies for two readers, forever: the run ends once the window is over."""
    always = {"r03@example.com", "r07@example.com"}
    outbox = Outbox(reply=lambda m, n: GREYLISTED if m.recipient in always else OK)
    options = SendOptions(rate=float("inf"), retry_delay=0.05, max_attempts=1000, retry_window=0.5)
    with Ledger(tmp_path) as ledger:
        summary = Sender(email, composer, outbox.transport, ledger, options).run(people(10), 10)
        rows = {d.email: d for d in ledger.deliveries("issue-2")}
    assert (summary.sent, summary.deferred, summary.exit_code) == (8, 2, 75)
    for address in always:
        row = rows[address]
        assert row.state == DEFERRED and row.next_try_at is not None
        assert row.next_try_at > row.updated_at
        assert outbox.recipients.count(address) == row.attempts > 1
        # The retry window ended the run, not max_attempts: bounded by time, not by "days".
        assert row.attempts < options.max_attempts


def test_a_later_run_retries_only_those_whose_time_has_come(tmp_path: Path) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with Ledger(tmp_path) as ledger:
        ledger.record("i", "due@example.com", DEFERRED, "451", now - timedelta(seconds=1))
        ledger.record("i", "later@example.com", DEFERRED, "451", now + timedelta(minutes=5))
        audience = Audience.of(ledger, "i", now=now)
    due, later = (Subscriber(a, "", {}, 2) for a in ("due@example.com", "later@example.com"))
    assert audience.skip(due) is None
    assert audience.skip(later) == "not due"


def test_a_bounced_copy_is_never_owed_again_even_unsuppressed(tmp_path: Path) -> None:
    """The copy was accepted before it bounced: the audience says done, as the outbox does."""
    with Ledger(tmp_path) as ledger:
        ledger.record("i", "gone@example.com", DeliveryState.BOUNCED, "bounced: 5.1.1")
        assert not ledger.is_suppressed("gone@example.com")
        audience = Audience.of(ledger, "i")
    assert audience.skip(Subscriber("Gone@example.com", "", {}, 2)) == Skip.ALREADY_DONE


def test_pending_is_owed_and_never_tried(tmp_path: Path) -> None:
    """`mailer status`'s pending: not the deferred (due or not), done or suppressed readers."""
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with Ledger(tmp_path) as ledger:
        ledger.record("i", "sent@example.com", SENT, "250")
        ledger.record("i", "failed@example.com", FAILED, "550")
        ledger.record("i", "due@example.com", DEFERRED, "451", now - timedelta(seconds=1))
        ledger.record("i", "later@example.com", DEFERRED, "451", now + timedelta(minutes=5))
        ledger.suppress("gone@example.com", "unsubscribed", "web")
        audience = Audience.of(ledger, "i", now=now)
    names = ("sent", "failed", "due", "later", "gone", "new", "NEW2")
    pending = [n for n in names if audience.pending(Subscriber(f"{n}@example.com", "", {}, 2))]
    assert pending == ["new", "NEW2"]


@pytest.mark.slow
def test_give_up_after_marks_old_deferrals_failed_with_the_count(
    new_project: Callable[[str], Path], smtp_server: SMTPServer
) -> None:
    root = new_project("email\nann@example.com\nbob@example.com\n")
    smtp_server.defer.add("bob@example.com")
    env = {**smtp_env(smtp_server), "MAILER_RETRY_DELAY": "0.05", "MAILER_RETRY_WINDOW": "1s"}
    env["MAILER_NOW"] = "2026-12-01T09:00:00+00:00"
    first = CliRunner().invoke(main, ["-C", str(root), "send", "issue-2", "--yes"], env=env)
    assert first.exit_code == 75, first.output
    env["MAILER_NOW"] = "2026-12-04T09:00:01+00:00"  # just over 3 days after the first try
    second = CliRunner().invoke(main, ["-C", str(root), "send", "issue-2", "--yes"], env=env)
    assert second.exit_code == 1, second.output  # bob failed for good in this run
    with Ledger(root / ".mailer") as ledger:
        bob = delivery(ledger, "issue-2", "bob@example.com")
    assert bob is not None and bob.state == FAILED and bob.next_try_at is None
    assert bob.last_reply.startswith(f"gave up after {bob.attempts} tries over 3 days: 4")
    assert smtp_server.by_recipient()["ann@example.com"] == 1


def test_the_watch_sees_another_process_suppress_within_its_interval(tmp_path: Path) -> None:
    with Ledger(tmp_path) as mine, Ledger(tmp_path) as theirs:
        watch = LedgerWatch(mine, frozenset(), interval=0.1)
        assert not watch.suppressed("Ann@example.com")
        theirs.suppress("ann@example.com", "unsubscribed", "web")
        time.sleep(0.15)
        assert watch.suppressed("Ann@example.com")


def test_the_watch_stops_a_run_whose_ledger_was_deleted(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        watch = LedgerWatch(ledger, frozenset(), interval=10)
        assert not watch.suppressed("a@example.com")
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with pytest.raises(LedgerGone, match="deleted or replaced"):
            watch.suppressed("a@example.com")


def test_an_outcome_the_ledger_cannot_take_is_journalled_and_replayed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    recorder = JournaledLedger(ledger)
    Journal(tmp_path).reserve()
    # SQLite's own "database or disk is full": the file may not grow by another page.
    pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]
    ledger._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(RecordFailed, match=r"ann@example.com was sent .*full.*ledger\.journal"):
        recorder.record("issue-2", "ann@example.com", SENT, "250 " + "x" * 20_000)
    ledger.close()
    assert os.path.getsize(tmp_path / "ledger.journal") == 64 * 1024  # written in its room
    with Ledger(tmp_path) as fresh:
        assert Journal(tmp_path).replay(fresh) == 1
        row = delivery(fresh, "issue-2", "ann@example.com")
        assert row is not None and row.state == SENT
    assert not (tmp_path / "ledger.journal").exists()
