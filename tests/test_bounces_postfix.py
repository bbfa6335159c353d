"""Real bounces from a real MTA: `mailer send` to a private Postfix that turns every
bounce-*@example.com recipient into an RFC 3464 DSN (its `error:` transport, after smtpd
accepted the recipient), which Postfix delivers to the bounce address's own Maildir;
`mailer bounces --maildir` then reads what Postfix wrote.

Needs root and /usr/sbin/postfix (`make system`). One Postfix and one send per module.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import smtplib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from email import message_from_bytes
from pathlib import Path

import pytest
from postfix import Postfix, requires_postfix, run, running_postfix

from mailer.config import Settings
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState, Reason

REPO = Path(__file__).resolve().parents[1]
MAILER = Path(sys.executable).with_name("mailer")
SECRET = "postfix-bounce-secret"
GOOD = ["ada@example.com", "alan@example.com"]
BOUNCING = ["bounce-1@example.com", "bounce-2@example.com", "bounce-3@example.com"]
SENDER = "newsletter@example.com"  # From; the envelope sender unless bounce_address is set
BOUNCE_ADDRESS = "bounces@example.com"

pytestmark = requires_postfix

# The error: transport bounces at once (no queue retries); the bounce address, the From
# address and any VERP form of them (bounces+TOKEN@) are delivered to their own Maildir.
POSTFIX_SETTINGS = [
    "transport_maps = regexp:{config}/transport",
    "smtpd_reject_unlisted_recipient = no",
    "virtual_mailbox_maps = regexp:{config}/mailboxes",
]
POSTFIX_FILES = {
    "transport": "/^bounce-/ error:5.1.1 Mailbox does not exist\n",
    "mailboxes": "/^(bounces|newsletter)(\\+.*)?@/ bounces/\n/.*/ inbox/\n",
}


@dataclass
class Sent:
    postfix: Postfix
    project: Path
    env: dict[str, str]
    bounces: Path  # the Maildir the DSNs went to
    send_output: str


def _has_setting(name: str) -> bool:
    return any(f.name == name for f in fields(Settings))


def _wait(
    paths: Callable[[], list[Path]], count: int, postfix: Postfix, seconds: float = 60
) -> list[Path]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = paths()
        if len(found) >= count:
            time.sleep(0.5)  # anything extra would show up now
            return paths()
        time.sleep(0.1)
    pytest.fail(f"{len(paths())} of {count} files after {seconds:.0f} s:\n{postfix.log()}")


def _files(maildir: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (maildir / sub).glob("*") if p.is_file())


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    with running_postfix(POSTFIX_SETTINGS, POSTFIX_FILES) as postfix:
        root = tmp_path_factory.mktemp("bounce-project")
        project = root / "project"
        project.mkdir()
        shutil.copytree(REPO / "issues", project / "issues")
        shutil.copy(REPO / "mailer.toml", project / "mailer.toml")
        # The next issue: the same text under another name.
        shutil.copy(project / "issues" / "issue-2.md", project / "issues" / "issue-3.md")
        with (project / "subscribers.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["email", "name"])
            for address in [GOOD[0], BOUNCING[0], GOOD[1], BOUNCING[1], BOUNCING[2]]:
                writer.writerow([address, ""])
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env.update(
            MAILER_SMTP_HOST="127.0.0.1",
            MAILER_SMTP_PORT=str(postfix.port),
            MAILER_SMTP_SECURITY="none",
            MAILER_SECRET=SECRET,
            MAILER_FROM=f"NLP Newsletter <{SENDER}>",
            MAILER_STATE_DIR=str(root / "state"),
        )
        if _has_setting("bounce_address"):  # the VERP/DSN half of issue 12, when it is there
            env["MAILER_BOUNCE_ADDRESS"] = BOUNCE_ADDRESS
        done = run(MAILER, "send", "issue-2", "--yes", "--rate", "off", cwd=project, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        bounces = postfix.maildir.parent / "bounces"
        _wait(postfix.delivered, len(GOOD), postfix)
        _wait(lambda: _files(bounces), len(BOUNCING), postfix)
        yield Sent(postfix, project, env, bounces, done.stdout)


def _mailer(s: Sent, *args: str | Path) -> tuple[int, str]:
    done = run(MAILER, *args, cwd=s.project, env=s.env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout + done.stderr


def test_postfix_returns_one_real_dsn_per_bouncing_reader(sent: Sent) -> None:
    reported = []
    for path in _files(sent.bounces):
        msg = message_from_bytes(path.read_bytes())
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "delivery-status"
        status = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
        text = status.as_string()
        assert re.search(r"^Action: failed$", text, re.M), text
        assert re.search(r"^Status: 5\.1\.1$", text, re.M), text
        reported += re.findall(r"^Final-Recipient: rfc822; ?(\S+)$", text, re.M)
    assert sorted(reported) == BOUNCING
    assert len(sent.postfix.delivered()) == len(GOOD)


def test_bounces_suppress_mark_the_rows_and_a_second_read_changes_nothing(sent: Sent) -> None:
    """Read (kept), read again (moved: all already handled), read a third time (empty)."""
    code, out = _mailer(sent, "bounces", "--maildir", sent.bounces, "--keep", "-v")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (
        "read 3: 3 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 0 not understood"
    )
    for address in BOUNCING:
        assert any(
            line.startswith(f"  hard bounce  {address}  issue-2  5.1.1 ") and "(suppressed)" in line
            for line in lines
        ), out
    assert len(_files(sent.bounces)) == 3  # --keep: still there

    state = Path(sent.env["MAILER_STATE_DIR"])
    with Ledger(state) as ledger:
        rows = {d.email: d for d in ledger.deliveries("issue-2")}
        assert {e: d.state for e, d in rows.items()} == {
            **dict.fromkeys(GOOD, DeliveryState.SENT),
            **dict.fromkeys(BOUNCING, DeliveryState.BOUNCED),
        }
        assert rows[BOUNCING[0]].last_reply.startswith("bounced: 5.1.1 ")
        assert rows[BOUNCING[0]].attempts == 1
        assert {s.email: s.reason for s in ledger.suppressions()} == dict.fromkeys(
            BOUNCING, Reason.BOUNCED
        )

    code, status = _mailer(sent, "status", "issue-2")
    assert code == 0, status
    assert re.search(r"^  sent\s+2$", status, re.M), status
    assert re.search(r"^  bounced\s+3$", status, re.M), status
    assert re.search(r"^  complained\s+0$", status, re.M), status
    assert re.search(r"^  pending\s+0$", status, re.M), status

    # Read again, now moving them: all already handled, nothing else changes.
    with Ledger(state) as ledger:
        before = (list(ledger.deliveries("issue-2")), ledger.suppressions())
    code, out = _mailer(sent, "bounces", "--maildir", sent.bounces)
    assert code == 0, out
    assert out.splitlines()[0] == (
        "read 3: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 3 already handled,"
        " 0 not understood"
    )
    with Ledger(state) as ledger:
        assert (list(ledger.deliveries("issue-2")), ledger.suppressions()) == before
    assert _files(sent.bounces) == []
    assert len(list((sent.bounces / ".processed" / "cur").iterdir())) == 3

    code, out = _mailer(sent, "bounces", "--maildir", sent.bounces)
    assert (code, out.splitlines()[0]) == (
        0,
        "read 0: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 0 not understood",
    )

    # The next issue skips them; a resend of this one has nobody left to send to.
    code, out = _mailer(sent, "send", "issue-3", "--dry-run")
    assert code == 0, out
    assert re.search(r"^  recipients\s+2$", out, re.M), out
    assert re.search(r"^  suppressed\s+3$", out, re.M), out
    code, out = _mailer(sent, "send", "issue-2", "--dry-run")
    assert code == 0, out
    assert re.search(r"^  recipients\s+0$", out, re.M), out

    done = run(MAILER, "suppressed", "--csv", cwd=sent.project, env=sent.env)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["email", "reason", "source", "created_at"]
    assert sorted((r[0], r[1], r[2]) for r in rows[1:]) == [
        (address, "bounced", "bounce 5.1.1") for address in BOUNCING
    ]


def _forged_dsn(recipients: list[str]) -> str:
    """An RFC 3464 report anyone can write: every recipient failed 5.1.1, no VERP address,
    and the returned headers carry no Message-ID of ours."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\nAction: failed\nStatus: 5.1.1\n\n" for r in recipients
    )
    return (
        "From: MAILER-DAEMON@mx.attacker.example\nTo: bounces@example.com\n"
        "Subject: Undelivered Mail Returned to Sender\nDate: Thu, 03 Dec 2026 08:00:00 +0000\n"
        "Message-ID: <forged.501@mx.attacker.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nundeliverable\n\n"
        f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\n{blocks}"
        "--b\nContent-Type: text/rfc822-headers\n\n"
        f"From: NLP Newsletter <{SENDER}>\nMessage-ID: <x.1@example.com>\n\n--b--\n"
    )


