"""`mailer bounces`: DSNs, ARF complaints and mailed unsubscribes, read from real Maildirs and
mbox files into a real ledger. The formats are hand-written fixtures (tests/fixtures/bounces,
see its README); a real Postfix's DSNs are in test_bounces_postfix.py, IMAP in
test_bounces_imap.py."""

from __future__ import annotations

import mailbox
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from conftest import FIXTURE_SECRET as SECRET
from conftest import FIXTURES, SENT, MailerCli, delivery, one_line_error

from mailer import config
from mailer.config import Settings
from mailer.deliver.audience import LedgerWatch
from mailer.deliver.message import Composer
from mailer.deliver.msgid import digest
from mailer.errors import InputError
from mailer.feedback.classify import classify
from mailer.feedback.mailboxes import Maildir, Mbox
from mailer.feedback.process import Report, process
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState, Feedback, Reason

BOUNCES = FIXTURES / "bounces"
HARD, SOFT = Feedback.HARD, Feedback.SOFT
COMPLAINT, UNSUBSCRIBE = Feedback.COMPLAINT, Feedback.UNSUBSCRIBE
DSN = "RFC 3464 delivery report"
NOT_A_BOUNCE = "not a bounce, a complaint or an unsubscribe"

# file -> (kind, why, [(addresses, kind, status)]) as classify() reads it, with no ledger.
TABLE: dict[str, tuple[Feedback | None, str, list[tuple[tuple[str, ...], Feedback, str]]]] = {
    "postfix-5.1.1.eml": (HARD, DSN, [(("gone@example.net",), HARD, "5.1.1")]),
    "postfix-delayed-4.4.1.eml": (SOFT, DSN, [(("delayed@example.net",), SOFT, "4.4.1")]),
    # Exim's own text format: flufl.bounce finds the address, no status (hard needs proof).
    "exim-plain.eml": (
        HARD,
        "a bounce flufl.bounce recognised",
        [(("old.reader@example.net",), HARD, "")],
    ),
    "office365-5.1.10.eml": (HARD, DSN, [(("left@contoso.example",), HARD, "5.1.10")]),
    "gmail-5.1.1.eml": (HARD, DSN, [(("missing.reader@example.net",), HARD, "5.1.1")]),
    "gmail-delay-4.2.2.eml": (SOFT, DSN, [(("full@example.net",), SOFT, "4.2.2")]),
    # Permanent, but about our message or our IP, not the address: soft.
    "gmail-5.7.1-blocked.eml": (SOFT, DSN, [(("blocked@example.net",), SOFT, "5.7.1")]),
    "yahoo-arf.eml": (
        COMPLAINT,
        "ARF abuse report",
        [(("complainer@yahoo.example",), COMPLAINT, "abuse")],
    ),
    "arf-redacted.eml": (
        COMPLAINT,
        "ARF abuse report",
        [(("redacted@redacted.invalid",), COMPLAINT, "abuse")],
    ),
    "arf-auth-failure.eml": (None, "an ARF report of type 'auth-failure', not a complaint", []),
    "unsubscribe-mailto.eml": (
        UNSUBSCRIBE,
        "mail to the unsubscribe address",
        [(("leaver@example.net",), UNSUBSCRIBE, "")],
    ),
    "auto-reply.eml": (None, NOT_A_BOUNCE, []),
    "dsn-delivered.eml": (None, "a delivery report with no failed or delayed recipient", []),
    "dsn-malformed.eml": (None, "a malformed delivery report (no recipient fields)", []),
    "garbage.eml": (None, NOT_A_BOUNCE, []),
}
# Who had issue-2 (every reader the fixtures name; quiet@ is the redacted report's reader,
# leaver@ mails the unsubscribe address from their own address).
READERS = [
    "gone@example.net",
    "delayed@example.net",
    "old.reader@example.net",
    "left@contoso.example",
    "missing.reader@example.net",
    "full@example.net",
    "blocked@example.net",
    "complainer@yahoo.example",
    "quiet@example.net",
    "away@example.net",
    "leaver@example.net",
]
SUMMARY_ALL = (
    "read 15: 4 hard bounces, 3 soft, 2 complaints, 1 unsubscribes, 0 already handled,"
    " 5 not understood"
)


