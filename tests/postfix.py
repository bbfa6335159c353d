"""A private Postfix instance from Debian's packages, for tests that need a real MTA.

Its own main.cf/master.cf (written from nothing: the machine's /etc/postfix is never read),
queue and logs; it listens on one free loopback port and delivers every @example.com address
into one Maildir. Tests may add main.cf settings and map files (a bounce test adds
`transport_maps` that turn chosen recipients into real RFC 3464 DSNs).
Needs root (Postfix's master starts as root) and /usr/sbin/postfix: `make system`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")

requires_postfix = [
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


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, **kwargs
    )


def _wait_for_port(server: Postfix, seconds: float) -> None:
    port = server.port
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512)[:3].isdigit():  # 220, or a 421 a test configured
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(
        f"Postfix did not answer on 127.0.0.1:{port} within {seconds:.0f} s:\n{server.log()}"
    )


@contextlib.contextmanager
def running_postfix(
    settings: Sequence[str] = (), files: Mapping[str, str] | None = None
) -> Iterator[Postfix]:
    """A private Postfix, started and then stopped (its files removed) after the block.

    `settings` are extra `name = value` lines for main.cf ("{config}" in them is replaced by
    the configuration folder); `files` are written into that folder first.
    """
    # Not under tmp_path: pytest makes its temp folders 0700 for root, and Postfix's daemons
    # (the postfix user) must be able to reach their queue and the Maildir.
    base = Path(tempfile.mkdtemp(prefix="mailer-postfix-"))
    config, queue = base / "etc", base / "queue"
    started = False
    try:
        server = _configure(base, settings, files)
        time.sleep(1.1)  # Postfix will not read a main.cf changed within the last second
        done = run(POSTFIX, "-c", config, "start")
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


# master.cf, written whole: one smtpd on the test's port and the daemons behind it, nothing
# chrooted (the queue is private). No smtp/lmtp client: mail for anyone outside example.com
# goes to the error transport (see MAIN_CF), so nothing ever leaves the machine.
MASTER_CF = """\
# service      type        private unpriv chroot wakeup maxproc command
{listen}       inet        n       -      n      -      -       smtpd
pickup         unix        n       -      n      60     1       pickup
cleanup        unix        n       -      n      -      0       cleanup
qmgr           unix        n       -      n      300    1       qmgr
rewrite        unix        -       -      n      -      -       trivial-rewrite
bounce         unix        -       -      n      -      0       bounce
defer          unix        -       -      n      -      0       bounce
trace          unix        -       -      n      -      0       bounce
flush          unix        n       -      n      1000?  0       flush
proxymap       unix        -       -      n      -      -       proxymap
showq          unix        n       -      n      -      -       showq
error          unix        -       -      n      -      -       error
retry          unix        -       -      n      -      -       error
discard        unix        -       -      n      -      -       discard
virtual        unix        -       n      n      -      -       virtual
anvil          unix        -       -      n      -      1       anvil
scache         unix        -       -      n      -      1       scache
postlog        unix-dgram  n       -      n      -      1       postlogd
"""


def _main_cf(base: Path, user: pwd.struct_passwd) -> dict[str, str]:
    """main.cf for an instance living in base: every setting the tests rely on, spelled out."""
    config, mail = base / "etc", base / "mail"
    return {
        "compatibility_level": "3.6",
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        "myhostname": "mailer-test.localhost",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "mydestination": "",
        "relayhost": "",
        "alias_maps": "",
        "alias_database": "",
        "recipient_delimiter": "+",  # VERP addresses: bounces+TOKEN@example.com
        "virtual_mailbox_domains": "example.com",
        "virtual_mailbox_base": str(mail),
        "virtual_mailbox_maps": f"regexp:{config / 'vmailbox'}",
        "virtual_uid_maps": f"static:{user.pw_uid}",
        "virtual_gid_maps": f"static:{user.pw_gid}",
        "virtual_minimum_uid": str(min(user.pw_uid, 100)),
        "default_transport": "error:5.1.2 this test instance delivers to example.com only",
        "relay_transport": "error:5.1.2 this test instance delivers to example.com only",
        # Postfix adds a missing Message-ID and Date for "local" clients (loopback included)
        # unless this is empty: a message lacking them would then pass unnoticed.
        "local_header_rewrite_clients": "",
        "smtputf8_enable": "no",
        "smtpd_tls_security_level": "none",
        "maillog_file": str(base / "maillog"),  # logs without syslog
        "maillog_file_prefixes": str(base),
    }


def _configure(
    base: Path, settings: Sequence[str] = (), files: Mapping[str, str] | None = None
) -> Postfix:
    """main.cf and master.cf, written from nothing, for an instance living in base.

    Nothing is read from the machine's own /etc/postfix: whatever it is set up for there
    (a relayhost, a content_filter, a local sink) cannot reach the tests.
    """
    base.chmod(0o755)
    config, queue, mail = (base / n for n in ("etc", "queue", "mail"))
    for folder in (config, queue, mail):
        folder.mkdir()
    user = pwd.getpwnam("postfix")  # the virtual agent writes the Maildir as this user
    os.chown(mail, user.pw_uid, user.pw_gid)
    (config / "vmailbox").write_text("/.*/ inbox/\n")  # trailing slash: a Maildir
    for name, text in (files or {}).items():  # map files the extra settings name
        (config / name).write_text(text)
    server = Postfix(_free_port(), config, mail / "inbox", base / "maillog")
    main = _main_cf(base, user)
    for line in settings:
        name, _, value = line.replace("{config}", str(config)).partition("=")
        main[name.strip()] = value.strip()
    (config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
    (config / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{server.port}"))
    return server


def _stop(config: Path, queue: Path) -> None:
    run(POSTFIX, "-c", config, "stop")
    pid_file = queue / "pid" / "master.pid"
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except (ProcessLookupError, ValueError, OSError):
            break
        time.sleep(0.1)
