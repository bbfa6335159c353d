"""`mailer bounces --imap` against a real IMAP server: Debian's Dovecot, started by this module
on 127.0.0.1 with a private configuration (its own base_dir, a passwd-file user, Maildirs under
a temporary folder, ssl = required with a throwaway CA). The bounce fixtures are APPENDed over
IMAP, then read, classified and moved by `mailer bounces --imap` as a subprocess.

Needs root and /usr/sbin/dovecot (`make system` installs dovecot-imapd).
"""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES, SENT
from smtp_server import TLSFiles, make_tls_files
from test_bounces import READERS, SUMMARY_ALL, TABLE

from mailer import config
from mailer.feedback.mailboxes import Imap
from mailer.feedback.process import process
from mailer.state.ledger import Ledger
from mailer.states import Reason

DOVECOT = Path("/usr/sbin/dovecot")
MAILER = Path(sys.executable).with_name("mailer")
REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bounces@example.com", "imap-test-Pa55word"
SECRET = "test-secret"  # the fixtures' Message-ID digests are made with it

pytestmark = [
    pytest.mark.skipif(
        not DOVECOT.exists(), reason="Dovecot is not installed: `make system` installs it"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Dovecot must be started as root"),
]


@dataclass
class Dovecot:
    port: int
    tls: TLSFiles
    base: Path
    log: Path

    def client(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=10)
        conn.login(USER, PASSWORD)
        return conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(base: Path, port: int, tls: TLSFiles) -> str:
    dh = Path("/usr/share/dovecot/dh.pem")
    return f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{tls.cert}
ssl_key = <{tls.key}
{f"ssl_dh = <{dh}" if dh.exists() else ""}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:{base}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    # Not under tmp_path: pytest makes those 0700 for root, and Dovecot's login processes
    # (dovenull) and the mail user (nobody) must reach their folders.
    base = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
    base.chmod(0o755)
    tls_dir = base / "tls"
    tls_dir.mkdir()
    tls = make_tls_files(tls_dir)
    for f in (tls.cert, tls.key, tls.ca):
        f.chmod(0o644)
    (base / "mail").mkdir()
    nobody = 65534
    os.chown(base / "mail", nobody, nobody)
    (base / "users").write_text(
        f"{USER}:{{PLAIN}}{PASSWORD}:{nobody}:{nobody}::{base}/mail/{USER}\n"
    )
    port = _free_port()
    conf = base / "dovecot.conf"
    conf.write_text(_config(base, port, tls))
    server = Dovecot(port, tls, base, base / "dovecot.log")
    proc = subprocess.Popen(
        [str(DOVECOT), "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                server.client().logout()
                break
            except (OSError, imaplib.IMAP4.error):
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    log = server.log.read_text() if server.log.exists() else ""
                    pytest.fail(f"Dovecot did not start:\n{out}\n{log}")
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    (root / "issues").mkdir()
    with Ledger(root / ".mailer") as ledger:
        for reader in READERS:
            ledger.record("issue-2", reader, SENT, "250 ok")
    return root


def _env(dovecot: Dovecot, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SECRET=SECRET,
        MAILER_BOUNCE_IMAP_HOST="127.0.0.1",
        MAILER_BOUNCE_IMAP_PORT=str(dovecot.port),
        MAILER_BOUNCE_IMAP_USER=USER,
        MAILER_BOUNCE_IMAP_PASSWORD=PASSWORD,
        MAILER_BOUNCE_IMAP_CAFILE=str(dovecot.tls.ca),
    )
    env.update(changes)
    return env


def _bounces(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(MAILER), "bounces", "--imap", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _reset(dovecot: Dovecot, names: list[str]) -> None:
    """Empty INBOX and processed, then APPEND these fixtures to INBOX."""
    conn = dovecot.client()
    for folder in ("INBOX", "processed"):
        typ, count = conn.select(folder)
        if typ == "OK" and count[0] != b"0":
            conn.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        if typ == "OK":
            conn.close()  # expunges; and a selected folder must not be deleted under us
    conn.delete("processed")
    for name in names:
        data = (FIXTURES / "bounces" / name).read_bytes().replace(b"\r\n", b"\n")
        typ, _ = conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), data)
        assert typ == "OK"
    conn.logout()


def _folder(dovecot: Dovecot, folder: str) -> list[tuple[bytes, bytes]]:
    """(flags, first line of Subject) of each message in a folder ([] if it does not exist)."""
    conn = dovecot.client()
    try:
        typ, count = conn.select(folder, readonly=True)
        if typ != "OK" or count[0] == b"0":
            return []
        typ, data = conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if typ != "OK" or data == [None]:
            return []
        return [(d[0], d[1].strip()) for d in data if isinstance(d, tuple)]
    finally:
        conn.logout()


def test_imap_reads_classifies_moves_and_a_second_run_changes_nothing(
    dovecot: Dovecot, project: Path
) -> None:
    _reset(dovecot, sorted(TABLE))
    env = _env(dovecot)
    first = _bounces(project, env, "-v")
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == SUMMARY_ALL
    assert "  hard bounce  gone@example.net  issue-2  5.1.1 " in first.stdout
    assert len(_folder(dovecot, "processed")) == 10  # created on the way
    left = _folder(dovecot, "INBOX")
    assert len(left) == 5
    assert all(b"\\Seen" not in flags for flags, _ in left)  # read with BODY.PEEK: untouched
    with Ledger(project / ".mailer") as ledger:
        reasons = {s.email: s.reason for s in ledger.suppressions()}
    assert reasons["gone@example.net"] == Reason.BOUNCED
    assert reasons["complainer@yahoo.example"] == Reason.COMPLAINED
    assert len(reasons) == 7

    second = _bounces(project, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "read 5: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 5 not understood"
    ]
    # A copy of one it handled comes in again: already handled, and moved too.
    conn = dovecot.client()
    data = (FIXTURES / "bounces" / "gmail-5.1.1.eml").read_bytes()
    conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), data)
    conn.logout()
    third = _bounces(project, env, "--keep")
    assert third.stdout.splitlines() == [
        "read 6: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 1 already handled,"
        " 5 not understood"
    ]
    assert len(_folder(dovecot, "INBOX")) == 6  # --keep
    fourth = _bounces(project, env)
    assert fourth.stdout.splitlines()[0].startswith("read 6: ")
    assert (len(_folder(dovecot, "INBOX")), len(_folder(dovecot, "processed"))) == (5, 11)
    with Ledger(project / ".mailer") as ledger:
        assert len(ledger.suppressions()) == 7