@pytest.fixture
def settings(module_project: Path, tmp_path: Path) -> Settings:
    """mailer.toml's settings (From @example.org, unsubscribe@example.org), a fresh ledger."""
    environ = {"MAILER_SECRET": SECRET, "MAILER_STATE_DIR": str(tmp_path / "state")}
    return config.load(module_project, environ=environ)


def _ledger(settings: Settings) -> Ledger:
    return Ledger(settings.state_path)


def _maildir(folder: Path, messages: dict[str, bytes]) -> Path:
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, data in messages.items():
        (folder / "new" / name).write_bytes(data)
    return folder


def _fixtures() -> dict[str, bytes]:
    return {name: (BOUNCES / name).read_bytes() for name in TABLE}


_counter = iter(range(1, 1_000_000))


def dsn(reader: str, issue: str, *, status: str = "5.1.1", action: str = "failed") -> bytes:
    """An RFC 3464 report about our copy of `issue` to `reader`, with a fresh Message-ID."""
    ours = f"<{issue}.{digest(SECRET, issue, reader)}@example.org>"
    code = {"5": "550", "4": "450"}[status[0]]
    return f"""From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: bounces@example.org
Subject: Undelivered Mail Returned to Sender
Message-Id: <{next(_counter)}.{status}.{action}@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Your message could not be delivered.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {reader}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {code} {status} mailbox trouble

--b
Content-Type: text/rfc822-headers

From: NLP Newsletter <newsletter@example.org>
To: <{reader}>
Message-ID: {ours}

--b--
""".encode()


def feed(settings: Settings, tmp_path: Path, *messages: bytes, keep: bool = False) -> Report:
    """Process these messages from a fresh Maildir."""
    folder = tmp_path / f"maildir-{next(_counter)}"
    box = Maildir(_maildir(folder, {f"{i}.eml": m for i, m in enumerate(messages)}))
    return process(settings, box, keep=keep)


Cli = Callable[..., Result]


@pytest.fixture
def cli(mailer_cli: MailerCli) -> Cli:
    """cli(settings, *args, env=None): `mailer` in settings' project, with its ledger."""

    def run(settings: Settings, *args: str | Path, env: dict[str, str] | None = None) -> Result:
        environ = {
            "MAILER_SECRET": SECRET,
            "MAILER_STATE_DIR": str(settings.state_path),
            **(env or {}),
        }
        return mailer_cli(settings.root, *args, env=environ)

    return run


# -- what each format is ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TABLE))
def test_fixture_is_classified(name: str, settings: Settings) -> None:
    kind, why, failures = TABLE[name]
    found = classify((BOUNCES / name).read_bytes(), settings)
    assert (found.kind, found.why) == (kind, why)
    assert [(f.addresses, f.kind, f.status) for f in found.failures] == failures


def test_every_fixture_is_in_the_table_and_the_readme() -> None:
    files = sorted(p.name for p in BOUNCES.glob("*.eml"))
    assert files == sorted(TABLE)
    readme = (BOUNCES / "README.md").read_text(encoding="utf-8")
    for name in files:
        assert f"`{name}`" in readme, name


