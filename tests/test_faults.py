"""The fault matrix: 20 readers, 2 of them faulty (or all), over 1 and 4 connections, against
a real SMTP server on 127.0.0.1. Whatever the server does, every run ends by itself, nobody
is lost (each reader is sent, deferred, failed or untouched) and nobody is sent twice.

Then the retry model (Postfix's queue): a deferred reader keeps a next try time; a later run
retries only those whose time has come; after give_up_after it becomes failed.
"""

from __future__ import annotations

import csv
import io
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import DEFERRED, FAILED, SECRET, SENT, MailerCli
from smtp_server import SMTPServer

from mailer.state.ledger import Ledger

N = 20
READERS = [f"r{i:02d}@example.com" for i in range(N)]
FAULTY = [READERS[5], READERS[12]]  # in the middle: the send must go on past them
OTHERS = [r for r in READERS if r not in FAULTY]
TIMEOUT = 1.0  # smtp_timeout, seconds
RUN_LIMIT = 20.0  # a run still going after this long is endless: the test fails
CSV_HEADER = ["email", "state", "attempts", "reply", "updated_at", "next_try_at"]

# slow: every fault waits out real SMTP timeouts
pytestmark = [pytest.mark.usefixtures("render_memo"), pytest.mark.slow]


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email,name\n" + "".join(f"{a},Reader {a[1:3]}\n" for a in READERS))


def env_for(server: SMTPServer, connections: int = 1, **extra: str) -> dict[str, str]:
    env = {
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(server.port),
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_SECRET": SECRET,
        "MAILER_SMTP_TIMEOUT": f"{TIMEOUT:g}",
        "MAILER_RETRY_DELAY": "0.2",
        "MAILER_RETRY_WINDOW": "1s",
        "MAILER_RATE": "off",
        "MAILER_CONNECTIONS": str(connections),
    }
    env.update(extra)
    return env


class _Endless(BaseException):
    """Raised in the main thread by the watchdog: the run did not end by itself."""


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    output: str
    elapsed: float


Runner = Callable[..., Run]


@pytest.fixture
def run(mailer_cli: MailerCli) -> Runner:
    """run(project, *args, env=..., limit=RUN_LIMIT): `mailer -C project ARGS` in this
    process, stopped (and failed) if it runs past limit."""

    def invoke(project: Path, *args: str, env: dict[str, str], limit: float = RUN_LIMIT) -> Run:
        def alarm(signum: int, frame: object) -> None:
            raise _Endless

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        started = time.monotonic()
        try:
            result = mailer_cli(project, *args, env=env)
        except _Endless:
            pytest.fail(f"`mailer {' '.join(args)}` was still running after {limit:g}s")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.monotonic() - started
        return Run(result.exit_code, result.stdout, result.stderr, result.output, elapsed)

    return invoke


def ledger_rows(project: Path) -> dict[str, tuple[str, int, str]]:
    """email -> (state, attempts, last reply); {} when nothing was ever recorded."""
    if not (project / ".mailer" / "ledger.db").exists():
        return {}
    with Ledger(project / ".mailer") as ledger:
        rows = list(ledger.deliveries("issue-2"))
    emails = Counter(d.email for d in rows)
    assert all(n == 1 for n in emails.values()), emails  # one state per reader
    return {d.email: (d.state, d.attempts, d.last_reply) for d in rows}


def failed_csv(run: Runner, project: Path, env: dict[str, str]) -> dict[str, dict[str, str]]:
    """`mailer status issue-2 --failed --csv`, checked for shape, by email."""
    listing = run(project, "status", "issue-2", "--failed", "--csv", env=env)
    assert listing.exit_code == 0, listing.output
    rows = list(csv.reader(io.StringIO(listing.stdout)))
    assert rows[0] == CSV_HEADER
    out = {}
    for row in rows[1:]:
        assert len(row) == len(CSV_HEADER), row
        out[row[0]] = dict(zip(CSV_HEADER, row, strict=True))
    return out


