"""Scheduled sends: `send_at` front matter, `mailer schedule`, and cron's `mailer send --due`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import DEFERRED, SENT, MailerCli, delivery
from smtp_server import SMTPServer

from mailer.cli import main
from mailer.state.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
GOOD = [f"reader{i}@example.com" for i in range(5)]
DUE = ["send", "--due", "--yes", "--rate", "off", "--retry-delay", "0.02"]
BEFORE = "2026-11-20T12:00:00Z"  # a week before the usual send time below


# slow: a whole `mailer` command, issue rendered, in every test
pytestmark = [pytest.mark.usefixtures("render_memo"), pytest.mark.slow]


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    rows = "".join(f"{a},Reader {i},City\n" for i, a in enumerate(GOOD))
    return new_project("email,name,city\n" + rows)


Run = Callable[..., Result]


@pytest.fixture
def cli(project: Path, smtp_server: SMTPServer, mailer_cli: MailerCli) -> Run:
    def run(*args: str, now: str | None = BEFORE, env: dict[str, str] | None = None) -> Result:
        full = {
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(smtp_server.port),
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_SMTP_TIMEOUT": "5",
            "MAILER_SECRET": "test-secret-of-the-suite",
            "MAILER_NOW": now,
            **(env or {}),
        }
        return mailer_cli(project, *args, env=full)

    return run


def set_send_at(project: Path, value: str, *extra: str) -> None:
    path = project / "issues" / "issue-2.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    path.write_text(
        "---\n" + "".join(f"{line}\n" for line in (value, *extra)) + text[4:], encoding="utf-8"
    )


def schedule_row(project: Path) -> tuple[datetime, str] | None:
    with Ledger(project / ".mailer") as ledger:
        row = ledger.schedule("issue-2")
    return (row.send_at, row.state) if row else None


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def silent(result: Result) -> bool:
    return result.exit_code == 0 and result.output == ""


# -- mailer schedule -------------------------------------------------------------------------


def test_schedule_with_tz_list_and_cancel(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    result = cli("schedule", "issue-2", "--at", "2026-12-01 09:00", "--tz", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("issue-2: scheduled for 2026-12-01 08:00 UTC (2026-12-01 09:00 CET)\n")
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "scheduled")

    listing = cli("schedule", "--list")
    assert listing.exit_code == 0
    assert listing.stdout.split() == [
        "issue-2",
        "2026-12-01",
        "08:00",
        "UTC",
        "future",
        "(mailer",
        "schedule)",
    ]
    due = cli("schedule", "--list", now="2026-12-01T08:00:00Z")
    assert "  due" in due.stdout

    cancelled = cli("schedule", "issue-2", "--cancel")
    assert cancelled.exit_code == 0
    assert cancelled.stdout == "issue-2: schedule cancelled\n"
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "cancelled")
    assert "cancelled" in cli("schedule", "--list").stdout
    assert silent(cli(*DUE, now="2026-12-01T08:30:00Z"))
    assert smtp_server.connections == 0


def test_cancel_what_is_not_scheduled(cli: Run) -> None:
    result = cli("schedule", "issue-2", "--cancel")
    assert result.exit_code == 65
    assert "issue-2 is not scheduled" in result.output


def test_nothing_scheduled_lists_nothing(cli: Run) -> None:
    result = cli("schedule", "--list")
    assert result.exit_code == 0 and result.stdout == "nothing scheduled\n"


@pytest.mark.parametrize(
    ("at", "tz", "expected"),
    [
        ("2026-12-01T09:00:00+01:00", None, "2026-12-01 08:00 UTC"),
        ("2026-12-01 09:00 Europe/Berlin", None, "2026-12-01 08:00 UTC"),
        ("2026-03-29 09:00", "Europe/Berlin", "2026-03-29 07:00 UTC (2026-03-29 09:00 CEST)"),
        ("2026-03-28 09:00", "Europe/Berlin", "2026-03-28 08:00 UTC (2026-03-28 09:00 CET)"),
        ("2026-10-25 09:00", "Europe/Berlin", "2026-10-25 08:00 UTC (2026-10-25 09:00 CET)"),
        ("2026-10-24 09:00", "Europe/Berlin", "2026-10-24 07:00 UTC (2026-10-24 09:00 CEST)"),
        ("2026-10-25 02:30", "Europe/Berlin", "2026-10-25 00:30 UTC (2026-10-25 02:30 CEST)"),
    ],
)
def test_schedule_times_across_dst(cli: Run, at: str, tz: str | None, expected: str) -> None:
    args = ["schedule", "issue-2", "--at", at] + (["--tz", tz] if tz else [])
    result = cli(*args, now="2026-01-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"issue-2: scheduled for {expected}\n"


@pytest.mark.parametrize(
    ("at", "tz", "message"),
    [
        ("2026-03-29 02:30", "Europe/Berlin", "does not exist in Europe/Berlin"),
        ("2026-03-29 02:30 Europe/Berlin", None, "does not exist in Europe/Berlin"),
        ("2026-12-01 09:00", None, "no time zone"),
        ("2026-12-01T09:00", None, "no time zone"),
        ("2026-12-01 09:00", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("next tuesday", None, "is not a time like"),
    ],
)
def test_schedule_refuses_bad_times(
    cli: Run, project: Path, at: str, tz: str | None, message: str
) -> None:
    args = ["schedule", "issue-2", "--at", at] + (["--tz", tz] if tz else [])
    result = cli(*args)
    assert result.exit_code == 2
    assert "--at" in result.output and message in result.output
    assert "Traceback" not in result.output
    assert not (project / ".mailer" / "ledger.db").exists() or schedule_row(project) is None


def test_schedule_in_the_past_warns(cli: Run) -> None:
    result = cli("schedule", "issue-2", "--at", "2026-11-19T09:00:00Z")
    assert result.exit_code == 0
    assert "that time has passed" in result.stderr


# -- send --due ---------------------------------------------------------------------------


def test_due_is_silent_when_nothing_is_scheduled(cli: Run, smtp_server: SMTPServer) -> None:
    result = cli(*DUE)
    assert silent(result), result.output
    assert smtp_server.connections == 0


def test_front_matter_send_at_is_sent_once_when_due(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    listing = cli("schedule", "--list")
    assert listing.stdout.split() == [
        "issue-2",
        "2026-12-01",
        "08:00",
        "UTC",
        "future",
        "(front",
        "matter)",
    ]
    assert silent(cli(*DUE, now="2026-12-01T07:59:59Z"))
    assert smtp_server.connections == 0

    result = cli(*DUE, now="2026-12-01T08:00:00Z")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("issue-2: sent 5, deferred 0, failed 0")
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sent")

    # Every later cron run: nothing, quietly.
    for when in ("2026-12-01T08:05:00Z", "2026-12-05T08:00:00Z"):
        assert silent(cli(*DUE, now=when))
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    assert "sent" in cli("schedule", "--list").stdout


def test_due_with_now_flag(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    set_send_at(project, "send_at: 2026-12-01T09:00:00+01:00")
    assert silent(cli(*DUE, "--now", "2026-12-01T07:00:00Z", now=None))
    result = cli(*DUE, "--now", "2026-12-01 09:00 Europe/Berlin", now=None)
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_bad_now_flag_is_a_usage_error(cli: Run) -> None:
    result = cli(*DUE, "--now", "2026-12-01T09:00", now=None)
    assert result.exit_code == 2
    assert "Invalid value for '--now'" in result.output or "--now" in result.output
    assert "no time zone" in result.output


def test_bad_mailer_now_is_a_clean_error(project: Path) -> None:
    result = CliRunner().invoke(
        main, ["-C", str(project), *DUE], env={"MAILER_NOW": "2026-12-01T09:00"}
    )
    assert result.exit_code == 2, result.output
    assert not (result.exception and not isinstance(result.exception, SystemExit))
    assert "MAILER_NOW" in result.output


def test_mailer_schedule_wins_over_front_matter(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    assert cli("schedule", "issue-2", "--at", "2026-12-03T10:00:00Z").exit_code == 0
    assert "2026-12-03 10:00 UTC" in cli("schedule", "--list").stdout
    assert silent(cli(*DUE, now="2026-12-01T09:00:00Z"))
    assert cli(*DUE, now="2026-12-03T10:00:00Z").exit_code == 0
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_cancelling_a_front_matter_schedule(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    result = cli("schedule", "issue-2", "--cancel")
    assert result.exit_code == 0
    assert "front matter send_at is now ignored" in result.stdout
    assert silent(cli(*DUE, now="2026-12-01T09:00:00Z"))
    assert smtp_server.connections == 0


def test_front_matter_wall_time_with_tz_key(cli: Run, project: Path) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00", "tz: America/New_York")
    assert "2026-12-01 14:00 UTC" in cli("schedule", "--list").stdout


@pytest.mark.parametrize(
    "value",
    [
        "send_at: 2026-12-01 09:00",  # a string without zone
        "send_at: 2026-12-01 09:00:00",  # YAML reads this as a naive datetime
        "send_at: 2026-12-01",  # a date
        "send_at: 2026-03-29 02:30 Europe/Berlin",  # skipped by the DST jump
    ],
)
def test_bad_front_matter_send_at_is_refused_by_name(
    cli: Run, project: Path, smtp_server: SMTPServer, value: str
) -> None:
    set_send_at(project, value)
    result = cli(*DUE, now="2026-12-02T00:00:00Z")
    assert result.exit_code == 1, result.output
    assert "send_at" in result.stderr and "issue-2.md" in result.stderr
    assert "Traceback" not in result.output
    assert smtp_server.connections == 0
    listing = cli("schedule", "--list")
    assert listing.exit_code == 0
    assert "send_at" in listing.stderr


def test_machine_off_at_send_time_sends_at_next_run(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    result = cli(*DUE, now="2026-12-01T15:00:00Z")  # 7 hours late, within max_late
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_too_late_needs_force(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    result = cli(*DUE, now="2026-12-02T08:00:01Z")  # just over 24 h
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "issue-2: not sent: it was due 2026-12-01 08:00 UTC, more than 24h ago;"
        " send it with --due --force (or `mailer send issue-2`), or cancel it"
    )
    assert smtp_server.connections == 0
    assert cli(*DUE, now="2026-12-02T08:00:00Z").exit_code == 0  # exactly 24 h: still fine
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_force_sends_a_stale_schedule(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    assert cli(*DUE, now="2026-12-10T08:00:00Z").exit_code == 1
    result = cli(*DUE, "--force", now="2026-12-10T08:00:00Z")
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_max_late_from_the_environment(cli: Run, project: Path, smtp_server: SMTPServer) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    late = cli(*DUE, now="2026-12-01T09:30:00Z", env={"MAILER_MAX_LATE": "1h"})
    assert late.exit_code == 1
    assert "more than 1h ago" in late.stderr
    assert smtp_server.connections == 0
    ok = cli(*DUE, now="2026-12-01T08:30:00Z", env={"MAILER_MAX_LATE": "1h"})
    assert ok.exit_code == 0, ok.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


@pytest.mark.parametrize(
    ("wall", "utc_due"),
    [
        ("2026-03-29 09:00", datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),  # first CEST morning
        ("2026-10-25 09:00", datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),  # first CET morning
        ("2026-10-25 02:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # the first 02:30
    ],
)
def test_due_across_dst_switch(
    cli: Run, project: Path, smtp_server: SMTPServer, wall: str, utc_due: datetime
) -> None:
    now = "2026-01-01T00:00:00Z"
    assert cli("schedule", "issue-2", "--at", wall, "--tz", "Europe/Berlin", now=now).exit_code == 0
    one_second_early = (utc_due - timedelta(seconds=1)).isoformat()
    hour_early = (utc_due - timedelta(hours=1)).isoformat()  # the wrong-offset answer
    assert silent(cli(*DUE, now=hour_early))
    assert silent(cli(*DUE, now=one_second_early))
    assert smtp_server.connections == 0
    result = cli(*DUE, now=utc_due.isoformat())
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}


def test_schedule_after_sent_is_refused(cli: Run, project: Path) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    assert cli(*DUE, now="2026-12-01T08:00:00Z").exit_code == 0
    result = cli("schedule", "issue-2", "--at", "2026-12-24T08:00:00Z")
    assert result.exit_code == 65
    assert "issue-2 is already sent; it will not be sent twice" in result.output


# -- resuming, retries ---------------------------------------------------------------------


def test_due_resumes_an_interrupted_send_even_when_late(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    with Ledger(project / ".mailer") as ledger:
        ledger.set_schedule("issue-2", utc(2026, 12, 1, 8, 0))
        ledger.set_schedule_state("issue-2", "sending")  # a run that died half-way
        ledger.record("issue-2", GOOD[0], SENT, "250 ok")
        ledger.record("issue-2", GOOD[1], SENT, "250 ok")
    result = cli(*DUE, now="2026-12-09T08:00:00Z")  # days later: finishing is never stale
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD[2:]}
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sent")


def test_deferred_from_an_earlier_run_is_retried_by_the_next_cron_run(
    cli: Run, project: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    slow = [*DUE[:-1], "3600"]  # retry delay 1 h
    monkeypatch.setenv("MAILER_NOW", "2026-12-01T08:05:00Z")  # the ledger's clock too
    with Ledger(project / ".mailer") as ledger:
        ledger.set_schedule("issue-2", utc(2026, 12, 1, 8, 0))
        ledger.set_schedule_state("issue-2", "sending")
        ledger.record("issue-2", GOOD[0], DEFERRED, "451 4.7.1 Try again later")  # just now
    cli(*slow, now="2026-12-01T08:05:00Z")
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD[1:]}  # GOOD[0]: backoff not over
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sending")

    # 08:35: half of the 1 h backoff: still not due
    assert cli(*slow, now="2026-12-01T08:35:00Z").exit_code == 0  # cron: deferred is not an error
    assert GOOD[0] not in smtp_server.by_recipient()

    # 10:05: the backoff is over
    result = cli(*slow, now="2026-12-01T10:05:00Z")
    assert result.exit_code == 0, result.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}
    with Ledger(project / ".mailer") as ledger:
        got = delivery(ledger, "issue-2", GOOD[0])
    assert got is not None and (got.state, got.attempts) == (SENT, 2)
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sent")


def test_due_run_leaving_deferred_for_later_exits_0_and_keeps_sending(
    cli: Run, project: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_NOW", "2026-12-01T08:05:00Z")  # the ledger's clock too
    # A reader whose retry is not due yet is the next cron run's job, not a person's:
    # exit 0 (cron's non-zero means "look at this"), and the schedule stays open.
    with Ledger(project / ".mailer") as ledger:
        ledger.set_schedule("issue-2", utc(2026, 12, 1, 8, 0))
        ledger.set_schedule_state("issue-2", "sending")
        ledger.record("issue-2", GOOD[0], DEFERRED, "451 4.7.1 Try again later")
    result = cli(*DUE[:-1], "3600", now="2026-12-01T08:05:00Z")
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD[1:]}
    assert result.exit_code == 0, result.output
    with Ledger(project / ".mailer") as ledger:
        schedule = ledger.schedule("issue-2")
        assert schedule is not None and schedule.state == "sending"


def test_due_keeps_retrying_a_deferred_reader_on_later_runs(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    smtp_server.defer.add(GOOD[3])
    first = cli(*DUE, "--max-attempts", "2", now="2026-12-01T08:00:00Z")
    assert first.exit_code == 0, first.output  # deferred is the next run's job
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD if a != GOOD[3]}
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sending")
    second = cli(*DUE, "--max-attempts", "2", now="2026-12-01T08:05:00Z")
    assert second.exit_code == 0, second.output
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sending")
    with Ledger(project / ".mailer") as ledger:
        got = delivery(ledger, "issue-2", GOOD[3])
        assert got is not None and (got.state, got.attempts) == (DEFERRED, 4)
    smtp_server.defer.clear()
    third = cli(*DUE, "--max-attempts", "2", now="2026-12-01T08:10:00Z")
    assert third.exit_code == 0, third.output
    assert smtp_server.by_recipient() == {a: 1 for a in GOOD}, third.output
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sent")


# -- never twice: two cron runs at the same moment ---------------------------------------------


def test_two_due_runs_at_once_send_one_copy_each(project: Path, smtp_server: SMTPServer) -> None:
    many = [f"r{i:03d}@example.com" for i in range(60)]
    rows = "".join(f"{a},R {i},C\n" for i, a in enumerate(many))
    (project / "subscribers.csv").write_text("email,name,city\n" + rows, encoding="utf-8")
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(smtp_server.port),
        MAILER_SMTP_SECURITY="none",
        MAILER_SECRET="test-secret-of-the-suite",
        MAILER_NOW="2026-12-01T08:00:00Z",
    )
    argv = [
        sys.executable,
        "-m",
        "mailer",
        "-C",
        str(project),
        "send",
        "--due",
        "--yes",
        "--rate",
        "100/s",
    ]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out + err).decode()
        assert b"Traceback" not in err
    assert smtp_server.by_recipient() == {a: 1 for a in many}
    assert schedule_row(project) == (utc(2026, 12, 1, 8, 0), "sent")
    texts = [out.decode() for out, _ in outs]
    assert sum("issue-2: sent" in t for t in texts) >= 1
    for t in texts:
        # The other run waited, stood aside, or found nothing left to send.
        assert "issue-2: sent" in t or "another mailer run is sending it" in t or t == ""


def test_due_with_nobody_owed_a_copy_does_not_connect(
    cli: Run, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_NOW", "2026-12-01T08:05:00Z")  # the ledger's clock too
    # Everyone sent but one reader whose retry is not due yet: cron must stay silent and not
    # even connect, so a server that is down at that moment costs nothing.
    with Ledger(project / ".mailer") as ledger:
        ledger.set_schedule("issue-2", utc(2026, 12, 1, 8, 0))
        ledger.set_schedule_state("issue-2", "sending")
        for address in GOOD[1:]:
            ledger.record("issue-2", address, SENT, "250 ok")
        ledger.record("issue-2", GOOD[0], DEFERRED, "451 later")
    result = cli(*DUE[:-1], "3600", now="2026-12-01T08:05:00Z", env={"MAILER_SMTP_PORT": "1"})
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_a_due_send_that_cannot_start_leaves_the_schedule_as_it_was(
    cli: Run, project: Path, smtp_server: SMTPServer
) -> None:
    set_send_at(project, "send_at: 2026-12-01 09:00 Europe/Berlin")
    result = cli(*DUE, now="2026-12-01T08:00:00Z", env={"MAILER_SMTP_PORT": "1"})
    assert result.exit_code == 69
    assert schedule_row(project) is None  # not "sending": max_late still protects it
    late = cli(*DUE, now="2026-12-03T08:00:00Z")
    assert late.exit_code == 1 and "--force" in late.output
    assert smtp_server.received == []


def test_schedule_with_an_unknown_zone_is_a_clean_error(cli: Run, project: Path) -> None:
    result = cli("schedule", "issue-2", "--at", "2026-12-01T09:00+01:00", "--tz", "Europe/Berln")
    assert result.exit_code == 2
    assert "unknown time zone 'Europe/Berln'" in result.output
    assert schedule_row(project) is None