def test_an_untrusted_certificate_is_exit_69(dovecot: Dovecot, project: Path) -> None:
    env = _env(dovecot)
    del env["MAILER_BOUNCE_IMAP_CAFILE"]  # the system's CAs do not know the test CA
    done = _bounces(project, env)
    assert done.returncode == 69, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "TLS certificate is not trusted" in error[0], done.stderr


def test_an_unreachable_server_is_exit_69(dovecot: Dovecot, project: Path) -> None:
    port = _free_port()  # nobody listens there
    done = _bounces(project, _env(dovecot, MAILER_BOUNCE_IMAP_PORT=str(port)))
    assert done.returncode == 69, done.stderr
    assert done.stderr.splitlines()[0].startswith(
        f"Error: cannot reach the IMAP server at 127.0.0.1:{port}: "
    ), done.stderr


def test_a_missing_folder_is_a_setting_error(dovecot: Dovecot, project: Path) -> None:
    done = _bounces(project, _env(dovecot, MAILER_BOUNCE_IMAP_FOLDER="No Such Folder"))
    assert done.returncode == 2, done.stderr
    assert "cannot open folder 'No Such Folder'" in done.stderr


def test_without_move_it_copies_deletes_and_expunges_only_that_message(
    dovecot: Dovecot, project: Path
) -> None:
    """A server without MOVE (RFC 6851): COPY, \\Deleted, UID EXPUNGE (UIDPLUS) of that UID.
    The same Dovecot, with MOVE taken off the list the client works from."""
    _reset(dovecot, ["postfix-5.1.1.eml", "garbage.eml"])
    conn = dovecot.client()  # someone else's message marked \\Deleted: it must survive
    conn.append("INBOX", "(\\Deleted)", imaplib.Time2Internaldate(time.time()), b"Subject: x\n\nx")
    conn.logout()
    environ = {k: v for k, v in _env(dovecot).items() if k.startswith("MAILER_")}
    settings = config.load(project, environ=environ)
    box = Imap(settings)
    try:
        assert {"MOVE", "UIDPLUS"} <= box.capabilities  # asked again after the login
        box.capabilities.discard("MOVE")
        report = process(settings, box)
    finally:
        box.close()
    assert (report.read, report.hard, report.unknown) == (3, 1, 2)
    assert len(_folder(dovecot, "processed")) == 1
    assert len(_folder(dovecot, "INBOX")) == 2  # garbage, and the other \\Deleted one


def _forged_dsn(recipients: list[str]) -> bytes:
    """An RFC 3464 report from anyone: every recipient failed 5.1.1, no VERP address, and
    the returned headers carry no Message-ID of ours."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\nAction: failed\nStatus: 5.1.1\n\n" for r in recipients
    )
    return (
        "From: MAILER-DAEMON@mx.attacker.example\nTo: bounces@example.org\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Message-ID: <forged.501@mx.attacker.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nundeliverable\n\n"
        f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n{blocks}"
        "--b\nContent-Type: text/rfc822-headers\n\n"
        "From: NLP Newsletter <newsletter@example.org>\nMessage-ID: <x.1@example.org>\n\n--b--\n"
    ).encode()


def test_a_forged_dsn_over_imap_suppresses_nobody_and_stays(
    dovecot: Dovecot, project: Path
) -> None:
    """Every reader and 490 more addresses in one report from anyone: not understood, kept
    in INBOX; the genuine report of one copy next to it suppresses that reader alone."""
    listed = READERS + [f"other{i}@example.net" for i in range(501 - len(READERS))]
    _reset(dovecot, ["postfix-5.1.1.eml"])
    conn = dovecot.client()
    conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), _forged_dsn(listed))
    conn.logout()
    done = _bounces(project, _env(dovecot), "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "read 2: 1 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 1 not understood"
    )
    [why] = [line for line in lines if line.startswith("  not understood  uid ")]
    assert ": RFC 3464 delivery report about 501 addresses (" in why
    with Ledger(project / ".mailer") as ledger:
        assert {s.email: s.reason for s in ledger.suppressions()} == {
            "gone@example.net": Reason.BOUNCED
        }
    assert len(_folder(dovecot, "INBOX")) == 1  # the forged one, for a person to look at
    assert len(_folder(dovecot, "processed")) == 1


# Last: Dovecot's auth penalty slows down every later login from 127.0.0.1 after a failure.
def test_a_wrong_password_is_exit_77_and_one_line(dovecot: Dovecot, project: Path) -> None:
    wrong = "not-the-Pa55word"
    done = _bounces(project, _env(dovecot, MAILER_BOUNCE_IMAP_PASSWORD=wrong))
    assert done.returncode == 77, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"Error: 127.0.0.1:{dovecot.port} refused the login for '{USER}': "
    ), lines
    assert wrong not in done.stderr and PASSWORD not in done.stderr