def test_the_whole_table_against_a_ledger(settings: Settings, tmp_path: Path, cli: Cli) -> None:
    with _ledger(settings) as ledger:
        for reader in READERS:
            ledger.record("issue-2", reader, SENT, "250 ok")
    folder = _maildir(tmp_path / "inbox", _fixtures())
    report = process(settings, Maildir(folder))
    assert report.summary() == SUMMARY_ALL
    with _ledger(settings) as ledger:
        assert {s.email: s.reason for s in ledger.suppressions()} == {
            "gone@example.net": Reason.BOUNCED,
            "old.reader@example.net": Reason.BOUNCED,  # flufl's guess, proven by our digest
            "left@contoso.example": Reason.BOUNCED,
            "missing.reader@example.net": Reason.BOUNCED,
            "complainer@yahoo.example": Reason.COMPLAINED,
            "quiet@example.net": Reason.COMPLAINED,  # redacted: found by the digest
            "leaver@example.net": Reason.UNSUBSCRIBED,  # from their own address
        }
        states = {d.email: d.state for d in ledger.deliveries("issue-2")}
        bounced = {e for e, s in states.items() if s == DeliveryState.BOUNCED}
        assert bounced == {
            "gone@example.net",
            "old.reader@example.net",
            "left@contoso.example",
            "missing.reader@example.net",
        }
        assert ledger.soft_streak("full@example.net") == 1
        assert ledger.feedback_counts("issue-2") == {HARD: 4, SOFT: 3, COMPLAINT: 2, UNSUBSCRIBE: 0}
    # Handled ones moved; the five not understood left where they were.
    left = sorted(p.name for p in (folder / "new").iterdir())
    assert left == sorted(n for n, (kind, _, _) in TABLE.items() if kind is None)
    assert len(list((folder / ".processed" / "cur").iterdir())) == 10
    assert (folder / ".processed" / "maildirfolder").exists()

    # The same messages again (another copy of the mailbox): nothing changes.
    with _ledger(settings) as ledger:
        before = (ledger.suppressions(), list(ledger.deliveries("issue-2")))
    again = process(settings, Maildir(_maildir(tmp_path / "again", _fixtures())), keep=True)
    assert again.summary() == (
        "read 15: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 10 already handled,"
        " 5 not understood"
    )
    with _ledger(settings) as ledger:
        assert (ledger.suppressions(), list(ledger.deliveries("issue-2"))) == before

    status = cli(settings, "status", "issue-2")
    assert status.exit_code == 0, status.output
    assert re.search(r"^  sent\s+7$", status.stdout, re.M), status.stdout
    assert re.search(r"^  bounced\s+4$", status.stdout, re.M), status.stdout
    assert re.search(r"^  complained\s+2$", status.stdout, re.M), status.stdout


def test_our_digest_is_the_one_in_composers_message_ids(
    settings: Settings, built: Callable[[Path], tuple[object, object]], module_project: Path
) -> None:
    _, email = built(module_project / "issues" / "issue-2.md")
    composer = Composer(email, settings)  # type: ignore[arg-type]
    for address in ("ada@example.org", "Kurt.Godel@Example.com"):
        want = f"<issue-2.{digest(SECRET, 'issue-2', address)}@example.org>"
        assert composer.message_id(address) == want


def test_a_flufl_guess_without_proof_is_not_understood(settings: Settings, tmp_path: Path) -> None:
    with _ledger(settings) as ledger:
        ledger.record("issue-2", "old.reader@example.net", SENT)
    exim = (BOUNCES / "exim-plain.eml").read_bytes()
    unproven = re.sub(rb"(?m)^Message-ID: .*\n", b"", exim)
    report = feed(settings, tmp_path, unproven)
    assert (report.hard, report.soft, report.unknown) == (0, 0, 1)
    with _ledger(settings) as ledger:
        assert not ledger.is_suppressed("old.reader@example.net")
        assert ledger.soft_streak("old.reader@example.net") == 0


def _without_our_id(name: str) -> bytes:
    """A fixture with the Message-ID of our copy removed: nothing proves the copy was ours."""
    return re.sub(
        rb"(?m)^(Message-ID|In-Reply-To|References): <issue-2.*\n",
        b"",
        (BOUNCES / name).read_bytes(),
    )


