"""A send killed half-way (kill -9, Ctrl-C), then the same command again: one copy each."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BOUNCED, DEFERRED, FAILED, SENT, MailerCli, smtp_env
from smtp_server import SMTPServer

from mailer.state.ledger import Ledger

pytestmark = pytest.mark.slow  # kills and reruns real `mailer send` processes

ROOT = Path(__file__).resolve().parent.parent
N = 200
CONNECTIONS = 2
ADDRESSES = [f"r{i:03d}@example.com" for i in range(N)]


@pytest.fixture(params=["csv", "store"])
def project(
    new_project: Callable[[str], Path], request: pytest.FixtureRequest, mailer_cli: MailerCli
) -> Path:
    """The list as a CSV, or (store) the same readers in the store, read while sending."""
    rows = "".join(f"{a},Reader {i},City {i}\n" for i, a in enumerate(ADDRESSES))
    root = new_project("email,name,city\n" + rows)
    if request.param == "store":
        with (root / "mailer.toml").open("a") as toml:
            toml.write('subscribers = "store"\n')
        imported = mailer_cli(root, "subscribers", "import", "subscribers.csv")
        assert imported.exit_code == 0, imported.output
    return root


def start_send(project: Path, server: SMTPServer) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(smtp_env(server))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailer",
            "-C",
            str(project),
            "send",
            "issue-2",
            "--yes",
            "--rate",
            "50/s",
            "--connections",
            str(CONNECTIONS),
            "--batch-size",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def wait_for(server: SMTPServer, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + 60
    while len(server.received) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the send never got going"
        time.sleep(0.01)


Finish = Callable[[Path, SMTPServer], None]


@pytest.fixture
def finish(mailer_cli: MailerCli) -> Finish:
    """finish(project, server): the same command again (in-process, to keep the test quick),
    to completion."""

    def run(project: Path, server: SMTPServer) -> None:
        args = ["send", "issue-2", "--yes", "--rate", "off", "--connections", str(CONNECTIONS)]
        result = mailer_cli(project, *args, env=smtp_env(server))
        assert result.exit_code == 0, result.output
        assert "interrupted" not in result.output

    return run


def ledger_counts(project: Path) -> dict[str, int]:
    with Ledger(project / ".mailer") as ledger:
        return ledger.counts("issue-2")


def copies(server: SMTPServer) -> dict[str, list[str]]:
    """Message-IDs received per recipient."""
    out: dict[str, list[str]] = defaultdict(list)
    for m in server.received:
        for rcpt in m.rcpt_tos:
            found = re.search(rb"(?mi)^Message-ID: (<[^>]+>)\r$", m.data.split(b"\r\n\r\n")[0])
            assert found is not None
            out[rcpt.lower()].append(found.group(1).decode())
    return out


# The server offers PIPELINING or not. At the default pipeline_depth (2) a connection has
# two transactions in flight, but only one of them has its body sent (the other waits for
# its 354): the bound "connections x bodies in flight" stays CONNECTIONS.
@pytest.mark.parametrize("pipelining", [False, True], ids=["no-pipelining", "pipelining"])
def test_kill_9_mid_send_then_rerun(
    project: Path,
    smtp_server: SMTPServer,
    pipelining: bool,
    finish: Finish,
) -> None:
    smtp_server.pipelining = pipelining
    smtp_server.delay_250 = 0.02  # each reply a moment late: copies really are in flight
    proc = start_send(project, smtp_server)
    try:
        wait_for(smtp_server, proc, 40)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = len(smtp_server.received)
    assert 40 <= before < N  # really stopped half-way

    with Ledger(project / ".mailer") as ledger:
        recorded = {d.email for d in ledger.deliveries("issue-2") if d.state == SENT}
    got_before = {r.lower() for m in smtp_server.received for r in m.rcpt_tos}
    # Only messages in flight (at most one per connection) can be received but unrecorded.
    assert len(got_before - recorded) <= CONNECTIONS
    assert recorded <= got_before  # nothing is marked sent that the server did not accept

    finish(project, smtp_server)

    got = copies(smtp_server)
    assert set(got) == set(ADDRESSES)
    extra = {a: ids for a, ids in got.items() if len(ids) > 1}
    assert sum(len(ids) - 1 for ids in extra.values()) <= CONNECTIONS, extra
    for ids in extra.values():
        assert len(set(ids)) == 1  # a duplicate carries the same Message-ID: clients collapse it
    assert ledger_counts(project) == {SENT: N, DEFERRED: 0, FAILED: 0, BOUNCED: 0}

    # And once more: nothing left to send.
    finish(project, smtp_server)
    assert sum(len(ids) for ids in copies(smtp_server).values()) == len(smtp_server.received)
    assert len(smtp_server.received) == N + sum(len(ids) - 1 for ids in extra.values())


@pytest.mark.parametrize("pipelining", [False, True], ids=["no-pipelining", "pipelining"])
def test_ctrl_c_mid_send_then_rerun_gives_no_duplicates(
    project: Path,
    smtp_server: SMTPServer,
    pipelining: bool,
    finish: Finish,
) -> None:
    smtp_server.pipelining = pipelining
    smtp_server.delay_250 = 0.02  # each reply a moment late: copies really are in flight
    proc = start_send(project, smtp_server)
    try:
        wait_for(smtp_server, proc, 40)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, err.decode()
    assert b"interrupted: run `mailer send issue-2` again to resume" in out
    assert b"Traceback" not in err
    before = len(smtp_server.received)
    assert before < N
    # Everything the server accepted is in the ledger: the messages in flight were finished.
    assert ledger_counts(project)[SENT] == before

    finish(project, smtp_server)
    got = copies(smtp_server)
    assert set(got) == set(ADDRESSES)
    assert all(len(ids) == 1 for ids in got.values())
    assert ledger_counts(project) == {SENT: N, DEFERRED: 0, FAILED: 0, BOUNCED: 0}
