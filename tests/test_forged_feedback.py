"""Bounces, complaints and mailed unsubscribes are untrusted input: a report counts only for
the reader of a copy it is tied to (VERP token, our Message-ID, the signed unsubscribe token,
or an unsubscribe mailed from the reader's own address).

One real `mailer send` of issue-2 to 501 readers through the test SMTP server (aiosmtpd on
127.0.0.1) gives real copies. Feedback, forged and genuine, is then submitted over SMTP to
the same server, which files whatever is addressed to example.org (the newsletter's domain:
bounces@, bounces+TOKEN@, abuse@, unsubscribe@) into a Maildir, and `mailer bounces
--maildir` reads it as a subprocess.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import ROOT, smtp_env
from smtp_server import Received, SMTPServer

from mailer.deliver import tokens
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState, Reason

pytestmark = pytest.mark.slow  # a real `mailer send` to 501 readers, then real feedback runs

MAILER = Path(sys.executable).with_name("mailer")
LIST_ID = "nlp-newsletter.example.org"  # list_id in mailer.toml
READERS = [f"r{i:03d}@example.com" for i in range(501)]
EMPTY = "0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled"


class Mailboxes(SMTPServer):
    """The test server, also the newsletter domain's MX: mail to example.org lands in
    `maildir` (new/), as a delivery agent writes it."""

    maildir: Path | None = None

    def record(self, message: Received) -> None:
        super().record(message)
        ours = any(r.lower().endswith("@example.org") for r in message.rcpt_tos)
        if ours and self.maildir is not None:
            with self._lock:
                n = len(list((self.maildir / "new").iterdir())) + 1
                tmp = self.maildir / "tmp" / f"{n}.mail"
                tmp.write_bytes(message.data)
                tmp.rename(self.maildir / "new" / f"{n}.mail")


@dataclass
class Sent:
    server: Mailboxes
    project: Path
    env: dict[str, str]

    def copy_for(self, reader: str) -> Received:
        [found] = [m for m in self.server.received if m.rcpt_tos == [reader]]
        return found


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    project = tmp_path_factory.mktemp("forged") / "news"
    (project / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "issues" / "issue-2.md", project / "issues")
    shutil.copy(ROOT / "mailer.toml", project)
    (project / "subscribers.csv").write_text("email\n" + "".join(f"{r}\n" for r in READERS))
    with Mailboxes() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env.update(smtp_env(server), MAILER_BOUNCE_ADDRESS="bounces@example.org")
        done = subprocess.run(
            [str(MAILER), "send", "issue-2", "--yes", "--rate", "off"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(server.by_recipient()) == READERS
        yield Sent(server, project, env)


@dataclass
class Run:
    project: Path
    maildir: Path
    code: int
    lines: list[str]

    def suppressed(self) -> dict[str, Reason]:
        with Ledger(self.project / ".mailer") as ledger:
            return {s.email: s.reason for s in ledger.suppressions()}

    def left(self) -> int:
        return len(list((self.maildir / "new").iterdir()))


def feedback(
    sent: Sent, tmp_path: Path, messages: list[tuple[str, str, bytes]]
) -> tuple[Path, Path]:
    """A copy of the sent project (its ledger too), and a Maildir holding `messages`
    ((MAIL FROM, RCPT TO, data) each) as the server filed them."""
    project = tmp_path / "news"
    shutil.copytree(sent.project, project)
    maildir = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    sent.server.maildir = maildir
    try:
        with smtplib.SMTP("127.0.0.1", sent.server.port, timeout=30) as smtp:
            for mail_from, rcpt, data in messages:
                smtp.sendmail(mail_from, [rcpt], data)
    finally:
        sent.server.maildir = None
    assert len(list((maildir / "new").iterdir())) == len(messages)
    return project, maildir


def bounces(sent: Sent, project: Path, maildir: Path) -> Run:
    done = subprocess.run(
        [str(MAILER), "bounces", "--maildir", str(maildir), "-v"],
        cwd=project,
        env=sent.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Run(project, maildir, done.returncode, done.stdout.splitlines())


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def headers_of(copy: Received) -> str:
    """The header block of a copy as we sent it (what a DSN returns)."""
    return copy.data.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")


def dsn(to: str, recipients: list[str], returned: str, mx: str = "mx.example.com") -> bytes:
    """An RFC 3464 report, Postfix's layout: one failed 5.1.1 block per recipient."""
    blocks = "".join(
        f"\nFinal-Recipient: rfc822; {r}\nOriginal-Recipient: rfc822;{r}\nAction: failed\n"
        f"Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <{r}>: User unknown\n"
        for r in recipients
    )
    return crlf(f"""From: MAILER-DAEMON@{mx} (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: Thu, 03 Dec 2026 08:00:00 +0000
Message-Id: <{len(recipients)}.{abs(hash(returned))}.dsn@{mx}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

This is the mail system at host {mx}. I'm sorry to have to inform you that your
message could not be delivered to one or more recipients.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; {mx}
{blocks}
--b
Content-Type: text/rfc822-headers

{returned}

--b--
""")