def test_a_bounce_naming_a_reader_without_proof_is_not_understood(
    settings: Settings, tmp_path: Path
) -> None:
    """Being one of our readers is not enough: anyone can write a DSN naming them."""
    _sent(settings, "gone@example.net", "issue-2")
    folder = _maildir(tmp_path / "inbox", {"x": _without_our_id("postfix-5.1.1.eml")})
    report = process(settings, Maildir(folder))
    assert report.summary() == (
        "read 1: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 1 not understood"
    )
    assert report.lines == [
        "not understood  new/x: RFC 3464 delivery report about gone@example.net: no VERP"
        " address or Message-ID of ours ties it to a copy"
    ]
    assert (folder / "new" / "x").exists()  # left alone
    with _ledger(settings) as ledger:
        assert ledger.suppressions() == []


def test_a_message_twice_is_handled_once(settings: Settings, tmp_path: Path) -> None:
    with _ledger(settings) as ledger:
        ledger.record("issue-2", "ada@example.net", SENT)
    message = dsn("ada@example.net", "issue-2")
    no_id = re.sub(rb"(?m)^Message-Id: .*\n", b"", dsn("bob@example.net", "issue-2"))
    with _ledger(settings) as ledger:
        ledger.record("issue-2", "bob@example.net", SENT)
    report = feed(settings, tmp_path, message, message, no_id, no_id)
    assert report.summary() == (
        "read 4: 2 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 2 already handled,"
        " 0 not understood"
    )


# -- soft bounces in a row ----------------------------------------------------------------


def _sent(settings: Settings, reader: str, *issues: str) -> None:
    with _ledger(settings) as ledger:
        for issue in issues:
            ledger.record(issue, reader, SENT, "250 ok")


def _state(settings: Settings, issue: str, reader: str) -> tuple[DeliveryState | None, bool]:
    with _ledger(settings) as ledger:
        row = delivery(ledger, issue, reader)
        return (row.state if row else None), ledger.is_suppressed(reader)


def test_three_soft_bounces_in_a_row_suppress(settings: Settings, tmp_path: Path) -> None:
    r = "soft@example.net"
    _sent(settings, r, "i1")
    first = feed(settings, tmp_path, dsn(r, "i1", status="4.2.2"))
    assert first.lines == [
        f"soft bounce  {r}  i1  4.2.2 450 4.2.2 mailbox trouble  (1 of 3 in a row)"
    ]
    _sent(settings, r, "i2")
    second = feed(settings, tmp_path, dsn(r, "i2", status="4.4.1", action="delayed"))
    assert second.soft == 1 and "(2 of 3 in a row)" in second.lines[0]
    assert _state(settings, "i2", r) == (SENT, False)
    _sent(settings, r, "i3")
    third = feed(settings, tmp_path, dsn(r, "i3", status="4.2.2"))
    assert third.summary().startswith("read 1: 0 hard bounces, 1 soft,")
    assert third.lines[0].endswith("(suppressed)")
    assert _state(settings, "i3", r) == (DeliveryState.BOUNCED, True)
    assert _state(settings, "i1", r) == (SENT, True)  # only the one that made it 3 moves
    with _ledger(settings) as ledger:
        [only] = ledger.suppressions()
        assert (only.reason, only.source) == (Reason.BOUNCED, "soft bounces x3")
        row = delivery(ledger, "i3", r)
        assert row is not None
        assert row.last_reply.startswith(
            "bounced: soft bounces on 3 issues in a row, the last 4.2.2"
        )


def test_a_delivery_between_soft_bounces_resets_the_count(
    settings: Settings, tmp_path: Path
) -> None:
    r = "flaky@example.net"
    _sent(settings, r, "i1")
    feed(settings, tmp_path, dsn(r, "i1", status="4.2.2"))
    # i2 went out and nothing came back: i3 and i4 start a new run.
    _sent(settings, r, "i2", "i3")
    report = feed(settings, tmp_path, dsn(r, "i3", status="4.2.2"))
    assert "(1 of 3 in a row)" in report.lines[0]
    _sent(settings, r, "i4")
    report = feed(settings, tmp_path, dsn(r, "i4", status="4.2.2"))
    assert "(2 of 3 in a row)" in report.lines[0]
    assert _state(settings, "i4", r) == (SENT, False)
    # A second report about the same issue (delayed, then failed) is the same issue.
    again = feed(settings, tmp_path, dsn(r, "i4", status="4.2.2", action="delayed"))
    assert "(2 of 3 in a row)" in again.lines[0]
    _sent(settings, r, "i5")
    last = feed(settings, tmp_path, dsn(r, "i5", status="4.2.2"))
    assert last.lines[0].endswith("(suppressed)")
    assert _state(settings, "i5", r) == (DeliveryState.BOUNCED, True)


