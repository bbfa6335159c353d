"""Issue 8's faults against a real Postfix, offering PIPELINING or not, at depth 1 and 2.

Postfix's own access maps give the refusals (451, 452 and 550 at RCPT, 421 with a hang-up,
530 at MAIL) and a restriction class that sleeps past the client's timeout after the body
(a hang at end-of-data). That mailer does not pipeline where PIPELINING is not offered is
proved against aiosmtpd, which counts what arrived early (test_pipelining.py): Postfix 3.7
takes a pipelined MAIL, RCPT, DATA even then, `smtpd_forbid_unauth_pipelining` or not.

The sleep is at end-of-data only: a sleep at the next message's RCPT would hold back
Postfix's 250 for the previous body too (it buffers replies while pipelined input waits),
and at depth 2 that copy would time out although delivered (counted "may have arrived").
Postfix cannot be told to hang up after its 250; that fault is
in test_faults.py only (aiosmtpd).

Needs root and /usr/sbin/postfix (`make system`). One Postfix per PIPELINING setting.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from conftest import DEFERRED, FAILED, SECRET, SENT, MailerCli
from postfix import Postfix, requires_postfix, running_postfix

from mailer.state.ledger import Ledger

pytestmark = requires_postfix

N = 20
FAULTS = {  # reader number -> (what Postfix does, the state it must end in, its reply)
    5: ("451 4.7.1 Try again later", DEFERRED, "451 4.7.1 "),
    7: ("452 4.2.2 Mailbox full", DEFERRED, "452 4.2.2 "),
    9: ("550 5.1.1 No such user", FAILED, "550 5.1.1 "),
    12: ("421 4.3.2 Service shutting down", DEFERRED, "421 4.3.2 "),
    14: ("slow", DEFERRED, "connection lost"),  # sleeps 3 s after the body; timeout is 1 s
}
TIMEOUT = "1"


def _maps() -> dict[str, str]:
    def lines(stage: str) -> str:
        return "".join(
            f"/^d[0-9]-r{n:02d}@/ {action}\n"
            for n, (action, _, _) in FAULTS.items()
            if (action == "slow") == (stage == "end-of-data")
        )

    return {
        "rcpt": lines("rcpt"),
        "end-of-data": lines("end-of-data"),
        "senders": "/^blocked[+@]/ 530 5.7.0 Authentication required\n",
    }


def _settings(offer: bool) -> list[str]:
    settings = [
        "smtpd_sender_restrictions = check_sender_access regexp:{config}/senders",
        "smtpd_recipient_restrictions = check_recipient_access regexp:{config}/rcpt,"
        " permit_mynetworks, reject",
        "smtpd_restriction_classes = slow",
        "slow = sleep 3, permit",
        "smtpd_end_of_data_restrictions = check_recipient_access regexp:{config}/end-of-data",
        "smtpd_client_restrictions =",
        "smtpd_delay_reject = no",  # the sender's 530 at MAIL, not (Postfix's default) at RCPT
    ]
    if not offer:
        settings.append("smtpd_discard_ehlo_keywords = pipelining")
    return settings


@pytest.fixture(scope="module", params=[True, False], ids=["offers-pipelining", "does-not"])
def postfix(request: pytest.FixtureRequest) -> Iterator[Postfix]:
    with running_postfix(_settings(request.param), _maps()) as server:
        yield server


def _delivered(server: Postfix) -> Counter[str]:
    parser = BytesHeaderParser()
    got: Counter[str] = Counter()
    for path in server.delivered():
        with path.open("rb") as f:
            got[str(parser.parse(f)["X-Original-To"]).lower()] += 1
    return got


Send = Callable[..., tuple[int, str]]


@pytest.fixture
def send(mailer_cli: MailerCli) -> Send:
    """send(project, server, depth, **env): `mailer send issue-2 --yes` to that Postfix."""

    def run(project: Path, server: Postfix, depth: int, **extra: str) -> tuple[int, str]:
        env = {
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_PORT": str(server.port),
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_SECRET": SECRET,
            "MAILER_SMTP_TIMEOUT": TIMEOUT,
            "MAILER_RETRY_DELAY": "0.2",
            "MAILER_RETRY_WINDOW": "1s",
            "MAILER_RATE": "off",
            "MAILER_CONNECTIONS": "2",
            "MAILER_PIPELINE_DEPTH": str(depth),
            **extra,
        }
        result = mailer_cli(project, "send", "issue-2", "--yes", env=env)
        return result.exit_code, result.output

    return run


def _wait_for(server: Postfix, readers: set[str], seconds: float = 30) -> Counter[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = _delivered(server)
        if readers <= set(got):
            time.sleep(0.5)  # and nothing more arrives after them
            return _delivered(server)
        time.sleep(0.1)
    pytest.fail(f"Postfix delivered {sorted(_delivered(server))}, not {sorted(readers)}")


@pytest.mark.parametrize("depth", [1, 2])
def test_each_fault_ends_as_without_pipelining(
    postfix: Postfix, new_project: Callable[..., Path], depth: int, send: Send
) -> None:
    readers = [f"d{depth}-r{i:02d}@example.com" for i in range(N)]
    project = new_project("email,name\n" + "".join(f"{a},Reader\n" for a in readers))
    code, output = send(project, postfix, depth)
    assert code == 1, output  # a reader failed (550); the deferred ones wait for a later run

    with Ledger(project / ".mailer") as ledger:
        rows = {d.email: d for d in ledger.deliveries("issue-2")}
    faulty = {readers[n]: (state, reply) for n, (_, state, reply) in FAULTS.items()}
    good = set(readers) - set(faulty)
    assert {e for e, d in rows.items() if d.state == SENT} == good
    for reader, (state, reply) in faulty.items():
        assert (rows[reader].state, rows[reader].last_reply[: len(reply)]) == (state, reply)
    got = _wait_for(postfix, good)
    mine = {r: n for r, n in got.items() if r.startswith(f"d{depth}-")}
    assert mine == dict.fromkeys(good, 1)  # each sent reader once, no faulty one at all


def test_530_at_mail_marks_nobody(
    postfix: Postfix, new_project: Callable[..., Path], send: Send
) -> None:
    readers = [f"d0-r{i:02d}@example.com" for i in range(4)]
    project = new_project("email,name\n" + "".join(f"{a},Reader\n" for a in readers))
    code, output = send(project, postfix, 2, MAILER_BOUNCE_ADDRESS="blocked@example.org")
    assert code == 77, output
    assert "refused to relay" in output
    with Ledger(project / ".mailer") as ledger:
        assert list(ledger.deliveries("issue-2")) == []