# After the test above: it reads the bounce Maildir's real DSNs first.
def test_a_forged_dsn_through_postfix_suppresses_nobody(sent: Sent) -> None:
    """A report listing every reader and 496 more addresses, submitted to Postfix for the
    bounce address like any bounce: read by `mailer bounces`, not understood, left there."""
    listed = GOOD + BOUNCING + [f"other{i}@example.net" for i in range(496)]
    before = set(_files(sent.bounces))
    with smtplib.SMTP("127.0.0.1", sent.postfix.port, timeout=30) as smtp:
        smtp.sendmail("", [BOUNCE_ADDRESS], _forged_dsn(listed).encode())
    [forged] = [
        p
        for p in _wait(lambda: _files(sent.bounces), len(before) + 1, sent.postfix)
        if p not in before
    ]
    code, out = _mailer(sent, "bounces", "--maildir", sent.bounces, "-v")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith(", 1 not understood"), out
    [why] = [line for line in lines if line.startswith("  not understood  ")]
    assert ": RFC 3464 delivery report about 501 addresses (" in why
    assert forged.exists()  # kept for a person to look at
    state = Path(sent.env["MAILER_STATE_DIR"])
    with Ledger(state) as ledger:
        suppressed = {s.email for s in ledger.suppressions()}
        rows = {d.email: d.state for d in ledger.deliveries("issue-2")}
    assert suppressed <= set(BOUNCING)  # only the real DSNs', never the readers listed
    assert {rows[a] for a in GOOD} == {DeliveryState.SENT}