def test_in_a_row_is_by_issue_order_not_arrival(settings: Settings, tmp_path: Path) -> None:
    r = "late@example.net"
    _sent(settings, r, "i1", "i2", "i3")
    early = feed(settings, tmp_path, dsn(r, "i1", status="4.2.2"), dsn(r, "i3", status="4.2.2"))
    # i1's report: i2 and i3 went out later and have not come back (yet); then i3's.
    assert ["(0 of 3 in a row)" in line for line in early.lines] == [True, False]
    with _ledger(settings) as ledger:
        assert ledger.soft_streak(r) == 1  # i2 has not come back (yet): the run is i3 alone
    late = feed(settings, tmp_path, dsn(r, "i2", status="4.2.2"))  # i2's report, late
    assert late.lines[0].endswith("(suppressed)")
    with _ledger(settings) as ledger:
        assert ledger.soft_streak(r) == 3


def test_deferred_and_failed_copies_neither_count_nor_break_a_run(
    settings: Settings, tmp_path: Path
) -> None:
    r = "gap@example.net"
    _sent(settings, r, "i1")
    feed(settings, tmp_path, dsn(r, "i1", status="4.2.2"))
    with _ledger(settings) as ledger:
        ledger.record("i2", r, DeliveryState.FAILED, "550 no")  # never reached their server
        ledger.record("i3", r, DeliveryState.DEFERRED, "451 later")
    _sent(settings, r, "i4")
    report = feed(settings, tmp_path, dsn(r, "i4", status="4.2.2"))
    assert "(2 of 3 in a row)" in report.lines[0]


def test_soft_bounce_limit_is_a_setting(module_project: Path, tmp_path: Path) -> None:
    environ = {
        "MAILER_SECRET": SECRET,
        "MAILER_STATE_DIR": str(tmp_path / "state"),
        "MAILER_SOFT_BOUNCE_LIMIT": "1",
    }
    settings = config.load(module_project, environ=environ)
    _sent(settings, "once@example.net", "i1")
    report = feed(settings, tmp_path, dsn("once@example.net", "i1", status="4.2.2"))
    assert report.lines[0].endswith("(suppressed)")
    with pytest.raises(
        config.ConfigError, match="soft_bounce_limit .* must be a whole number from 1 to 100"
    ):
        config.load(module_project, environ={**environ, "MAILER_SOFT_BOUNCE_LIMIT": "0"})


def test_a_hard_bounce_after_soft_ones_suppresses_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    r = "mixed@example.net"
    _sent(settings, r, "i1")
    soft = feed(settings, tmp_path, dsn(r, "i1", status="4.2.2"))
    _sent(settings, r, "i2")
    hard = feed(settings, tmp_path, dsn(r, "i2"))
    assert (soft.soft, hard.hard) == (1, 1)
    assert _state(settings, "i2", r) == (DeliveryState.BOUNCED, True)


def test_a_bounced_row_is_never_overwritten_by_a_send(settings: Settings, tmp_path: Path) -> None:
    r = "gone@example.net"
    _sent(settings, r, "issue-2")
    feed(settings, tmp_path, dsn(r, "issue-2"))
    with _ledger(settings) as ledger:
        ledger.record("issue-2", r, DeliveryState.DEFERRED, "451 later")
        ledger.record("issue-2", r, SENT, "250 ok")
        row = delivery(ledger, "issue-2", r)
        assert row is not None
        assert (row.state, row.attempts) == (DeliveryState.BOUNCED, 1)