def arf(rcpt: str, reported: str, n: int) -> bytes:
    """An RFC 5965 abuse report (a feedback loop's layout), the reported headers returned."""
    return crlf(f"""From: Feedback Loop <fbl@fbl.example.net>
To: abuse@example.org
Subject: Complaint about a message from example.org
Date: Thu, 03 Dec 2026 08:00:00 +0000
Message-ID: <arf.{n}@fbl.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="f"

--f
Content-Type: text/plain

This is an email abuse report.

--f
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: FBL/1.0
Version: 1
Original-Rcpt-To: <{rcpt}>

--f
Content-Type: text/rfc822-headers

{reported}

--f--
""")


def mail(sender: str, subject: str, body: str, n: int) -> bytes:
    return crlf(f"""From: {sender}
To: unsubscribe@example.org
Subject: {subject}
Date: Thu, 03 Dec 2026 08:00:00 +0000
Message-ID: <mailto.{n}@mail.example.net>

{body}
""")


def test_a_forged_dsn_naming_501_readers_suppresses_nobody(sent: Sent, tmp_path: Path) -> None:
    """From anyone, to the bounce address: no VERP token, none of our Message-IDs (one in
    our form with a made-up digest), every reader failed 5.1.1."""
    returned = (
        "From: NLP Newsletter <newsletter@example.org>\nTo: <r000@example.com>\n"
        f"Subject: Issue 2\nMessage-ID: <issue-2.{'0' * 32}@example.org>"
    )
    forged = dsn("bounces@example.org", READERS, returned, mx="mx.attacker.example")
    project, maildir = feedback(sent, tmp_path, [("", "bounces@example.org", forged)])
    run = bounces(sent, project, maildir)
    assert run.code == 0, run.lines
    assert run.lines[0] == f"read 1: {EMPTY}, 1 not understood"
    assert run.lines[1:] == [
        "  not understood  new/1.mail: RFC 3464 delivery report about 501 addresses"
        " (r000@example.com, r001@example.com, r002@example.com, ...): its Message-ID"
        " looks like ours but is no copy we sent"
    ]
    assert run.suppressed() == {}
    with Ledger(project / ".mailer") as ledger:
        assert {d.state for d in ledger.deliveries("issue-2")} == {DeliveryState.SENT}
    assert run.left() == 1  # kept for a person to look at
    again = bounces(sent, project, maildir)
    assert (again.code, again.lines[0]) == (0, f"read 1: {EMPTY}, 1 not understood")
    assert again.left() == 1


def test_a_genuine_dsn_suppresses_exactly_its_copys_reader(sent: Sent, tmp_path: Path) -> None:
    """One through the VERP address; one to the plain bounce address that returns r002's
    headers (our Message-ID) but lists all 501 readers: each report is about one copy."""
    one = sent.copy_for("r001@example.com")
    assert one.mail_from.startswith("bounces+")
    by_verp = dsn(one.mail_from, ["r001@example.com"], headers_of(one))
    listed = dsn("bounces@example.org", READERS, headers_of(sent.copy_for("r002@example.com")))
    project, maildir = feedback(
        sent, tmp_path, [("", one.mail_from, by_verp), ("", "bounces@example.org", listed)]
    )
    run = bounces(sent, project, maildir)
    assert run.code == 0, run.lines
    assert run.lines[0] == (
        "read 2: 2 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 0 not understood"
    )
    assert run.suppressed() == {
        "r001@example.com": Reason.BOUNCED,
        "r002@example.com": Reason.BOUNCED,
    }
    with Ledger(project / ".mailer") as ledger:
        bounced = {d.email for d in ledger.deliveries("issue-2", DeliveryState.BOUNCED)}
    assert bounced == {"r001@example.com", "r002@example.com"}
    assert run.left() == 0


