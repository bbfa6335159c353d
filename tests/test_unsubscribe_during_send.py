"""Readers who unsubscribe while a send is under way get nothing more than 1 s later.

60 readers at 10/s (the real `mailer` script) against an in-process SMTP server that notes
when each copy arrives; 2 s in, five of the last readers are suppressed with
`mailer unsubscribe ADDR` (subprocesses) and one more with a one-click POST to the web app.
A second test does the same with `mailer bounces` reading mail sent to the List-Unsubscribe
mailto: address (issue 12: suppressions from the bounce mailbox land in a running send).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from urllib.request import Request, urlopen

import pytest
from conftest import SECRET, SENT, smtp_env
from smtp_server import SMTPServer

from mailer import config
from mailer.deliver import tokens
from mailer.state.ledger import Ledger, open_ledger
from mailer.web import routes as web
from mailer.web import wsgi

pytestmark = pytest.mark.slow  # real `mailer` processes over seconds of sending

MAILER = Path(sys.executable).with_name("mailer")  # the script beside this Python
LIST_ID = "nlp-newsletter.example.org"  # list_id in mailer.toml
N = 60
READERS = [f"r{i:02d}@example.com" for i in range(N)]
BY_HAND = READERS[-6:-1]  # `mailer unsubscribe ADDR`
ONE_CLICK = READERS[-1]  # POST /unsubscribe?token=...
SUPPRESSED = [*BY_HAND, ONE_CLICK]
GRACE = 1.0  # seconds a send may take to notice a suppression


@pytest.fixture(params=["sqlite", "postgresql", "store"])
def project(
    new_project: Callable[[str], Path],
    request: pytest.FixtureRequest,
) -> Path:
    """The project; with postgresql its ledger is a database shared by the send, the
    `mailer unsubscribe` processes and the web app (issue 14: unsubscribes recorded by the
    web host reach every sender within a second), the password in PGPASSWORD; with store
    the same list is read from the store (SQLite), a page at a time while sending."""
    root = new_project("email,name\n" + "".join(f"{a},Reader {a[1:3]}\n" for a in READERS))
    if request.param == "postgresql":
        url = request.getfixturevalue("database_with_password")
        with (root / "mailer.toml").open("a") as toml:
            toml.write(f'database_url = "{url}"\n')
    if request.param == "store":
        with (root / "mailer.toml").open("a") as toml:
            toml.write('subscribers = "store"\n')
        imported = subprocess.run(
            [str(MAILER), "subscribers", "import", "subscribers.csv"],
            cwd=root,
            env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
            capture_output=True,
            text=True,
        )
        assert imported.returncode == 0, imported.stdout + imported.stderr
    return root


def the_ledger(project: Path) -> Ledger:
    return open_ledger(config.load(project, environ={"MAILER_SECRET": SECRET}))


@pytest.fixture
def site(project: Path) -> Iterator[int]:
    """The web app (one-click unsubscribe) on 127.0.0.1, sharing the project's ledger."""
    settings = config.load(project, environ={"MAILER_SECRET": SECRET})
    app = web.make_app(settings)
    server = wsgi.Server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.stop()
        thread.join(5)
        server.close()
        close = getattr(app, "close", None)
        if close is not None:
            close()


def env(server: SMTPServer) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    out.update(smtp_env(server))
    out.update({"MAILER_SMTP_TIMEOUT": "1", "MAILER_RETRY_DELAY": "0.2", "MAILER_RATE": "10/s"})
    return out


