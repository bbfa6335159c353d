"""Several `mailer send` processes, one list, one PostgreSQL database, one real SMTP server.

Two and four senders started together send every reader exactly once, and each takes part;
one of two killed with SIGKILL mid-send leaves its readers to the other once its lease has
run out, with no more duplicates than it had copies in flight; `mailer status` shows who is
sending. The real `mailer` script in subprocesses, the database a throwaway cluster
(tests/postgres.py), the server aiosmtpd in this process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import DEFERRED, FAILED, SENT, smtp_env
from postgres import Postgres, requires_postgres
from smtp_server import SMTPServer

from mailer import config
from mailer.deliver.audience import Audience
from mailer.deliver.claims import Claims
from mailer.deliver.workqueue import LATER
from mailer.errors import LockedError
from mailer.state.ledger import open_ledger, state_lock
from mailer.state.subscribers import Subscriber

pytestmark = requires_postgres

MAILER = Path(sys.executable).with_name("mailer")
N = 200
READERS = [f"s{i:03d}@example.com" for i in range(N)]
LEASE = 2  # claim_timeout, seconds


@pytest.fixture(autouse=True)
def password(database_with_password: str) -> None:
    """The test reads the ledger itself too: the password as mailer reads it."""


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email,name\n" + "".join(f"{a},Reader {a[1:4]}\n" for a in READERS))


def mailer_env(server: SMTPServer, url: str, postgres: Postgres, rate: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILER_", "PG"))}
    env.update(smtp_env(server))
    env.update(
        {
            "MAILER_DATABASE_URL": url,
            "PGPASSWORD": postgres.password,
            "MAILER_CLAIM_TIMEOUT": f"{LEASE}s",
            "MAILER_RATE": rate,
        }
    )
    return env


def start(project: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(MAILER), "send", "issue-2", "--yes", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def status(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAILER), "status", "issue-2"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def wait_for(server: SMTPServer, count: int, *senders: subprocess.Popen[str]) -> None:
    """Until the server has `count` copies; every sender must still be running."""
    deadline = time.monotonic() + 30
    while len(server.received) < count:
        assert all(p.poll() is None for p in senders), "a sender ended early"
        assert time.monotonic() < deadline, "the send never got going"
        time.sleep(0.01)


def settings_for(project: Path, env: dict[str, str]) -> config.Settings:
    return config.load(project, environ=env)


def message_ids(server: SMTPServer) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in server.received:
        found = re.search(rb"(?mi)^Message-ID: (<[^>]+>)\r$", m.data.split(b"\r\n\r\n")[0])
        assert found is not None
        out.setdefault(m.rcpt_tos[0].lower(), []).append(found.group(1).decode())
    return out


# With PIPELINING each sender ends with a copy in flight that another may be waiting on
# (its lease is live): the wait must never stop a sender from reading its own replies.
@pytest.mark.parametrize(
    ("senders", "pipelining"),
    [(2, False), (2, True), (4, True)],
    ids=["2-no-pipelining", "2-pipelining", "4-pipelining"],
)
def test_senders_together_send_everyone_once_and_each_takes_part(
    project: Path,
    smtp_server: SMTPServer,
    postgres_server: Postgres,
    postgres_url: str,
    senders: int,
    pipelining: bool,
) -> None:
    smtp_server.pipelining = pipelining
    env = mailer_env(smtp_server, postgres_url, postgres_server, "100/s")  # ~2 s in all
    # One batch for the whole list: no batch end flushes the pipeline before the list ends.
    procs = [start(project, env, "--batch-size", "1000") for _ in range(senders)]
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
    assert smtp_server.by_recipient() == Counter(dict.fromkeys(READERS, 1))
    # The rate is the list's, not each sender's: together they took at least about N / rate
    # (a slower machine only makes this longer; each at the full rate would take 1 / senders).
    arrivals = sorted(m.at for m in smtp_server.received)
    assert arrivals[-1] - arrivals[0] >= 0.8 * N / 100, arrivals[-1] - arrivals[0]

    with open_ledger(settings_for(project, env)) as ledger:
        assert {d.email: d.state for d in ledger.deliveries("issue-2")} == dict.fromkeys(
            READERS, SENT
        )
        rows = ledger.senders("issue-2", LEASE)
    assert len(rows) == senders
    assert all(r.state == "done" and not r.live for r in rows), rows
    assert sum(r.sent for r in rows) == N
    assert all(r.sent > 0 for r in rows), [r.sent for r in rows]  # each took part
    # What each printed is what it sent, and they add up.
    printed = [int(re.search(r"sent (\d+),", out).group(1)) for out, _ in outputs]  # type: ignore[union-attr]
    assert sorted(printed) == sorted(r.sent for r in rows)


def test_a_killed_senders_readers_go_to_the_other_after_its_lease(
    project: Path, smtp_server: SMTPServer, postgres_server: Postgres, postgres_url: str
) -> None:
    smtp_server.delay_250 = 0.02  # each reply a moment late: copies really are in flight
    env = mailer_env(smtp_server, postgres_url, postgres_server, "50/s")  # ~4 s in all
    victim, survivor = start(project, env), start(project, env)
    wait_for(smtp_server, 60, victim, survivor)
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.communicate(timeout=10)
    out, err = survivor.communicate(timeout=60)
    assert survivor.returncode == 0, out + err
    assert time.monotonic() - killed_at >= LEASE * 0.9  # it waited out the victim's lease

    got = message_ids(smtp_server)
    assert set(got) == set(READERS)  # nobody lost
    twice = {a: ids for a, ids in got.items() if len(ids) > 1}
    # Only the victim's copies in flight can arrive twice: one connection, one body at a
    # time (no PIPELINING offered here), so at most one.
    assert sum(len(ids) - 1 for ids in twice.values()) <= 1, twice
    assert all(len(set(ids)) == 1 for ids in twice.values())  # same Message-ID: one copy shown
    with open_ledger(settings_for(project, env)) as ledger:
        states = {d.email: d.state for d in ledger.deliveries("issue-2")}
        rows = {r.pid: r for r in ledger.senders("issue-2", LEASE)}
    assert states == dict.fromkeys(READERS, SENT)
    assert rows[victim.pid].state == "sending" and not rows[victim.pid].live  # it never said
    assert rows[survivor.pid].state == "done"
    assert rows[survivor.pid].sent > N // 2  # its own half and the victim's leftovers


def test_status_shows_the_live_senders(
    project: Path, smtp_server: SMTPServer, postgres_server: Postgres, postgres_url: str
) -> None:
    env = mailer_env(smtp_server, postgres_url, postgres_server, "40/s")  # ~5 s in all
    procs = [start(project, env) for _ in range(2)]
    try:
        wait_for(smtp_server, 40, *procs)
        during = status(project, env)
    finally:
        for p in procs:
            p.communicate(timeout=60)
    assert during.returncode == 0, during.stdout + during.stderr
    live = [line for line in during.stdout.splitlines() if "sending since" in line]
    assert len(live) == 2, during.stdout
    assert "senders    2 (2 live)" in during.stdout
    after = status(project, env)
    assert "sending since" not in after.stdout, after.stdout
    done = [line for line in after.stdout.splitlines() if ": done at " in line]
    assert len(done) == 2, after.stdout
    assert "senders    2 (0 live)" in after.stdout


def test_a_lock_is_held_for_every_machine_sharing_the_database(
    project: Path, postgres_url: str
) -> None:
    """`mailer bounces` takes state_lock("bounces"): with database_url it is an advisory
    lock in PostgreSQL, so a second reader elsewhere is told, and it is free again after."""
    settings = config.load(project, environ={"MAILER_DATABASE_URL": postgres_url})
    with state_lock(settings, "bounces"):
        busy = pytest.raises(LockedError, match="locked by another mailer process using")
        with busy, state_lock(settings, "bounces"):
            pass
        with state_lock(settings, "other"):
            pass  # another name is another lock
    with state_lock(settings, "bounces"):
        pass
    assert not (project / ".mailer" / "locks").exists()  # no flock file: the database's


def test_a_signalled_sender_hands_its_claims_back_at_once(
    project: Path, smtp_server: SMTPServer, postgres_server: Postgres, postgres_url: str
) -> None:
    """SIGTERM: the sender finishes what it has in flight, records it, gives back the readers
    it claimed but never sent (no waiting for its lease) and exits 75; the other sends them.
    Nobody gets two copies: a signal is not a crash."""
    env = mailer_env(smtp_server, postgres_url, postgres_server, "50/s")
    env["MAILER_CLAIM_TIMEOUT"] = "120s"  # the survivor could not wait this out in time
    first, second = start(project, env), start(project, env)
    wait_for(smtp_server, 40, first, second)
    first.send_signal(signal.SIGTERM)
    out1, err1 = first.communicate(timeout=30)
    out2, err2 = second.communicate(timeout=60)  # well before the 120 s lease would run out
    assert first.returncode == 75, out1 + err1
    assert "interrupted" in out1 + err1
    assert second.returncode == 0, out2 + err2
    assert smtp_server.by_recipient() == Counter(dict.fromkeys(READERS, 1))  # 0 twice, 0 lost
    with open_ledger(settings_for(project, env)) as ledger:
        rows = {r.pid: r for r in ledger.senders("issue-2", 120)}
        assert ledger.counts("issue-2")[SENT] == N
    assert rows[first.pid].state == "stopped" and rows[second.pid].state == "done"


def test_the_senders_counts_add_up_to_the_totals_status_shows(
    project: Path, smtp_server: SMTPServer, postgres_server: Postgres, postgres_url: str
) -> None:
    """Two senders, some readers refused for good, some deferred until a later run: each
    sender's line in `mailer status` is what it printed, and the lines add up to the totals."""
    rejected, deferred = READERS[10::40], READERS[25::40]  # 5 each, far apart: no throttling
    smtp_server.reject.update(rejected)
    smtp_server.defer.update(deferred)
    env = mailer_env(smtp_server, postgres_url, postgres_server, "100/s")
    env.update(MAILER_RETRY_DELAY="60", MAILER_RETRY_WINDOW="1s")  # no retry in these runs
    procs = [start(project, env, "--batch-size", "1000") for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    printed = {}
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode in (0, 1, 75), out + err
        assert "Traceback" not in err
        found = re.search(r"^issue-2: sent (\d+), deferred (\d+), failed (\d+) in", out, re.M)
        assert found, out + err
        printed[p.pid] = tuple(map(int, found.groups()))

    shown = status(project, env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    totals = dict(re.findall(r"^  (sent|deferred|failed) +(\d+)$", shown.stdout, re.M))
    assert totals == {"sent": "190", "deferred": "5", "failed": "5"}, shown.stdout
    lines = re.findall(
        r" pid (\d+): .*, sent (\d+), deferred (\d+), failed (\d+)$", shown.stdout, re.M
    )
    per_sender = {int(pid): (int(s), int(d), int(f)) for pid, s, d, f in lines}
    assert per_sender == printed, shown.stdout
    assert tuple(map(sum, zip(*per_sender.values(), strict=True))) == (190, 5, 5), shown.stdout


def test_senders_facing_a_server_that_defers_everyone_stop_and_leave_the_rest_pending(
    project: Path, smtp_server: SMTPServer, postgres_server: Postgres, postgres_url: str
) -> None:
    """Nothing accepted for retry_window with readers left: each sender stops (75) and says
    how many it deferred and how many of the list nobody tried; those stay pending."""
    smtp_server.defer.update(READERS)
    env = mailer_env(smtp_server, postgres_url, postgres_server, "off")
    env["MAILER_RETRY_WINDOW"] = "2s"
    procs = [start(project, env) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    deferred, untried = [], []
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 75, out + err
        reason = re.findall(
            r"^error: the server deferred every reader for 2s; stopped; (\d+) deferred,"
            r" (\d+) not tried; the next run continues$",
            err,
            re.M,
        )
        assert len(reason) == 1, out + err
        deferred.append(int(reason[0][0]))
        untried.append(int(reason[0][1]))
    shown = status(project, env)
    totals = dict(re.findall(r"^  (sent|deferred|failed|pending) +(\d+)$", shown.stdout, re.M))
    assert totals["sent"] == totals["failed"] == "0", shown.stdout
    assert int(totals["deferred"]) == sum(deferred)
    pending = int(totals["pending"])
    assert pending + sum(deferred) == N
    # Each counted what nobody had tried when it stopped; the last to stop, what is left.
    assert pending in untried and all(n >= pending for n in untried), (untried, pending)
    assert not smtp_server.received


def test_a_reader_another_sender_tried_since_this_one_read_the_ledger_stays_its(
    project: Path, postgres_url: str
) -> None:
    """A sender reads the ledger, then another lays the list out and records outcomes before
    the first puts its readers in the outbox: the deferred and the failed are not taken
    again (a second try at once, counted by both senders), the due retry still is."""
    settings = config.load(project, environ={"MAILER_DATABASE_URL": postgres_url})
    subscribers = [Subscriber(a, "", {}, i + 2) for i, a in enumerate(READERS[:6])]
    due = READERS[5]
    with open_ledger(settings) as ledger:
        ledger.record("issue-2", due, DEFERRED, "451 4.7.1 later", datetime.now(UTC))
        late = Audience.of(ledger, "issue-2")  # this sender reads the ledger...
        ledger.load_outbox("issue-2", READERS[:5])  # ...another lays the list out
        ledger.record("issue-2", READERS[0], DEFERRED, "451 4.7.1 later", datetime.now(UTC))
        ledger.record("issue-2", READERS[1], FAILED, "550 5.1.1 no such user")
        ledger.record("issue-2", READERS[2], SENT, "250 ok")
        claims = Claims(ledger, "issue-2", lease=60)
        owed = [(s, 0) for s in subscribers if late.skip(s) is None]
        taken = [item[0].email for item in claims.stream(owed, late.attempts) if item != LATER]
        assert sorted(taken) == [READERS[3], READERS[4], due]
        # Never tried: the two handed out and not yet sent (the due retry has a row).
        assert ledger.outbox_left("issue-2") == 2