def test_a_complaint_counts_only_for_the_copy_it_returns(sent: Sent, tmp_path: Path) -> None:
    forged_headers = (
        "From: NLP Newsletter <newsletter@example.org>\nTo: <r003@example.com>\n"
        "Subject: Issue 2\nMessage-ID: <made-up.1@example.org>"
    )
    forged = arf("r003@example.com", forged_headers, 1)
    genuine = arf("r004@example.com", headers_of(sent.copy_for("r004@example.com")), 2)
    project, maildir = feedback(
        sent,
        tmp_path,
        [("fbl@fbl.example.net", "abuse@example.org", m) for m in (forged, genuine)],
    )
    run = bounces(sent, project, maildir)
    assert run.code == 0, run.lines
    assert run.lines[0] == (
        "read 2: 0 hard bounces, 0 soft, 1 complaints, 0 unsubscribes, 0 already handled,"
        " 1 not understood"
    )
    assert run.lines[1:] == [
        "  not understood  new/1.mail: ARF abuse report about r003@example.com: no VERP"
        " address or Message-ID of ours ties it to a copy",
        "  complaint  r004@example.com  issue-2  abuse FBL/1.0  (suppressed)",
    ]
    assert run.suppressed() == {"r004@example.com": Reason.COMPLAINED}
    assert run.left() == 1


def _mailto_subject(copy: Received) -> str:
    """The Subject a mail client uses for the copy's List-Unsubscribe mailto: address."""
    value = " ".join(str(message_from_bytes(copy.data)["List-Unsubscribe"]).split())
    [mailto] = [t for t in value.replace(">", "<").split("<") if t.startswith("mailto:")]
    return parse_qs(urlsplit(mailto).query)["subject"][0]


def test_a_mailto_unsubscribe_counts_only_signed_or_from_the_reader(
    sent: Sent, tmp_path: Path
) -> None:
    stranger = "Someone <someone@attacker.example>"
    not_ours = tokens.sign("another-secret", LIST_ID, "r006@example.com")
    messages = [
        # Forged: a stranger naming a reader; a stranger with a token we did not sign.
        mail(stranger, "unsubscribe", "Please unsubscribe r005@example.com", 1),
        mail(stranger, f"unsubscribe {not_ours}", "unsubscribe", 2),
        # Genuine: the reader from their own address; the signed subject from another one
        # (a forwarding address), which unsubscribes the reader the token names.
        mail("R007 <R007@Example.com>", "unsubscribe", "unsubscribe", 3),
        mail(
            "Alias <alias@elsewhere.example>",
            _mailto_subject(sent.copy_for("r008@example.com")),
            "",
            4,
        ),
    ]
    project, maildir = feedback(
        sent, tmp_path, [("x@mail.example.net", "unsubscribe@example.org", m) for m in messages]
    )
    run = bounces(sent, project, maildir)
    assert run.code == 0, run.lines
    assert run.lines[0] == (
        "read 4: 0 hard bounces, 0 soft, 0 complaints, 2 unsubscribes, 0 already handled,"
        " 2 not understood"
    )
    assert run.suppressed() == {
        "r007@example.com": Reason.UNSUBSCRIBED,
        "r008@example.com": Reason.UNSUBSCRIBED,
    }
    assert run.lines[1:] == [
        "  not understood  new/1.mail: mail to the unsubscribe address from"
        " someone@attacker.example: not one of our readers, no unsubscribe token",
        "  not understood  new/2.mail: mail to the unsubscribe address from"
        " someone@attacker.example: not one of our readers, an unsubscribe token we did not sign",
        "  unsubscribe  r007@example.com  -  unsubscribe  (suppressed)",
        "  unsubscribe  r008@example.com  -  unsubscribe (signed)  (suppressed)",
    ]
    assert run.left() == 2
