"""`mailer backup FILE` while a real send runs: every copy is one consistent moment.

The send is a real `mailer` process talking to the aiosmtpd server; the backups are real
`mailer backup` processes taken while it runs. Each copy must open, pass SQLite's integrity
check, and hold a prefix of what the send recorded: never more than the server received.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import postgres_env, smtp_env
from postgres import Postgres
from smtp_server import SMTPServer

pytestmark = pytest.mark.slow  # real `mailer send` and `mailer backup` processes side by side

N = 150
ADDRESSES = [f"r{i:03d}@example.com" for i in range(N)]
MAILER = Path(sys.executable).with_name("mailer")


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email,name\n" + "".join(f"{a},R{i}\n" for i, a in enumerate(ADDRESSES)))


def mailer(project: Path, *args: str) -> list[str]:
    return [str(MAILER), "-C", str(project), *args]


def run_env(server: SMTPServer | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(smtp_env(server) if server else smtp_env(port=1))
    return env


def sent_in(copy: Path) -> int:
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(db.execute("SELECT count(*) FROM deliveries WHERE state = 'sent'").fetchone()[0])


def test_backups_taken_during_a_send_are_consistent_and_grow(
    project: Path, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    send = subprocess.Popen(
        mailer(project, "send", "issue-2", "--yes", "--rate", "30/s", "--batch-size", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=run_env(smtp_server),
    )
    copies: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(smtp_server.received) < 10:
            assert send.poll() is None, send.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for i in range(3):  # three copies while it runs (the send takes about 5 s)
            assert send.poll() is None, "the send ended before the copies were taken"
            dest = tmp_path / f"copy-{i}.db"
            done = subprocess.run(
                mailer(project, "backup", str(dest)),
                capture_output=True,
                text=True,
                timeout=60,
                env=run_env(),
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"backed up the ledger to {dest} (")
            assert done.stdout.rstrip().endswith("bytes, sqlite backup API)")
            received = len(smtp_server.received)
            copies.append(sent_in(dest))
            assert copies[-1] <= received  # a copy never claims more than was delivered
            time.sleep(0.2)
    finally:
        out, err = send.communicate(timeout=120)
    assert send.returncode == 0, err
    assert copies == sorted(copies) and copies[-1] > copies[0] >= 1, copies
    assert copies[-1] < N  # the copies were taken while the send ran
    final = tmp_path / "final.db"
    done = subprocess.run(
        mailer(project, "backup", str(final)), capture_output=True, text=True, env=run_env()
    )
    assert done.returncode == 0, done.stderr
    assert sent_in(final) == N


def test_backup_refuses_to_replace_a_file(project: Path, tmp_path: Path) -> None:
    (project / ".mailer").mkdir()
    sqlite3.connect(project / ".mailer" / "ledger.db").close()
    dest = tmp_path / "there.db"
    dest.write_text("precious")
    done = subprocess.run(
        mailer(project, "backup", str(dest)), capture_output=True, text=True, env=run_env()
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"Error: {dest} exists: not replacing it"
    assert dest.read_text() == "precious"


def test_backup_with_nothing_recorded_says_so(project: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        mailer(project, "backup", str(tmp_path / "x.db")),
        capture_output=True,
        text=True,
        env=run_env(),
    )
    assert done.returncode == 2
    ledger = (project / ".mailer" / "ledger.db").resolve()
    assert done.stderr == f"Error: no ledger at {ledger}: nothing has been recorded yet\n"
    assert not (tmp_path / "x.db").exists()


def test_backup_of_a_postgresql_ledger_is_a_pg_dump(
    project: Path, tmp_path: Path, postgres_server: Postgres, postgres_url: str
) -> None:
    env = {**run_env(), **postgres_env(postgres_server), "MAILER_DATABASE_URL": postgres_url}
    done = subprocess.run(
        mailer(project, "unsubscribe", "ada@example.com"), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    dest = tmp_path / "ledger.dump"
    done = subprocess.run(
        mailer(project, "backup", str(dest)), capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("bytes, pg_dump)")
    assert dest.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    listing = subprocess.run(
        ["pg_restore", "--list", str(dest)], capture_output=True, text=True, check=True
    )
    assert " TABLE public suppressions " in listing.stdout
    assert postgres_server.password not in done.stdout + done.stderr