def one_click(port: int, address: str) -> int:
    token = tokens.sign(SECRET, LIST_ID, address)
    request = Request(
        f"http://127.0.0.1:{port}/unsubscribe?token={quote(token)}",
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urlopen(request, timeout=10) as reply:
        return int(reply.status)


def start_send(project: Path, server: SMTPServer) -> subprocess.Popen[str]:
    """`mailer send issue-2 --yes` as a subprocess, returned once 15 copies have arrived
    (~1.5-2 s into the send at 10/s)."""
    send = subprocess.Popen(
        [str(MAILER), "send", "issue-2", "--yes"],
        cwd=project,
        env=env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(server.received) < 15:
        if send.poll() is not None or time.monotonic() >= deadline:
            send.kill()
            out, err = send.communicate(timeout=10)
            pytest.fail(f"the send never got going (exit {send.returncode}): {out}{err}")
        time.sleep(0.01)
    return send


# Pipelining (depth 2) keeps the next reader's envelope in flight: the check before each
# message must still stop every copy within the grace, offered or not.
@pytest.mark.parametrize("pipelining", [False, True], ids=["no-pipelining", "pipelining"])
def test_unsubscribes_during_a_send_stop_their_copies(
    project: Path, smtp_server: SMTPServer, site: int, pipelining: bool
) -> None:
    smtp_server.pipelining = pipelining
    send = start_send(project, smtp_server)
    try:
        by_hand = [
            subprocess.Popen(
                [str(MAILER), "unsubscribe", address],
                cwd=project,
                env=env(smtp_server),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for address in BY_HAND
        ]
        assert one_click(site, ONE_CLICK) == 200
        for proc in by_hand:
            output, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, output
        suppressed_by = time.time()
        assert send.poll() is None, "the send was over before the unsubscribes: nothing tested"
        stdout, stderr = send.communicate(timeout=60)
    finally:
        if send.poll() is None:
            send.kill()
            send.communicate(timeout=10)
    assert send.returncode == 0, stdout + stderr  # everyone else was sent
    assert "Traceback" not in stderr

    shared = "database_url" in (project / "mailer.toml").read_text()
    assert (project / ".mailer" / "ledger.db").exists() is not shared  # the one it says
    with the_ledger(project) as ledger:
        when = {s.email: s.created_at.timestamp() for s in ledger.suppressions()}
        state = {d.email: d.state for d in ledger.deliveries("issue-2")}
    assert set(when) == set(SUPPRESSED)
    assert all(t <= suppressed_by for t in when.values())
    # The send went on after the suppressions: copies arrived after the last of them.
    assert max(m.at for m in smtp_server.received) > max(when.values())

    for address in SUPPRESSED:
        late = [
            t - when[address] for t in smtp_server.arrivals(address) if t > when[address] + GRACE
        ]
        assert not late, f"{address}: a copy arrived {late[0]:.2f}s after the unsubscribe"
        assert state.get(address) != SENT, address
    others = [a for a in READERS if a not in SUPPRESSED]
    got = smtp_server.by_recipient()
    assert set(got) <= set(READERS)
    assert {a: got[a] for a in others} == dict.fromkeys(others, 1)  # each exactly once
    assert all(state[a] == SENT for a in others)

    # The token posted is the one each reader's List-Unsubscribe carries.
    first = smtp_server.received[0]
    [rcpt] = first.rcpt_tos
    link = first.message()["List-Unsubscribe"].split(",")[0].strip().strip("<>")
    assert parse_qs(urlsplit(link).query)["token"] == [tokens.sign(SECRET, LIST_ID, rcpt)]


MAILTO = READERS[-4:]  # mail to unsubscribe@example.org, read by `mailer bounces`


def mailto_unsubscribe(address: str, n: int) -> bytes:
    return (
        f"Return-Path: <{address}>\r\nFrom: {address}\r\nTo: unsubscribe@example.org\r\n"
        f"Subject: unsubscribe\r\nDate: Thu, 03 Dec 2026 08:30:00 +0000\r\n"
        f"Message-ID: <unsub.{n}@example.com>\r\n\r\nunsubscribe\r\n"
    ).encode()


def test_mailto_unsubscribes_read_by_mailer_bounces_stop_a_running_send(
    project: Path, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n, address in enumerate(MAILTO):
        (maildir / "new" / f"{n}.eml").write_bytes(mailto_unsubscribe(address, n))
    send = start_send(project, smtp_server)
    try:
        bounces = subprocess.run(
            [str(MAILER), "bounces", "--maildir", str(maildir)],
            cwd=project,
            env=env(smtp_server),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bounces.returncode == 0, bounces.stdout + bounces.stderr
        assert "4 unsubscribes" in bounces.stdout, bounces.stdout
        assert send.poll() is None, "the send was over before the unsubscribes: nothing tested"
        stdout, stderr = send.communicate(timeout=60)
    finally:
        if send.poll() is None:
            send.kill()
            send.communicate(timeout=10)
    assert send.returncode == 0, stdout + stderr
    with the_ledger(project) as ledger:
        when = {s.email: s.created_at.timestamp() for s in ledger.suppressions()}
        state = {d.email: d.state for d in ledger.deliveries("issue-2")}
    assert set(when) == set(MAILTO)
    for address in MAILTO:
        late = [t for t in smtp_server.arrivals(address) if t > when[address] + GRACE]
        assert not late, f"{address}: a copy arrived after its mailto unsubscribe was read"
        assert state.get(address) != SENT, address
    got = smtp_server.by_recipient()
    others = [a for a in READERS if a not in MAILTO]
    assert {a: got[a] for a in others} == dict.fromkeys(others, 1)
