"""Messages must be accepted unchanged by a real MTA too: Postfix from Debian's packages.

A private Postfix instance (its own main.cf/master.cf, queue and logs; it listens on one free
loopback port and delivers every @example.com address into one Maildir) receives a real
`mailer send`. Each delivered file must hold, after the headers Postfix prepends, exactly the
bytes mailer would send (the dry run's .eml for the same reader, Date aside), and Postfix must
have added no Message-ID or Date of its own.

Needs root (Postfix's master starts as root) and /usr/sbin/postfix: `make system`
installs it.
"""

from __future__ import annotations

import csv
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
MAILER = Path(sys.executable).with_name("mailer")
SECRET = "postfix-test-secret"

SUBSCRIBERS = [
    ("ada@example.com", "Ada Lovelace", "London"),
    ("zoe.martin@example.com", "Zoë Martin", "Lyon"),  # non-ASCII name: an RFC 2047 To header
    ("alan@example.com", "Alan Turing", "Manchester"),
    ("grace@example.com", "", "Arlington"),  # no name: the fallback greeting
    ("Kurt.Godel@Example.com", "Kurt Gödel", "Wien"),  # upper case in the address
]
# What Postfix itself writes on top of a message it delivers to a Maildir.
PREPENDED = {"return-path", "x-original-to", "delivered-to", "received"}

pytestmark = [
    pytest.mark.skipif(
        not POSTFIX.exists() or not POSTCONF.exists(),
        reason="Postfix is not installed: `make system` installs Debian's postfix",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="a private Postfix instance must be started as root"
    ),
]


@dataclass
class Postfix:
    port: int
    config: Path
    maildir: Path  # the Maildir every @example.com recipient is delivered to
    maillog: Path

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def delivered(self) -> list[Path]:
        return sorted(
            p for sub in ("new", "cur") for p in (self.maildir / sub).glob("*") if p.is_file()
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, **kwargs
    )


def _postconf(config: Path, *args: str) -> None:
    done = _run(POSTCONF, "-c", config, *args)
    assert done.returncode == 0, f"postconf {' '.join(args)}: {done.stderr}"


def _wait_for_port(server: Postfix, seconds: float) -> None:
    port = server.port
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(
        f"Postfix did not answer on 127.0.0.1:{port} within {seconds:.0f} s:\n{server.log()}"
    )


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    """A private Postfix: started for one test, stopped (and its files removed) after it."""
    # Not under tmp_path: pytest makes its temp folders 0700 for root, and Postfix's daemons
    # (the postfix user) must be able to reach their queue and the Maildir.
    base = Path(tempfile.mkdtemp(prefix="mailer-postfix-"))
    config, queue = base / "etc", base / "queue"
    started = False
    try:
        server = _configure(base)
        time.sleep(1.1)  # Postfix will not read a main.cf changed within the last second
        done = _run(POSTFIX, "-c", config, "start")
        started = done.returncode == 0
        assert started, (
            f"postfix -c {config} start failed ({done.returncode}):\n"
            f"{done.stdout}{done.stderr}{server.log()}"
        )
        _wait_for_port(server, 20)
        yield server
    finally:
        if started:
            _stop(config, queue)
        shutil.rmtree(base, ignore_errors=True)


def _configure(base: Path) -> Postfix:
    """main.cf and master.cf (Debian's, edited with postconf) for an instance living in base."""
    base.chmod(0o755)
    config, queue, data, mail = (base / n for n in ("etc", "queue", "data", "mail"))
    for folder in (config, queue, mail):
        folder.mkdir()
    user = pwd.getpwnam("postfix")  # the virtual agent writes the Maildir as this user
    os.chown(mail, user.pw_uid, user.pw_gid)
    for name in ("main.cf", "master.cf"):
        source = Path("/etc/postfix", name)
        if not source.exists():  # debconf's "No configuration" leaves no main.cf
            source = Path("/usr/share/postfix", f"{name}.dist")
        if source.exists():
            shutil.copy(source, config / name)
        else:
            (config / name).write_text("")
    (config / "vmailbox").write_text("/.*/ inbox/\n")  # trailing slash: a Maildir
    server = Postfix(_free_port(), config, mail / "inbox", base / "maillog")
    _postconf(
        config,
        "-e",
        "compatibility_level = 3.6",
        f"queue_directory = {queue}",
        f"data_directory = {data}",
        "myhostname = mailer-test.localhost",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "mynetworks = 127.0.0.0/8",
        "mydestination =",
        "relayhost =",
        "alias_maps =",
        "alias_database =",
        "virtual_mailbox_domains = example.com",
        f"virtual_mailbox_base = {mail}",
        f"virtual_mailbox_maps = regexp:{config / 'vmailbox'}",
        f"virtual_uid_maps = static:{user.pw_uid}",
        f"virtual_gid_maps = static:{user.pw_gid}",
        f"virtual_minimum_uid = {min(user.pw_uid, 100)}",
        # Postfix adds a missing Message-ID and Date for "local" clients (loopback included)
        # unless this is empty: a message lacking them would then pass unnoticed.
        "local_header_rewrite_clients =",
        "smtputf8_enable = no",
        "smtpd_tls_security_level = none",
        "smtp_tls_security_level = none",
        f"maillog_file = {server.maillog}",  # logs without syslog
        f"maillog_file_prefixes = {base}",
    )
    # master.cf: no port 25; one smtpd on our port; nothing chrooted (the queue is ours).
    port = server.port
    _postconf(config, "-MX", "smtp/inet")
    _postconf(config, "-M", f"127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd")
    _postconf(config, "-F", "*/*/chroot = n")
    return server