# -- complaints and mailed unsubscribes ---------------------------------------------------


def test_an_automatic_mail_to_the_unsubscribe_address_is_not_an_unsubscribe(
    settings: Settings, tmp_path: Path
) -> None:
    mail = (BOUNCES / "unsubscribe-mailto.eml").read_bytes()
    auto = mail.replace(
        b"Subject: unsubscribe\n", b"Subject: unsubscribe\nAuto-Submitted: auto-replied\n"
    )
    found = classify(auto, settings)
    assert (found.kind, found.why) == (None, "an automatic message to the unsubscribe address")
    _sent(settings, "leaver@example.net", "issue-2")
    report = feed(settings, tmp_path, mail)
    assert report.summary().startswith(
        "read 1: 0 hard bounces, 0 soft, 0 complaints, 1 unsubscribes,"
    )
    assert report.lines == ["unsubscribe  leaver@example.net  -  unsubscribe  (suppressed)"]


def test_without_an_unsubscribe_mailto_such_mail_is_not_understood(
    module_project: Path, tmp_path: Path
) -> None:
    environ = {"MAILER_SECRET": SECRET, "MAILER_UNSUBSCRIBE_MAILTO": ""}
    settings = config.load(module_project, environ=environ)
    assert settings.unsubscribe_mailto == "unsubscribe@example.org"  # "" means unset
    found = classify((BOUNCES / "unsubscribe-mailto.eml").read_bytes(), settings)
    assert found.kind is UNSUBSCRIBE
    other = config.with_overrides(settings, unsubscribe_mailto="leave@example.org")
    found = classify((BOUNCES / "unsubscribe-mailto.eml").read_bytes(), other)
    assert (found.kind, found.why) == (None, NOT_A_BOUNCE)


def test_a_mailto_from_someone_on_the_subscriber_list_counts(
    settings: Settings, tmp_path: Path
) -> None:
    """Not sent a copy yet (subscribed since the last issue), but on the list: their own."""
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,name\nLeaver@example.net,Lea\n")
    listed = config.with_overrides(settings, subscribers=str(subscribers))
    mail = (BOUNCES / "unsubscribe-mailto.eml").read_bytes()
    assert feed(settings, tmp_path, mail).unknown == 1  # the project's list: nobody
    report = feed(listed, tmp_path, mail)
    assert report.lines == ["unsubscribe  leaver@example.net  -  unsubscribe  (suppressed)"]


# -- hostile and broken input -------------------------------------------------------------

NASTY = [
    b"",
    b"\x00" * 4096,
    b"\xff\xfe" * 5000,
    b"Subject: " + b"A" * 200_000 + b"\n\nbody",
    b"Content-Type: multipart/mixed; boundary=b\n\n"
    + b"--b\nContent-Type: multipart/mixed; boundary=b\n\n" * 3000,
    b"Content-Type: message/rfc822\n\n" * 2000,
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
    b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
    b"!!!notbase64\n--x--\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
    b"Content-Type: message/delivery-status\n\nReporting-MTA: x\n\nFinal-Recipient: rfc822; <>\n"
    b"Action: failed\nStatus: 9.9.9\n--x--\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
    b"Content-Type: message/delivery-status; charset=no-such-charset\n\n"
    b"Final-Recipient: rfc822; a@b.example\nAction: failed\n--x--\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=x\n\n--x\n"
    b"Content-Type: message/feedback-report\n\nFeedback-Type: abuse\nOriginal-Rcpt-To: <<<@@@>>>\n"
    b"--x\nContent-Type: text/rfc822-headers; charset=\xff\n\nTo: \xff\xfe@\n--x--\n",
    b"From: =?utf-8?b?\xff\xff?= <\x00@\x00>\nTo: unsubscribe@example.org\n\nplease",
]


@pytest.mark.parametrize("data", NASTY, ids=range(len(NASTY)))
def test_hostile_input_is_not_understood_and_never_raises(
    data: bytes, settings: Settings, tmp_path: Path
) -> None:
    classify(data, settings)  # no exception, whatever it makes of it
    report = feed(settings, tmp_path, data)
    assert (report.read, report.unknown) == (1, 1)


