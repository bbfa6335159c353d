"""The envelope sender (mailer/deliver/verp.py): From, bounce_address, or one VERP address per copy,
traced back to (issue, reader) through the ledger; and SMTP's MAIL FROM per message."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import smtp_env
from smtp_server import SMTPServer

from mailer import config
from mailer.campaign import dry_run, plan
from mailer.cli import main
from mailer.compose.render import Email
from mailer.deliver import verp
from mailer.deliver.message import Composer, Message
from mailer.deliver.sender import SendOptions
from mailer.deliver.transports import MemoryTransport, Outbox
from mailer.deliver.transports.smtp import SMTPTransport
from mailer.errors import ConfigError
from mailer.state.ledger import Ledger
from mailer.state.subscribers import Subscriber
from mailer.states import DeliveryState

SECRET = "verp-test-secret"
READERS = ["ada@example.com", "Zoe.Martin@Example.com", "a" * 64 + "@" + "b" * 180 + ".example"]


def settings_for(project: Path, **env: str) -> config.Settings:
    return config.load(project, environ={"MAILER_SECRET": SECRET, **env})


@pytest.fixture(scope="module")
def project(module_project: Path) -> Path:
    return module_project


@pytest.fixture(scope="module")
def email(project: Path) -> Email:
    from mailer.compose import issue as issue_mod
    from mailer.compose.render import render

    return render(issue_mod.read(project / "issues" / "issue-2.md"), settings_for(project))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "state") as book:
        yield book


def test_token_shape_and_the_local_part_limit(project: Path) -> None:
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org")
    addresses = [verp.address(s, "issue-2", r) for r in READERS]
    for address in addresses:
        local = address.rpartition("@")[0]
        assert re.fullmatch(r"bounces\+[a-z2-7]{24}", local)
        assert len(local) <= 64
    assert len(set(addresses)) == len(READERS)  # one per reader
    # The same copy always gets the same address; case and spaces do not make another.
    assert verp.address(s, "issue-2", " ZOE.martin@example.com ") == addresses[1]
    assert verp.address(s, "issue-3", READERS[0]) != addresses[0]  # and per issue
    other = dataclasses.replace(s, secret="another-secret")
    assert verp.address(other, "issue-2", READERS[0]) != addresses[0]
    # The longest bounce local part VERP allows makes exactly 64 octets.
    longest = settings_for(project, MAILER_BOUNCE_ADDRESS="b" * 39 + "@example.org")
    assert len(verp.address(longest, "issue-2", READERS[2]).rpartition("@")[0]) == 64


def test_a_bounce_address_too_long_for_verp_is_a_config_error(project: Path) -> None:
    with pytest.raises(ConfigError) as err:
        settings_for(project, MAILER_BOUNCE_ADDRESS="b" * 40 + "@example.org")
    assert err.value.format_message() == (
        f"bounce_address '{'b' * 40}@example.org': with verp its local part may have at most 39"
        " characters (RFC 5321 allows 64; +TOKEN takes 25)\n"
        "  hint: use a shorter address like bounces@, or set verp = false"
    )
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="b" * 40 + "@example.org", MAILER_VERP="0")
    assert s.verp is False
    for bad in ("bounces", "bounces@localhost", "Bounces <bounces@example.org>"):
        with pytest.raises(ConfigError) as err:
            settings_for(project, MAILER_BOUNCE_ADDRESS=bad)
        assert err.value.message == (
            f"bounce_address must be a bare address like bounces@example.org, got {bad!r}"
        )


def test_envelope_sender_per_message(project: Path, email: Email) -> None:
    reader = Subscriber("Ada@Example.com", "Ada", {}, 2)
    plain = Composer(email, settings_for(project))
    assert plain.envelope_from == "newsletter@example.org"
    assert plain.compose(reader).envelope_from == "newsletter@example.org"

    fixed = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org", MAILER_VERP="no")
    composer = Composer(email, fixed)
    assert composer.envelope_from == "bounces@example.org"
    assert composer.compose(reader).envelope_from == "bounces@example.org"

    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org")
    composer = Composer(email, s)
    date = "Tue, 01 Dec 2026 09:00:00 +0000"
    message = composer.compose(reader, date)
    assert composer.envelope_from == "bounces@example.org"  # a bare Message's fallback
    assert message.envelope_from == verp.address(s, "issue-2", "ada@example.com")
    # VERP changes the envelope only: not one byte of the message.
    assert message.data == plain.compose(reader, date).data


def test_an_internationalised_bounce_domain_goes_out_in_idna(project: Path, email: Email) -> None:
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@bücher.example")
    sender = Composer(email, s).compose(Subscriber("ada@example.com", "", {}, 2)).envelope_from
    assert re.fullmatch(r"bounces\+[a-z2-7]{24}@xn--bcher-kva\.example", sender)


def test_parse_maps_an_address_back_to_issue_and_reader(project: Path, ledger: Ledger) -> None:
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org")
    for reader in READERS:
        ledger.record("issue-2", reader, DeliveryState.SENT, "250 ok")
    ledger.record("issue-1", READERS[0], DeliveryState.SENT, "250 ok")
    for reader in READERS:
        for issue in ("issue-2", "issue-1") if reader == READERS[0] else ("issue-2",):
            address = verp.address(s, issue, reader)
            assert verp.parse(address, s, ledger) == (issue, reader.lower())
            # As headers carry it, in upper case, with a display name.
            assert verp.parse(f"<{address}>", s, ledger) == (issue, reader.lower())
            assert verp.parse(address.upper(), s, ledger) == (issue, reader.lower())
            assert verp.parse(f"Bounces <{address}>", s, ledger) == (issue, reader.lower())
    address = verp.address(s, "issue-2", READERS[0])
    # Not ours: another domain, another local part, no token, a damaged or foreign token.
    assert verp.parse(address.replace("@example.org", "@example.net"), s, ledger) is None
    assert verp.parse(address.replace("bounces+", "news+"), s, ledger) is None
    assert verp.parse("bounces@example.org", s, ledger) is None
    assert verp.parse("bounces+@example.org", s, ledger) is None
    damaged = address[:12] + ("a" if address[12] != "a" else "b") + address[13:]
    assert verp.parse(damaged, s, ledger) is None
    assert verp.parse(address.replace("+", "+x"), s, ledger) is None  # 25 characters
    other = dataclasses.replace(s, secret="another-secret")
    assert verp.parse(address, other, ledger) is None
    assert verp.parse(address, dataclasses.replace(s, bounce_address=""), ledger) is None
    # A copy the ledger never recorded (a test copy) cannot be traced back.
    assert verp.parse(verp.address(s, "issue-2", "nobody@example.com"), s, ledger) is None


def test_parse_sees_deliveries_recorded_after_its_first_look(project: Path, ledger: Ledger) -> None:
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org")
    ledger.record("issue-2", READERS[0], DeliveryState.SENT, "250 ok")
    assert verp.parse(verp.address(s, "issue-2", READERS[0]), s, ledger) is not None
    late = verp.address(s, "issue-2", READERS[1])
    assert verp.parse(late, s, ledger) is None
    ledger.record("issue-2", READERS[1], DeliveryState.SENT, "250 ok")
    assert verp.parse(late, s, ledger) == ("issue-2", READERS[1].lower())


# -- the transports -----------------------------------------------------------------------


def test_smtp_mail_from_is_each_messages_own(
    project: Path, email: Email, smtp_server: SMTPServer
) -> None:
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org")
    s = dataclasses.replace(
        s, smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_security="none"
    )
    composer = Composer(email, s)
    transport = SMTPTransport(s, composer.envelope_from)
    transport.open()
    try:
        messages = [composer.compose(Subscriber(r, "", {}, 2)) for r in READERS[:2]]
        bare = Message(messages[0].recipient, messages[0].message_id, messages[0].data)
        for message in [*messages, bare]:
            assert transport.send(message).state is DeliveryState.SENT
    finally:
        transport.close()
    got = [(m.mail_from, m.rcpt_tos) for m in smtp_server.received]
    assert got == [
        (verp.address(s, "issue-2", READERS[0]), [READERS[0]]),
        (verp.address(s, "issue-2", READERS[1]), [READERS[1]]),
        ("bounces@example.org", [READERS[0]]),  # no envelope_from: the transport's own
    ]


def test_a_real_send_uses_verp_addresses(
    new_project, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = new_project("email,name\nada@example.com,Ada\ngrace@example.com,Grace\n")
    env = {**smtp_env(smtp_server), "MAILER_BOUNCE_ADDRESS": "bounces@example.org"}
    result = CliRunner().invoke(
        main, ["-C", str(root), "send", "issue-2", "--yes", "--rate", "off"], env=env
    )
    assert result.exit_code == 0, result.output
    s = config.load(root, environ=env)
    with Ledger(s.state_path) as book:
        for m in smtp_server.received:
            [rcpt] = m.rcpt_tos
            assert m.mail_from == verp.address(s, "issue-2", rcpt)
            assert verp.parse(m.mail_from, s, book) == ("issue-2", rcpt)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received) == [
        "ada@example.com",
        "grace@example.com",
    ]


def test_dry_run_and_memory_transports_still_work(project: Path, tmp_path: Path) -> None:
    s = settings_for(project, MAILER_BOUNCE_ADDRESS="bounces@example.org")
    s = dataclasses.replace(s, root=tmp_path)
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "issue-2.md").write_bytes(
        (project / "issues" / "issue-2.md").read_bytes()
    )
    subscribers = tmp_path / "subscribers.csv"
    subscribers.write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
    planned = plan(s, "issue-2", subscribers, SendOptions(), dry_run=True)
    rehearsal = dry_run(s, planned)
    assert rehearsal.summary.sent == 1 and len(rehearsal.samples) == 1
    assert rehearsal.samples[0].read_bytes().startswith(b"From: NLP Newsletter")
    outbox = Outbox()
    transport = MemoryTransport(outbox)
    message = planned.composer.compose(Subscriber("ada@example.com", "Ada", {}, 2))
    assert transport.send(message).state is DeliveryState.SENT
    assert outbox.messages[0].envelope_from == verp.address(s, "issue-2", "ada@example.com")
