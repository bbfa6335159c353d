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
import re
import shutil
import sys
import time
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from postfix import Postfix, requires_postfix, run, running_postfix

REPO = Path(__file__).resolve().parents[1]
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

pytestmark = requires_postfix


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    """A private Postfix: started for one test, stopped (and its files removed) after it."""
    with running_postfix() as server:
        yield server


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
        done = run(
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
    sent = run(
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
