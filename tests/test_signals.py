"""SIGTERM, SIGHUP and SIGINT while a message is in flight: the real `mailer` script against
the SMTP server as a subprocess that holds each 250 back. One signal stops after the messages
in flight (recorded, so a rerun sends nobody twice); a second signal stops at once."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import SECRET, SENT
from smtp_server import SMTPServer

from mailer.state.ledger import Ledger

pytestmark = pytest.mark.slow  # real `mailer` processes signalled mid-send

MAILER = Path(sys.executable).with_name("mailer")  # the script beside this Python
SERVER = Path(__file__).with_name("smtp_server.py")
N = 12
READERS = [f"r{i:02d}@example.com" for i in range(N)]
CONNECTIONS = 2
RESUME_HINT = "mailer send issue-2"


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email,name\n" + "".join(f"{a},Reader {a[1:3]}\n" for a in READERS))


def mailer_env(port: int, smtp_timeout: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        {
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(port),
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_SECRET": SECRET,
            "MAILER_SMTP_TIMEOUT": f"{smtp_timeout:g}",
            "MAILER_RETRY_DELAY": "0.2",
            "MAILER_RETRY_WINDOW": "2s",
            "MAILER_RATE": "off",
            "MAILER_CONNECTIONS": str(CONNECTIONS),
        }
    )
    return env


@contextmanager
def smtp_subprocess(out: Path, delay_250: float, pipelining: bool = False) -> Iterator[int]:
    """`python tests/smtp_server.py --port 0 --out DIR --delay-250 S`; yields its port."""
    argv = [sys.executable, str(SERVER), "--port", "0", "--out", str(out)]
    argv += ["--delay-250", str(delay_250), *(["--pipelining"] if pipelining else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the SMTP server subprocess never said READY"
        word, port = proc.stdout.readline().split()
        assert word == "READY"
        yield int(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def received(out: Path) -> list[str]:
    """Recipients of every message the subprocess server took, in order (with repeats)."""
    log = out / "recipients.log"
    return log.read_text().split() if log.exists() else []


def _default_sigint() -> None:
    # A background child of a non-interactive shell inherits SIGINT ignored; Python then
    # keeps ignoring it. Give the child the default, as a terminal's Ctrl-C would find it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_send(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(MAILER), "send", "issue-2", "--yes"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def wait_for_messages(out: Path, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 30
    while len(received(out)) < count:
        if proc.poll() is not None:
            pytest.fail(f"the send ended early ({proc.returncode}): {proc.communicate()}")
        assert time.monotonic() < deadline, "the send never got going"
        time.sleep(0.01)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=10)


def ledger_sent(project: Path) -> set[str]:
    with Ledger(project / ".mailer") as ledger:
        return {d.email for d in ledger.deliveries("issue-2") if d.state == SENT}


def rerun(project: Path, server: SMTPServer, smtp_timeout: float) -> None:
    """The same command again, to the end, against a server that answers at once."""
    done = subprocess.run(
        [str(MAILER), "send", "issue-2", "--yes"],
        cwd=project,
        env=mailer_env(server.port, smtp_timeout),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert ledger_sent(project) == set(READERS)


# With PIPELINING offered (default depth 2) each connection also has the next envelope
# answered 354 when the signal comes: that body is sent and its reply awaited too.
PIPELINING = pytest.mark.parametrize(
    "pipelining", [False, True], ids=["no-pipelining", "pipelining"]
)


@PIPELINING
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_one_signal_finishes_the_messages_in_flight_and_says_how_to_resume(
    sig: signal.Signals, project: Path, tmp_path: Path, smtp_server: SMTPServer, pipelining: bool
) -> None:
    delay, smtp_timeout = 1.0, 3.0
    out = tmp_path / "smtp-out"
    with smtp_subprocess(out, delay, pipelining) as port:
        proc = start_send(project, mailer_env(port, smtp_timeout))
        try:
            wait_for_messages(out, proc, 2)  # both connections now wait for a delayed 250
            proc.send_signal(sig)
            # Bounded: each owed reply is awaited at most smtp_timeout, then the run ends.
            stdout, stderr = proc.communicate(timeout=smtp_timeout + 10)
        finally:
            stop(proc)
        first = received(out)
    assert proc.returncode == 75, stdout + stderr
    assert RESUME_HINT in stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert len(first) < N  # it really stopped half-way
    # The messages in flight were finished and recorded: the ledger holds all the server took.
    assert ledger_sent(project) == set(first)

    rerun(project, smtp_server, smtp_timeout)
    total = Counter(first) + smtp_server.by_recipient()
    assert total == Counter(dict.fromkeys(READERS, 1))  # 0 duplicates, 0 lost


@PIPELINING
def test_a_second_signal_stops_at_once_and_keeps_every_reply_received(
    project: Path, tmp_path: Path, smtp_server: SMTPServer, pipelining: bool
) -> None:
    delay, smtp_timeout = 2.0, 4.0
    out = tmp_path / "smtp-out"
    with smtp_subprocess(out, delay, pipelining) as port:
        proc = start_send(project, mailer_env(port, smtp_timeout))
        try:
            # Two answered (recorded), two more now waiting for their 250 (in flight).
            wait_for_messages(out, proc, CONNECTIONS + 2)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=smtp_timeout + 10)
        finally:
            stop(proc)
        first = received(out)
    assert proc.returncode == 75, stdout + stderr
    assert "Traceback" not in stdout + stderr
    recorded = ledger_sent(project)
    assert recorded <= set(first)  # nothing is called sent that the server did not take
    in_flight = set(first) - recorded
    assert len(in_flight) <= CONNECTIONS, in_flight  # every reply already received was recorded
    assert in_flight, "it waited for the delayed 250s instead of stopping at once"
    assert len(recorded) >= 2, recorded  # the first answered messages

    rerun(project, smtp_server, smtp_timeout)
    total = Counter(first) + smtp_server.by_recipient()
    assert set(total) == set(READERS)  # none lost
    twice = {r: n for r, n in total.items() if n > 1}
    assert set(twice) <= in_flight, twice  # only a message in flight can arrive twice
    assert all(n == 2 for n in twice.values()), twice
