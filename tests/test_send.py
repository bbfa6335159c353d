"""The send loop (deliver.sender.Sender) against the real aiosmtpd server and a scripted Outbox."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DEFERRED, FAILED, SENT, delivery
from smtp_server import SMTPServer

from mailer import config
from mailer.compose import issue as issue_mod
from mailer.compose import render as render_mod
from mailer.compose.render import Email
from mailer.deliver.audience import Audience
from mailer.deliver.message import Composer, Message
from mailer.deliver.sender import NullRecorder, Sender, SendOptions
from mailer.deliver.transports import DryRunTransport, Outbox, Result
from mailer.deliver.transports.smtp import SMTPTransport, dot_stuff
from mailer.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    MailerError,
    SMTPAuthError,
    SMTPUnavailable,
)
from mailer.state.ledger import Ledger
from mailer.state.subscribers import Subscriber

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(rate=float("inf"), retry_delay=0.02)


@pytest.fixture(scope="module")
def project(module_project: Path) -> Path:
    return module_project


@pytest.fixture(scope="module")
def base_settings(project: Path) -> config.Settings:
    return config.load(
        project,
        environ={
            "MAILER_SECRET": "test-secret-of-the-suite",
            "MAILER_SMTP_HOST": "127.0.0.1",
            "MAILER_SMTP_SECURITY": "none",
            "MAILER_SMTP_TIMEOUT": "5",
        },
    )


@pytest.fixture(scope="module")
def email(project: Path, base_settings: config.Settings) -> Email:
    return render_mod.render(issue_mod.read(project / "issues" / "issue-2.md"), base_settings)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "state") as opened:
        yield opened


def people(n: int, domain: str = "example.com") -> list[Subscriber]:
    return [Subscriber(f"r{i:03d}@{domain}", f"Reader {i}", {}, i + 2) for i in range(n)]


def smtp_sender(
    email: Email,
    settings: config.Settings,
    server: SMTPServer,
    ledger: Ledger | None,
    **options: object,
) -> Sender:
    s = dataclasses.replace(settings, smtp_port=server.port)
    composer = Composer(email, s)
    opts = SendOptions(**{**FAST, **options})  # type: ignore[arg-type]
    factory = lambda: SMTPTransport(s, composer.envelope_from)  # noqa: E731
    return Sender(email, composer, factory, ledger, opts, audience=history(ledger, opts))


def history(ledger: Ledger | None, opts: SendOptions) -> Audience:
    """Who the ledger says is still owed issue-2, as a real run reads it before starting."""
    return Audience.of(
        ledger,
        "issue-2",
        retry_failed=opts.retry_failed,
        retry_delay=opts.retry_delay,
        max_attempts=opts.max_attempts,
    )


def states(ledger: Ledger, issue: str = "issue-2") -> dict[str, str]:
    return {d.email: d.state for d in ledger.deliveries(issue)}


def sessions(server: SMTPServer) -> list[int]:
    """Messages per SMTP session, in session order."""
    counts = Counter(m.session_id for m in server.received)
    return [counts[k] for k in sorted(counts)]


# -- the real server ----------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["no-pipelining", "pipelining"])
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SMTPServer]:
    """conftest's server, offering PIPELINING or not: every test here holds either way."""
    with SMTPServer(pipelining=request.param) as server:
        yield server