def _stop(config: Path, queue: Path) -> None:
    _run(POSTFIX, "-c", config, "stop")
    pid_file = queue / "pid" / "master.pid"
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except (ProcessLookupError, ValueError, OSError):
            break
        time.sleep(0.1)


def _project(root: Path) -> Path:
    root.mkdir()
    shutil.copytree(REPO / "issues", root / "issues")
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    return root


def _write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "city"])
        writer.writerows(rows)
    return path


def _env(port: int, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(port),
        MAILER_SMTP_SECURITY="none",
        MAILER_SECRET=SECRET,
        MAILER_STATE_DIR=str(state),
    )
    return env


def _dry_run_messages(project: Path, env: dict[str, str]) -> dict[str, bytes]:
    """recipient -> the exact bytes a dry run builds for them (it keeps 3 .eml files per run)."""
    out: dict[str, bytes] = {}
    for start in range(0, len(SUBSCRIBERS), 3):
        chunk = _write_csv(project / f"chunk-{start}.csv", SUBSCRIBERS[start : start + 3])
        done = _run(
            MAILER, "send", "issue-2", "--dry-run", "--subscribers", chunk, cwd=project, env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for eml in sorted((project / "build" / "issue-2" / "dry-run").glob("*.eml")):
            out[eml.stem.split("-", 1)[1].lower()] = eml.read_bytes()
    assert len(out) == len(SUBSCRIBERS), sorted(out)
    return out


def _wait_for_delivery(server: Postfix, count: int, seconds: float = 60) -> list[Path]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(server.delivered()) >= count:
            time.sleep(1)  # a duplicate would show up now
            return server.delivered()
        time.sleep(0.1)
    pytest.fail(
        f"{len(server.delivered())} of {count} messages delivered after {seconds:.0f} s:\n"
        f"{server.log()}"
    )


def _header_names(block: bytes) -> list[str]:
    return [
        line.split(b":", 1)[0].decode().lower()
        for line in block.split(b"\n")
        if line and not line[:1].isspace()
    ]


def test_postfix_delivers_mailers_bytes_unchanged(postfix: Postfix, tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    expected = _dry_run_messages(project, _env(postfix.port, tmp_path / "dry-state"))

    env = _env(postfix.port, tmp_path / "state")
    subscribers = _write_csv(project / "subscribers.csv", SUBSCRIBERS)
    sent = _run(
        MAILER,
        "send",
        "issue-2",
        "--yes",
        "--rate",
        "off",
        "--subscribers",
        subscribers,
        cwd=project,
        env=env,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr  # 0: every message accepted

    files = _wait_for_delivery(postfix, len(SUBSCRIBERS))
    parser = BytesParser(policy=policy.default)
    by_recipient: dict[str, list[bytes]] = {}
    for path in files:
        data = path.read_bytes()
        rcpt = parser.parsebytes(data, headersonly=True)["Delivered-To"]
        by_recipient.setdefault(str(rcpt).lower(), []).append(data)
    # Exactly one file per recipient, and no one else.
    assert {k: len(v) for k, v in by_recipient.items()} == {e.lower(): 1 for e, _, _ in SUBSCRIBERS}

    for address, name, _ in SUBSCRIBERS:
        [delivered] = by_recipient[address.lower()]
        header_block = delivered.split(b"\n\n", 1)[0] + b"\n"
        message = parser.parsebytes(delivered)
        # Postfix added no Message-ID or Date of its own: exactly one of each, mailer's.
        assert len(message.get_all("Message-ID")) == 1, header_block.decode()
        assert len(message.get_all("Date")) == 1, header_block.decode()
        sent_date = parsedate_to_datetime(str(message["Date"]))
        assert abs(time.time() - sent_date.timestamp()) < 600

        # What mailer sent (the dry run's bytes, CRLF as Maildir stores it: LF), with this
        # run's Date: the delivered file must end with exactly that.
        date_line = re.search(rb"^Date: [^\n]*\n", header_block, re.M)
        assert date_line is not None
        wire = expected[address.lower()].replace(b"\r\n", b"\n")
        wire_head, wire_body = wire.split(b"\n\n", 1)
        wire_head, n = re.subn(
            rb"^Date: [^\n]*\n", date_line.group(0), wire_head + b"\n", flags=re.M
        )
        assert n == 1
        want = wire_head + b"\n" + wire_body
        assert delivered.endswith(want), f"{address}: Postfix changed the message"
        prepended = delivered[: -len(want)]
        assert set(_header_names(prepended)) <= PREPENDED, prepended.decode()

        # And as a reader's client sees it: the same headers and both parts, decoded.
        dry = parser.parsebytes(wire)
        for header in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "Content-Type"):
            assert message[header] == dry[header], header
        for part in ("plain", "html"):
            got = message.get_body((part,))
            assert got is not None and got.get_content() == dry.get_body((part,)).get_content()
        assert message["To"].addresses[0].addr_spec.lower() == address.lower()
        assert message["To"].addresses[0].display_name == name

    log = postfix.log()
    assert log.count("status=sent (delivered to maildir)") == len(SUBSCRIBERS), log
    assert "status=deferred" not in log and "status=bounced" not in log, log