def iso(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    assert when.tzinfo is not None, f"{text!r} has no offset"
    return when


def by_state(rows: dict[str, tuple[str, int, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {SENT: set(), DEFERRED: set(), FAILED: set()}
    for email, (state, _, _) in rows.items():
        out[state].add(email)
    return out


# -- the matrix ---------------------------------------------------------------------------


def _451(server: SMTPServer) -> None:
    server.defer.update(FAULTY)


def _452(server: SMTPServer) -> None:
    server.rcpt_replies.update(dict.fromkeys(FAULTY, "452 4.2.2 Mailbox full"))


def _421(server: SMTPServer) -> None:
    server.rcpt_replies.update(dict.fromkeys(FAULTY, "421 4.3.2 Service shutting down"))


def _drop_after_250(server: SMTPServer) -> None:
    server.drop_after_250.update(FAULTY)


def _hang(server: SMTPServer) -> None:
    server.hang_data.update(FAULTY)


def _hang_all(server: SMTPServer) -> None:
    server.hang_all = True


def _550(server: SMTPServer) -> None:
    server.reject.update(FAULTY)


def _530(server: SMTPServer) -> None:
    server.mail_reply = "530 5.7.0 Authentication required"


@dataclass(frozen=True)
class Fault:
    setup: Callable[[SMTPServer], None]
    exit_code: int
    sent: frozenset[str] | None  # exactly these are sent (None: checked by the row's test)
    deferred: frozenset[str] | None
    failed: frozenset[str] | None
    untouched: frozenset[str] | None  # no ledger row at all
    reply: str = ""  # the deferred/failed readers' last reply starts with this
    hang: bool = False  # the server may hold a copy the ledger does not call sent


_ALL, _NONE = frozenset(READERS), frozenset()
_18, _2 = frozenset(OTHERS), frozenset(FAULTY)
FAULTS = {
    "451-forever-at-rcpt": Fault(_451, 75, _18, _2, _NONE, _NONE, reply="451"),
    "452-at-rcpt": Fault(_452, 75, _18, _2, _NONE, _NONE, reply="452"),
    "421-and-hang-up-at-rcpt": Fault(_421, 75, _18, _2, _NONE, _NONE, reply="421"),
    "250-then-drop-after-data": Fault(_drop_after_250, 0, _ALL, _NONE, _NONE, _NONE),
    "hang-at-end-of-data": Fault(_hang, 75, _18, _2, _NONE, _NONE, hang=True),
    "hang-for-everyone": Fault(_hang_all, 75, _NONE, None, _NONE, None, hang=True),
    "550-at-rcpt": Fault(_550, 1, _18, _NONE, _2, _NONE, reply="550"),
    "530-at-mail-from": Fault(_530, 77, _NONE, _NONE, _NONE, _ALL),
}


# How the client talks: the server does not offer PIPELINING (smtplib, a reply per command),
# or it does and mailer pipelines at depth 1 (MAIL, RCPT, DATA in one write) or at the
# default depth 2 (the next envelope goes with the previous body, RFC 2920 3.1).
MODES = {"no-pipelining": None, "pipelining-depth-1": 1, "pipelining-depth-2": 2}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_matrix(
    name: str, connections: int, mode: str, project: Path, smtp_server: SMTPServer, run: Runner
) -> None:
    fault = FAULTS[name]
    fault.setup(smtp_server)
    depth = MODES[mode]
    smtp_server.pipelining = depth is not None
    env = env_for(smtp_server, connections, MAILER_PIPELINE_DEPTH=str(depth or 2))
    result = run(project, "send", "issue-2", "--yes", env=env)  # fails if it never ends

    # The client pipelined exactly when offered, and overlapped transactions only at depth 2.
    if depth is None:
        assert (smtp_server.grouped, smtp_server.overlapped) == (0, 0)
    elif smtp_server.mails:
        assert smtp_server.grouped == smtp_server.mails, (smtp_server.grouped, smtp_server.mails)
        assert (smtp_server.overlapped > 0) == (depth == 2 and len(smtp_server.received) > 1)

    assert result.exit_code == fault.exit_code, result.output
    rows = ledger_rows(project)
    states = by_state(rows)
    got = smtp_server.by_recipient()

    # Nobody lost, nobody counted twice: each reader in exactly one of four places.
    assert set(rows) <= set(READERS)
    untouched = set(READERS) - set(rows)
    assert len(states[SENT]) + len(states[DEFERRED]) + len(states[FAILED]) + len(untouched) == N
    # No duplicate: a reader the ledger calls sent got one copy (at most one, if the server
    # may hold copies it never confirmed).
    for reader in states[SENT]:
        assert got[reader] <= 1, (reader, got[reader])
        if not fault.hang:
            assert got[reader] == 1, (reader, got[reader])
    if not fault.hang:  # the server never accepted a copy for anyone not marked sent
        assert all(got[r] == 0 for r in set(READERS) - states[SENT]), got
    assert set(got) <= set(READERS)

    if fault.sent is not None:
        assert states[SENT] == fault.sent, result.output
    if fault.deferred is not None:
        assert states[DEFERRED] == fault.deferred, result.output
    if fault.failed is not None:
        assert states[FAILED] == fault.failed, result.output
    if fault.untouched is not None:
        assert untouched == fault.untouched, untouched
    for reader in states[DEFERRED] | states[FAILED]:
        state, attempts, reply = rows[reader]
        assert attempts >= 1 and reply, rows[reader]
        if fault.reply:
            assert reply.startswith(fault.reply), rows[reader]

    if name == "250-then-drop-after-data":
        assert got == Counter(dict.fromkeys(READERS, 1))  # each exactly once
    if name == "hang-for-everyone":
        assert "not answering" in result.stderr, result.output
        # circuit_breaker: 5 readers lost in a row stop the run; the other connections'
        # messages already in flight then end too (each times out): 5 + connections - 1.
        assert len(rows) <= 5 + connections - 1, rows
        assert all(r[:2] == (DEFERRED, 1) for r in rows.values()), rows
    if name == "530-at-mail-from":
        assert rows == {}
        assert not re.search(r"\b[1-9]\d* deferred|deferred:? [1-9]", result.output), result.output

    # What `status --failed --csv` says agrees with the ledger; deferred readers have a next try.
    if rows:
        listing = failed_csv(run, project, env)
        assert set(listing) == states[DEFERRED] | states[FAILED]
        for reader, row in listing.items():
            state, attempts, reply = rows[reader]
            assert (row["state"], int(row["attempts"]), row["reply"]) == (state, attempts, reply)
            iso(row["updated_at"])
            if state == DEFERRED:
                assert row["next_try_at"], row
                assert iso(row["next_try_at"]) >= iso(row["updated_at"]), row
            else:
                assert row["next_try_at"] == "", row


# -- the retry model across runs ----------------------------------------------------------


def test_later_runs_retry_only_due_readers_then_give_up(
    project: Path, smtp_server: SMTPServer, run: Runner
) -> None:
    smtp_server.defer.update(FAULTY)
    env = env_for(smtp_server)
    first = run(project, "send", "issue-2", "--yes", env=env)
    assert first.exit_code == 75, first.output
    assert by_state(ledger_rows(project))[SENT] == set(OTHERS)
    listing = failed_csv(run, project, env)
    assert set(listing) == set(FAULTY)
    assert all(row["state"] == DEFERRED for row in listing.values())
    assert all(row["reply"] == "451 4.7.1 Try again later" for row in listing.values())
    tries = {r: int(row["attempts"]) for r, row in listing.items()}
    last = {r: iso(row["updated_at"]) for r, row in listing.items()}
    due = {r: iso(row["next_try_at"]) for r, row in listing.items()}
    assert all(due[r] > last[r] for r in FAULTY), listing
    received = len(smtp_server.received)

    # Before their next try: nobody is tried, they stay deferred (try again later: 75).
    between = max(last.values()) + (min(due.values()) - max(last.values())) / 2
    assert max(last.values()) < between < min(due.values())
    early = run(project, "send", "issue-2", "--yes", env={**env, "MAILER_NOW": between.isoformat()})
    assert early.exit_code == 75, early.output
    assert len(smtp_server.received) == received
    assert {r: v[1] for r, v in ledger_rows(project).items() if r in FAULTY} == tries
    assert set(failed_csv(run, project, env)) == set(FAULTY)

    # Once the time has come, both are tried again: the healed one is sent, once.
    smtp_server.defer.discard(FAULTY[0])
    later = max(due.values()) + timedelta(seconds=1)
    retry = run(project, "send", "issue-2", "--yes", env={**env, "MAILER_NOW": later.isoformat()})
    assert retry.exit_code == 75, retry.output  # FAULTY[1] is still deferred
    rows = ledger_rows(project)
    assert rows[FAULTY[0]][0] == SENT
    assert rows[FAULTY[1]][0] == DEFERRED and rows[FAULTY[1]][1] > tries[FAULTY[1]], rows
    assert smtp_server.by_recipient() == Counter(dict.fromkeys(OTHERS + [FAULTY[0]], 1))
    again = failed_csv(run, project, env)
    assert set(again) == {FAULTY[1]}
    assert iso(again[FAULTY[1]]["next_try_at"]) > later

    # Deferred for longer than give_up_after since its first attempt: failed for good.
    hour_later = datetime.now().astimezone() + timedelta(hours=1)
    give_up = {**env, "MAILER_GIVE_UP_AFTER": "1m", "MAILER_NOW": hour_later.isoformat()}
    final = run(project, "send", "issue-2", "--yes", env=give_up)
    assert final.exit_code == 1, final.output  # given up: failed for good
    assert "1 deferred for longer than give_up_after: now failed for good" in final.stdout
    state, attempts, reply = ledger_rows(project)[FAULTY[1]]
    assert state == FAILED
    gave_up = re.match(r"gave up after (\d+) tries over ", reply)
    assert gave_up, reply
    assert int(gave_up.group(1)) == attempts
    row = failed_csv(run, project, env)[FAULTY[1]]
    assert (row["state"], row["next_try_at"]) == (FAILED, "")
    assert row["reply"].startswith("gave up after ")
    got = smtp_server.by_recipient()
    assert got[FAULTY[1]] == 0
    assert all(got[r] == 1 for r in OTHERS + [FAULTY[0]]), got