def test_everyone_gets_exactly_one_copy(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(12)
    summary = smtp_sender(email, base_settings, smtp_server, ledger).run(subs, len(subs))
    assert summary.sent == 12 and summary.failed == 0 and summary.deferred == 0
    assert summary.exit_code == EXIT_OK
    assert smtp_server.by_recipient() == {s.email: 1 for s in subs}
    assert states(ledger) == {s.email: SENT for s in subs}
    assert {m.mail_from for m in smtp_server.received} == {"newsletter@example.org"}
    assert smtp_server.connections == 1  # one connection reused for all twelve


def test_batch_size_reconnects(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(7)
    summary = smtp_sender(email, base_settings, smtp_server, ledger, batch_size=3).run(subs, 7)
    assert summary.sent == 7
    assert sessions(smtp_server) == [3, 3, 1]
    assert smtp_server.connections == 3
    assert smtp_server.by_recipient() == {s.email: 1 for s in subs}


def test_several_connections_share_the_list(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(40)
    sender = smtp_sender(email, base_settings, smtp_server, ledger, batch_size=4, connections=3)
    summary = sender.run(subs, 40)
    assert summary.sent == 40
    assert smtp_server.by_recipient() == {s.email: 1 for s in subs}
    per_session = sessions(smtp_server)
    assert max(per_session) <= 4
    assert 10 <= len(per_session) <= 12  # ceil(n_i / 4) per connection, n_i summing to 40
    assert states(ledger) == {s.email: SENT for s in subs}


def test_one_login_per_connection(
    email: Email,
    base_settings: config.Settings,
    smtp_server_factory: Callable[..., SMTPServer],
    ledger: Ledger,
) -> None:
    server = smtp_server_factory(auth=("news", "s3cret"))
    s = dataclasses.replace(base_settings, smtp_user="news", smtp_password="s3cret")
    subs = people(10)
    summary = smtp_sender(email, s, server, ledger, batch_size=4).run(subs, 10)
    assert summary.sent == 10
    assert server.connections == 3
    assert server.logins == 3  # per connection, not per message
    assert server.by_recipient() == {x.email: 1 for x in subs}


def test_refused_recipient_fails_and_the_connection_goes_on(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(5)
    smtp_server.reject.add(subs[1].email)
    summary = smtp_sender(email, base_settings, smtp_server, ledger).run(subs, 5)
    assert (summary.sent, summary.failed, summary.deferred) == (4, 1, 0)
    assert summary.exit_code == EXIT_FAILED
    assert list(summary.failures) == [(subs[1].email, "550 5.1.1 No such user")]
    got = delivery(ledger, "issue-2", subs[1].email)
    assert got is not None and got.state == FAILED and got.attempts == 1
    assert got.last_reply == "550 5.1.1 No such user"
    # RSET, not a new connection: everything went through session 1.
    assert smtp_server.connections == 1 and sessions(smtp_server) == [4]
    assert subs[1].email not in smtp_server.by_recipient()


def test_deferred_once_is_retried_in_the_same_run(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(4)
    smtp_server.defer_once.add(subs[0].email)
    summary = smtp_sender(email, base_settings, smtp_server, ledger).run(subs, 4)
    assert (summary.sent, summary.failed, summary.deferred, summary.retries) == (4, 0, 0, 1)
    assert summary.exit_code == EXIT_OK
    assert smtp_server.by_recipient() == {s.email: 1 for s in subs}
    got = delivery(ledger, "issue-2", subs[0].email)
    assert got is not None and got.state == SENT and got.attempts == 2
    assert smtp_server.connections == 1


def test_always_deferred_stays_deferred(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(3)
    smtp_server.defer.add(subs[2].email)
    sender = smtp_sender(email, base_settings, smtp_server, ledger, max_attempts=3)
    summary = sender.run(subs, 3)
    assert (summary.sent, summary.failed, summary.deferred) == (2, 0, 1)
    assert summary.exit_code == EXIT_TEMPFAIL
    assert list(summary.failures) == [(subs[2].email, "451 4.7.1 Try again later")]
    got = delivery(ledger, "issue-2", subs[2].email)
    assert got is not None and got.state == DEFERRED and got.attempts >= 3
    assert got.last_reply == "451 4.7.1 Try again later"
    assert smtp_server.by_recipient() == {subs[0].email: 1, subs[1].email: 1}


def test_non_throttling_4xx_uses_exactly_max_attempts(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    full = Result(DEFERRED, 452, "452 4.2.2 Mailbox full")
    outbox = outbox_of(lambda to, n: full if to == "r001@example.com" else OK)
    summary = scripted(email, base_settings, outbox, ledger, max_attempts=4).run(people(3), 3)
    assert outbox.recipients.count("r001@example.com") == 4
    assert (summary.sent, summary.deferred, summary.slowdowns) == (2, 1, 0)
    got = delivery(ledger, "issue-2", "r001@example.com")
    assert got is not None and (got.state, got.attempts) == (DEFERRED, 4)
    assert got.last_reply == "452 4.2.2 Mailbox full"


def test_one_greylisted_recipient_gets_max_attempts_and_no_slowdown(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(3)
    smtp_server.defer.add(subs[2].email)
    sender = smtp_sender(email, base_settings, smtp_server, ledger, max_attempts=3)
    summary = sender.run(subs, 3)
    got = delivery(ledger, "issue-2", subs[2].email)
    assert got is not None and (got.state, got.attempts) == (DEFERRED, 3)
    assert summary.slowdowns == 0


def test_dropped_connection_reconnects_and_retries(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    subs = people(6)
    smtp_server.drop_after = 2  # the third DATA is swallowed and the line hung up
    summary = smtp_sender(email, base_settings, smtp_server, ledger).run(subs, 6)
    assert (summary.sent, summary.failed, summary.deferred) == (6, 0, 0)
    assert summary.exit_code == EXIT_OK
    assert smtp_server.by_recipient() == {s.email: 1 for s in subs}
    assert smtp_server.connections == 2
    assert states(ledger) == {s.email: SENT for s in subs}


def test_wrong_password_stops_before_anyone_is_marked(
    email: Email,
    base_settings: config.Settings,
    smtp_server_factory: Callable[..., SMTPServer],
    ledger: Ledger,
) -> None:
    server = smtp_server_factory(auth=("news", "s3cret"))
    s = dataclasses.replace(base_settings, smtp_user="news", smtp_password="wrong")
    with pytest.raises(SMTPAuthError, match="refused the login for 'news'") as info:
        smtp_sender(email, s, server, ledger).run(people(3), 3)
    assert info.value.exit_code == 77
    assert "\n" not in info.value.message
    assert list(ledger.deliveries("issue-2")) == []
    assert server.received == [] and server.logins == 0


def test_unreachable_server_stops_before_anyone_is_marked(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    with SMTPServer() as server:
        port = server.port
    dead = SMTPServer()
    dead.port = port  # nothing listens here any more
    with pytest.raises(SMTPUnavailable, match=f"cannot reach the SMTP server at 127.0.0.1:{port}"):
        smtp_sender(email, base_settings, dead, ledger).run(people(3), 3)
    assert list(ledger.deliveries("issue-2")) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_non_ascii_address_does_not_stop_the_send(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    # aiosmtpd offers SMTPUTF8: an internationalised address is sent with it, in UTF-8.
    subs = [
        Subscriber("ada@example.com", "Ada", {}, 2),
        Subscriber("josé@example.com", "José", {}, 3),
        Subscriber("bob@example.com", "Bob", {}, 4),
    ]
    summary = smtp_sender(email, base_settings, smtp_server, ledger).run(subs, 3)
    assert smtp_server.by_recipient() == {
        "ada@example.com": 1,
        "josé@example.com": 1,
        "bob@example.com": 1,
    }
    assert (summary.sent, summary.exit_code) == (3, EXIT_OK)
    jose = next(r for r in smtp_server.received if r.rcpt_tos == ["josé@example.com"])
    assert b"<jos\xc3\xa9@example.com>" in jose.data.split(b"\r\n\r\n", 1)[0]


def test_message_that_cannot_be_built_fails_alone(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    # A reader whose message cannot be built is marked failed; the rest go out.
    subs = people(3)
    sender = smtp_sender(email, base_settings, smtp_server, ledger)
    real = sender.composer.compose

    def compose(subscriber: Subscriber, date: str | None = None) -> Message:
        if subscriber.email == subs[1].email:
            raise UnicodeError("cannot encode")
        return real(subscriber, date)

    sender.composer.compose = compose  # type: ignore[method-assign]
    summary = sender.run(subs, 3)
    assert (summary.sent, summary.failed) == (2, 1)
    assert smtp_server.by_recipient() == {subs[0].email: 1, subs[2].email: 1}
    got = delivery(ledger, "issue-2", subs[1].email)
    assert got is not None and got.state == FAILED and "cannot build" in got.last_reply


# -- scripted transports: an Outbox whose replies the test decides ------------------------

OK = Result(SENT, 250, "250 ok")
THROTTLE = Result(DEFERRED, 451, "451 4.7.1 slow down")


def outbox_of(
    reply: Callable[[str, int], Result] = lambda to, n: OK,
    open_fails: Callable[[int], bool] = lambda n: False,
) -> Outbox:
    """An Outbox answering reply(recipient, nth send overall); open #n fails if open_fails(n)."""

    def refuse_open(n: int) -> MailerError | None:
        if open_fails(n):
            return SMTPUnavailable(f"cannot reach the SMTP server (open #{n})")
        return None

    return Outbox(reply=lambda message, n: reply(message.recipient, n), refuse_open=refuse_open)


def scripted(
    email: Email,
    settings: config.Settings,
    outbox: Outbox,
    ledger: Ledger | None,
    *,
    sleeps: list[float] | None = None,
    **options: object,
) -> Sender:
    composer = Composer(email, settings)
    opts = SendOptions(**{**FAST, **options})  # type: ignore[arg-type]
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    clock = iter(range(10**9))  # the rate limiter never waits for real
    return Sender(
        email,
        composer,
        outbox.transport,
        ledger,
        opts,
        audience=history(ledger, opts),
        clock=lambda: float(next(clock)),
        sleep=sleep,
    )


def test_backoff_doubles() -> None:
    options = SendOptions(retry_delay=30.0)
    assert [options.backoff(n) for n in (1, 2, 3, 4, 5)] == [30.0, 60.0, 120.0, 240.0, 480.0]


def test_retries_back_off_exponentially_within_a_run(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    def reply(to: str, n: int) -> Result:
        return THROTTLE if to == "r000@example.com" and n <= 3 else OK

    outbox = outbox_of(reply)
    # throttle_streak high: this is about one recipient's backoff, not about slowing down.
    sender = scripted(
        email, base_settings, outbox, ledger, retry_delay=0.15, max_attempts=5, throttle_streak=100
    )
    summary = sender.run(people(1), 1)
    assert summary.sent == 1 and summary.retries == 3
    times = outbox.sent_at
    assert len(times) == 4
    g1, g2, g3 = (b - a for a, b in zip(times, times[1:], strict=False))
    # 0.15, 0.3, 0.6 s: each wait about twice the one before (ratios, not absolute times).
    assert g2 > 1.3 * g1 and g3 > 1.3 * g2
    assert 2.5 < g3 / g1 < 6.0


def test_pause_between_batches(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    sleeps: list[float] = []
    outbox = outbox_of()
    sender = scripted(email, base_settings, outbox, ledger, sleeps=sleeps, batch_size=3, pause=7.5)
    assert sender.run(people(7), 7).sent == 7
    assert sleeps.count(7.5) == 2  # batches of 3, 3, 1: two pauses between them
    assert outbox.opens == 3


def test_no_pause_after_the_last_batch(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    sleeps: list[float] = []
    outbox = outbox_of()
    sender = scripted(email, base_settings, outbox, ledger, sleeps=sleeps, batch_size=3, pause=60.0)
    assert sender.run(people(6), 6).sent == 6
    assert sleeps.count(60.0) == 1


def test_throttling_server_slows_the_send_down(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    # Every first try is answered 451; retries go through.
    tried: set[str] = set()

    def reply(to: str, n: int) -> Result:
        if to in tried:
            return OK
        tried.add(to)
        return THROTTLE

    outbox = outbox_of(reply)
    sender = scripted(email, base_settings, outbox, ledger, rate=20.0, max_attempts=3)
    summary = sender.run(people(6), 6)
    assert summary.sent == 6 and summary.deferred == 0
    assert summary.slowdowns >= 1
    assert sender.limiter.rate < 20.0


def test_throttling_does_not_burn_attempts(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    # The server answers the first 8 commands with 451 (whoever they are for), then accepts.
    outbox = outbox_of(lambda to, n: THROTTLE if n <= 8 else OK)
    sender = scripted(email, base_settings, outbox, ledger, rate=50.0, max_attempts=2)
    summary = sender.run(people(4), 4)
    assert summary.slowdowns >= 1
    assert (summary.sent, summary.deferred) == (4, 0)


def test_server_lost_mid_run_stops_with_an_error(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    # The first connection works for one batch; every later connection attempt fails.
    outbox = outbox_of(open_fails=lambda n: n > 1)
    sender = scripted(email, base_settings, outbox, ledger, batch_size=2)
    summary = sender.run(people(6), 6)
    assert summary.sent == 2
    assert "cannot reach the SMTP server" in summary.error
    assert summary.exit_code == EXIT_UNAVAILABLE
    # Nobody after the first batch is marked sent or failed.
    assert states(ledger) == {"r000@example.com": SENT, "r001@example.com": SENT}


def test_ledger_skips_who_was_sent_and_failed(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    ledger.record("issue-2", "r000@example.com", SENT, "250 ok")
    ledger.record("issue-2", "r001@example.com", FAILED, "550 no")
    ledger.suppress("r002@example.com", "unsubscribed", "web")
    outbox = outbox_of()
    summary = scripted(email, base_settings, outbox, ledger).run(people(5), 5)
    assert sorted(outbox.recipients) == ["r003@example.com", "r004@example.com"]
    assert (summary.sent, summary.already_done, summary.failed_earlier) == (2, 1, 1)
    assert summary.suppressed == 1

    again = outbox_of()
    summary = scripted(email, base_settings, again, ledger, retry_failed=True).run(people(5), 5)
    assert again.recipients == ["r001@example.com"]
    assert delivery(ledger, "issue-2", "r001@example.com").state == SENT  # type: ignore[union-attr]


def test_deferred_earlier_waits_for_its_backoff(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    ledger.record("issue-2", "r000@example.com", DEFERRED, "451 later")  # just now
    for _ in range(3):
        ledger.record("issue-2", "r001@example.com", DEFERRED, "451 later")  # out of tries
    outbox = outbox_of()
    sender = scripted(email, base_settings, outbox, ledger, retry_delay=3600.0, max_attempts=3)
    summary = sender.run(people(3), 3)
    assert outbox.recipients == ["r002@example.com"]
    assert summary.not_due == 2  # r001's backoff stops growing at max_attempts, but it waits
    assert summary.exit_code == EXIT_TEMPFAIL


def test_deferred_out_of_tries_gets_new_tries_in_a_later_run(
    email: Email, base_settings: config.Settings, ledger: Ledger
) -> None:
    for _ in range(3):
        ledger.record("issue-2", "r001@example.com", DEFERRED, "451 later")
    outbox = outbox_of()
    sender = scripted(email, base_settings, outbox, ledger, retry_delay=0.0, max_attempts=3)
    summary = sender.run(people(2), 2)
    assert sorted(outbox.recipients) == ["r000@example.com", "r001@example.com"]
    assert summary.sent == 2
    assert delivery(ledger, "issue-2", "r001@example.com").state == SENT  # type: ignore[union-attr]


def test_dry_run_writes_samples_and_never_records(
    email: Email, base_settings: config.Settings, ledger: Ledger, tmp_path: Path
) -> None:
    ledger.record("issue-2", "r000@example.com", SENT, "250 ok")
    out = tmp_path / "eml"
    transport = DryRunTransport(out, keep=3)
    composer = Composer(email, base_settings)
    opts = SendOptions().unpaced()
    audience = history(ledger, opts)
    sender = Sender(email, composer, lambda: transport, NullRecorder(), opts, audience=audience)
    summary = sender.run(people(6), 6)
    assert (summary.sent, summary.already_done) == (5, 1)
    assert sorted(p.name for p in out.iterdir()) == [
        "01-r001@example.com.eml",
        "02-r002@example.com.eml",
        "03-r003@example.com.eml",
    ]
    assert states(ledger) == {"r000@example.com": SENT}


@pytest.mark.parametrize(
    "data",
    [b".a\r\nb\r\n.c\r\n..d", b"no dots", b"a\r\n.\r\nb\r\n", b"", b"x\r\n.\r\n.\r\n"],
)
def test_dot_stuffing_matches_smtplib(data: bytes) -> None:
    """The fast dot-stuffing gives exactly the bytes smtplib's own would put on the wire."""
    import re
    import smtplib

    expected = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert dot_stuff(data) == expected
    assert re.search(rb"(?m)^\.(?!\.)", dot_stuff(data)) is None


def test_lines_starting_with_a_dot_arrive_intact(
    email: Email, base_settings: config.Settings, smtp_server: SMTPServer, ledger: Ledger
) -> None:
    settings = dataclasses.replace(base_settings, smtp_port=smtp_server.port)
    transport = SMTPTransport(settings, "news@example.org")
    transport.open()
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
    result = transport.send(Message("ada@example.com", "<x@example.org>", body))
    transport.close()
    assert result.state == SENT
    assert smtp_server.received[0].data == body