def test_a_complaint_naming_a_reader_without_proof_is_left_alone(
    settings: Settings, tmp_path: Path
) -> None:
    _sent(settings, "complainer@yahoo.example", "issue-2")
    report = feed(settings, tmp_path, _without_our_id("yahoo-arf.eml"))
    assert report.unknown == 1 and report.complaints == 0
    assert report.lines[0].endswith(
        "about complainer@yahoo.example: no VERP address or Message-ID of ours ties it to a copy"
    )
    with _ledger(settings) as ledger:
        assert ledger.suppressions() == []


def test_our_message_id_proves_a_reader_the_ledger_does_not_know(
    settings: Settings, tmp_path: Path
) -> None:
    """A copy the ledger has no row for (a test copy, an older ledger) still carries our
    HMAC: the address is suppressed, no delivery row is invented."""
    report = feed(settings, tmp_path, (BOUNCES / "postfix-5.1.1.eml").read_bytes())
    assert report.hard == 1
    with _ledger(settings) as ledger:
        assert ledger.is_suppressed("gone@example.net")
        assert list(ledger.deliveries("issue-2")) == []


# -- the command --------------------------------------------------------------------------


def test_cli_maildir_verbose_and_keep(settings: Settings, tmp_path: Path, cli: Cli) -> None:
    with _ledger(settings) as ledger:
        ledger.record("issue-2", "gone@example.net", SENT)
    folder = _maildir(tmp_path / "inbox", {"a": (BOUNCES / "postfix-5.1.1.eml").read_bytes()})
    result = cli(settings, "bounces", "--maildir", folder, "--keep", "-v")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "read 1: 1 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 0 already handled,"
        " 0 not understood",
        "  hard bounce  gone@example.net  issue-2  5.1.1 550 5.1.1 <gone@example.net>: Recipient"
        " address rejected: User unknown in virtual mailbox table  (suppressed)",
    ]
    assert (folder / "new" / "a").exists()
    again = cli(settings, "bounces", "--maildir", folder)
    assert again.stdout.splitlines() == [
        "read 1: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 1 already handled,"
        " 0 not understood"
    ]
    assert not (folder / "new" / "a").exists()
    assert [p.name for p in (folder / ".processed" / "cur").iterdir()] == ["a:2,S"]


def test_cli_mbox_is_read_and_never_changed(settings: Settings, tmp_path: Path, cli: Cli) -> None:
    with _ledger(settings) as ledger:
        for reader in READERS:
            ledger.record("issue-2", reader, SENT)
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for data in _fixtures().values():
        box.add(data)
    box.close()
    before = path.read_bytes()
    first = cli(settings, "bounces", "--mbox", path)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [SUMMARY_ALL]
    second = cli(settings, "bounces", "--mbox", path)
    assert second.stdout.splitlines() == [
        "read 15: 0 hard bounces, 0 soft, 0 complaints, 0 unsubscribes, 10 already handled,"
        " 5 not understood"
    ]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "args,code,text",
    [
        ((), 2, "give exactly one of --maildir DIR, --mbox FILE or --imap"),
        (("--imap", "--mbox", "x"), 2, "give exactly one of"),
        (("--maildir", "no-such-dir"), 65, "not a Maildir (no cur/ and new/ in it)"),
        (("--mbox", "no-such.mbox"), 65, "cannot read the mbox: No such file or directory"),
        (("--mbox", "mailer.toml"), 65, "not an mbox (it does not start with a 'From ' line)"),
        (("--imap",), 2, "--imap needs bounce_imap_host"),
    ],
)
def test_cli_errors_are_one_line(
    settings: Settings, args: tuple[str, ...], code: int, text: str, cli: Cli
) -> None:
    result = cli(settings, "bounces", *args)
    assert result.exit_code == code, result.output
    assert text in result.output
    if code == 65:
        one_line_error(result)


