"""A deleted, replaced or older ledger never makes mailer send an issue twice, silently.

Each test runs real `mailer` processes against the aiosmtpd server (and `mailer serve` under
waitress). What earlier runs leave outside the ledger (state/continuity.py) lets a send tell
the ledger they wrote from a new one or an older copy; it then refuses, naming what it knows,
until --ledger-was-reset.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import SECRET, smtp_env
from smtp_server import SMTPServer

from mailer.deliver import tokens
from mailer.state.ledger import Ledger

pytestmark = pytest.mark.slow  # real `mailer` processes, sends and `mailer serve`

MAILER = Path(sys.executable).with_name("mailer")
N = 20
ADDRESSES = [f"r{i:02d}@example.com" for i in range(N)]
LIST_ID = "nlp-newsletter.example.org"  # list_id in mailer.toml
HINT = "hint: if the ledger was reset or restored on purpose, add --ledger-was-reset"


def rows(addresses: list[str]) -> str:
    return "email,name\n" + "".join(f"{a},Reader\n" for a in addresses)


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project(rows(ADDRESSES))


def env_for(server: SMTPServer | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(smtp_env(server) if server else smtp_env(port=1))
    return env


def mailer(
    project: Path, server: SMTPServer | None, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAILER), "-C", str(project), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(server),
    )


def send(project: Path, server: SMTPServer, *extra: str) -> subprocess.CompletedProcess[str]:
    return mailer(project, server, "send", "issue-2", "--yes", "--rate", "off", *extra)


def sending(project: Path, server: SMTPServer, rate: str, until: int) -> subprocess.Popen[str]:
    """A real `mailer send` at `rate`, once the server holds `until` messages (still going)."""
    proc = subprocess.Popen(
        [str(MAILER), "-C", str(project), "send", "issue-2", "--yes", "--rate", rate],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(server),
    )
    deadline = time.monotonic() + 60
    while len(server.received) < until:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the send never got going"
        time.sleep(0.01)
    return proc


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("Error")]


def test_a_deleted_ledger_is_refused_until_the_author_says_so(
    project: Path, smtp_server: SMTPServer
) -> None:
    first = send(project, smtp_server)
    assert first.returncode == 0, first.stderr
    assert len(smtp_server.received) == N
    (project / ".mailer" / "ledger.db").unlink()

    again = send(project, smtp_server)
    assert again.returncode == 2, again.stderr
    (line,) = error_lines(again)
    assert re.fullmatch(
        r"Error: issue-2 was started on \S+ in another ledger \(.*ledger\.db, id \w{8},"
        r" 20 copies sent\); the ledger at .*ledger\.db \(id \w{8}\) holds 0: sending now"
        r" could mail those readers again",
        line,
    ), line
    assert HINT in again.stderr
    assert len(smtp_server.received) == N  # nobody mailed twice

    reset = send(project, smtp_server, "--ledger-was-reset")
    assert reset.returncode == 0, reset.stderr
    assert len(smtp_server.received) == 2 * N  # the author said so: everyone again
    assert send(project, smtp_server).returncode == 0  # the new ledger is now the one
    assert len(smtp_server.received) == 2 * N


def test_an_older_backup_restored_is_refused(project: Path, smtp_server: SMTPServer) -> None:
    half = ADDRESSES[: N // 2]
    (project / "subscribers.csv").write_text(rows(half), encoding="utf-8")
    assert send(project, smtp_server).returncode == 0
    backup = project.parent / "ledger-backup.db"
    done = mailer(project, None, "backup", str(backup))
    assert done.returncode == 0, done.stderr
    (project / "subscribers.csv").write_text(rows(ADDRESSES), encoding="utf-8")
    assert send(project, smtp_server).returncode == 0
    assert len(smtp_server.received) == N

    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
        (project / ".mailer" / name).unlink(missing_ok=True)
    shutil.copy(backup, project / ".mailer" / "ledger.db")  # the documented restore
    again = send(project, smtp_server)

    assert again.returncode == 2, again.stderr
    (line,) = error_lines(again)
    assert re.fullmatch(
        r"Error: issue-2: earlier runs recorded 20 copies as sent \(last on \S+\) but the"
        r" ledger at .*ledger\.db holds 10: it is an older copy, and sending now could mail up"
        r" to 10 readers again",
        line,
    ), line
    assert len(smtp_server.received) == N


def test_a_ledger_that_vanishes_mid_send_then_a_plain_rerun_mails_nobody_twice(
    project: Path, smtp_server: SMTPServer
) -> None:
    proc = sending(project, smtp_server, "10/s", until=5)
    (project / ".mailer" / "ledger.db").unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, out + err
    assert "was deleted or replaced while in use" in err
    sent_first = len(smtp_server.received)
    assert sent_first < N

    again = send(project, smtp_server)
    assert again.returncode == 2, again.stderr
    assert "in another ledger" in error_lines(again)[0]
    assert len(smtp_server.received) == sent_first
    assert max(Counter(m.rcpt_tos[0] for m in smtp_server.received).values()) == 1


def test_serve_stores_unsubscribes_in_a_ledger_restored_under_it(project: Path) -> None:
    (project / ".mailer").mkdir()
    with Ledger(project / ".mailer") as ledger:
        ledger.suppress("first@example.com", "manual", "cli")
    backup = project.parent / "copy.db"
    with (
        sqlite3.connect(project / ".mailer" / "ledger.db") as src,
        sqlite3.connect(backup) as dst,
    ):
        src.backup(dst)

    env = env_for(None)
    env["MAILER_SECRET"] = SECRET
    proc = subprocess.Popen(
        [str(MAILER), "-C", str(project), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"at http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert match
        port = int(match.group(1))

        def one_click(address: str) -> int:
            token = tokens.sign(SECRET, LIST_ID, address)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(
                "POST",
                f"/unsubscribe?token={quote(token)}",
                body=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            status = conn.getresponse().status
            conn.close()
            return status

        assert one_click("before@example.com") == 200
        for name in ("ledger.db-wal", "ledger.db-shm"):
            (project / ".mailer" / name).unlink(missing_ok=True)
        os.replace(backup, project / ".mailer" / "ledger.db")  # restored while serving
        for i in range(5):
            assert one_click(f"after{i}@example.com") == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    with Ledger(project / ".mailer") as ledger:
        stored = sorted(s.email for s in ledger.suppressions())
    assert stored == [f"after{i}@example.com" for i in range(5)] + ["first@example.com"]


def test_a_wal_overwritten_mid_send_is_reported_and_the_next_send_refuses(
    new_project: Callable[[str], Path], smtp_server: SMTPServer
) -> None:
    readers = [f"w{i:03d}@example.com" for i in range(300)]
    project = new_project(rows(readers), name="wal")
    proc = sending(project, smtp_server, "100/s", until=100)
    wal = project / ".mailer" / "ledger.db-wal"
    with open(wal, "r+b") as f:  # garbage over the whole write-ahead log, header included
        f.write(os.urandom(wal.stat().st_size))
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 74, out + err
    assert f"issue-2: sent {len(readers)}, deferred 0, failed 0" in out  # the server's truth
    assert "error: " in err and "the ledger failed its integrity check" in err, err
    assert "restore the latest `mailer backup` copy" in err

    again = send(project, smtp_server)
    assert again.returncode == 74, again.stderr
    (line,) = error_lines(again)
    assert "ledger.db: cannot use the ledger: database disk image is malformed" in line
    assert len(smtp_server.received) == len(readers)  # nobody mailed twice
