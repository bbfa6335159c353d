"""A private Postfix instance from Debian's packages, for tests that need a real MTA.

Its own main.cf/master.cf, queue and logs; it listens on one free loopback port and delivers
every @example.com address into one Maildir. Tests may add postconf settings and map files
(a bounce test adds `transport_maps` that turn chosen recipients into real RFC 3464 DSNs).
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


def _postconf(config: Path, *args: str) -> None:
    done = run(POSTCONF, "-c", config, *args)
    assert done.returncode == 0, f"postconf {' '.join(args)}: {done.stderr}"


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


def _configure(
    base: Path, settings: Sequence[str] = (), files: Mapping[str, str] | None = None
) -> Postfix:
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
    for name, text in (files or {}).items():  # map files the extra settings name
        (config / name).write_text(text)
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
    if settings:
        _postconf(config, "-e", *(s.replace("{config}", str(config)) for s in settings))
    # master.cf: no port 25; one smtpd on our port; nothing chrooted (the queue is ours).
    port = server.port
    _postconf(config, "-MX", "smtp/inet")
    _postconf(config, "-M", f"127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd")
    _postconf(config, "-F", "*/*/chroot = n")
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