def test_imap_password_must_not_be_in_mailer_toml(tmp_path: Path) -> None:
    (tmp_path / "mailer.toml").write_text('bounce_imap_password = "hunter2"\n')
    with pytest.raises(config.ConfigError, match="does not belong in a file that is committed"):
        config.load(tmp_path, environ={})
    (tmp_path / "mailer.toml").unlink()
    settings = config.load(tmp_path, environ={"MAILER_BOUNCE_IMAP_PASSWORD": "hunter2"})
    assert settings.masked()["bounce_imap_password"] == "********"
    assert settings.bounce_imap_folder == "INBOX" and settings.bounce_imap_port == 993


# -- a running send sees it ---------------------------------------------------------------


def test_a_running_sends_watch_sees_the_suppression(settings: Settings, tmp_path: Path) -> None:
    _sent(settings, "gone@example.net", "issue-2")
    with _ledger(settings) as sending:  # the send's own connection, as campaign.send opens it
        watch = LedgerWatch(sending, frozenset(sending.suppressed_set()), interval=0.05)
        assert not watch.suppressed("gone@example.net")
        feed(settings, tmp_path, dsn("gone@example.net", "issue-2"))
        # Within one interval: the watch polls data_version, sees the commit, reads again.
        deadline = time.monotonic() + 1.0
        while not watch.suppressed("gone@example.net"):
            assert time.monotonic() < deadline, "the running send did not see the bounce"
            time.sleep(0.01)


def test_maildir_and_mbox_sources_name_what_they_read(tmp_path: Path) -> None:
    folder = _maildir(tmp_path / "m", {"one": b"Subject: x\n\nhi"})
    (folder / "cur" / "two:2,S").write_bytes(b"Subject: y\n\nhi")
    (folder / "new" / ".hidden").write_bytes(b"not a message")
    items = list(Maildir(folder).messages())
    assert [i.label for i in items] == ["new/one", "cur/two:2,S"]
    path = tmp_path / "x.mbox"
    box = mailbox.mbox(path)
    box.add(b"Subject: x\n\nhi")
    box.close()
    assert [i.label for i in Mbox(path).messages()] == ["message 1"]
    shutil.rmtree(folder / "cur")
    with pytest.raises(InputError, match="not a Maildir"):
        Maildir(folder)


QMAIL_STYLE = """\
Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.net
To: {to}
Subject: failure notice
Date: Tue, 01 Dec 2026 09:00:09 +0000
Message-ID: <qmail.1764579609.4242@mx.example.net>

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

Sorry, I couldn't find any host by that name.
"""


def test_a_bounce_no_detector_knows_maps_to_its_reader_by_verp(
    module_project: Path, tmp_path: Path
) -> None:
    """Text only the VERP address ties to a reader: counted soft for that reader."""
    from mailer.deliver import verp

    environ = {
        "MAILER_SECRET": SECRET,
        "MAILER_STATE_DIR": str(tmp_path / "state"),
        "MAILER_BOUNCE_ADDRESS": "bounces@example.org",
    }
    settings = config.load(module_project, environ=environ)
    with _ledger(settings) as ledger:
        ledger.record("issue-2", "quiet.reader@example.net", SENT)
    to = verp.address(settings, "issue-2", "quiet.reader@example.net")
    report = feed(settings, tmp_path, QMAIL_STYLE.format(to=to).encode())
    assert (report.hard, report.soft, report.unknown) == (0, 1, 0)
    with _ledger(settings) as ledger:
        assert ledger.soft_streak("quiet.reader@example.net") == 1
        assert not ledger.is_suppressed("quiet.reader@example.net")
    # Sent to the plain bounce address, nothing says whose it is: left alone.
    plain = QMAIL_STYLE.format(to="bounces@example.org").encode()
    report = feed(settings, tmp_path, plain.replace(b"4242", b"4343"))
    assert (report.hard, report.soft, report.unknown) == (0, 0, 1)
