"""transport = ses: Amazon SES v2's API, against moto's server on 127.0.0.1 and botocore's Stubber.

moto (ThreadedMotoServer, real HTTP) takes `send_email` with Raw content and keeps what it
was sent: the happy path runs a real `mailer send issue-2` and compares the bytes, and an
unverified From is its MessageRejected. moto has no GetAccount (its server answers 404), so
its SESv2 responder is given one, reporting MaxSendRate, before the server starts.
Throttling, a paused or suspended account and a reader SES's sandbox rejects are replies
moto cannot produce: botocore's Stubber gives them to an SESTransport called directly.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import dkim
import pytest
from botocore.stub import Stubber
from conftest import FAILED, SECRET, SENT, MailerCli
from moto.server import ThreadedMotoServer
from moto.sesv2 import urls as moto_sesv2_urls
from moto.sesv2.responses import SESV2Response

import mailer.deliver.dkim_keys as mdkim
from mailer import config
from mailer.deliver.message import Message
from mailer.deliver.transports import factory, rate_ceiling
from mailer.deliver.transports import ses as ses_mod
from mailer.deliver.transports.ses import SESAuthError, SESPaused, SESRefused, SESTransport
from mailer.errors import EXIT_TEMPFAIL
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState

REGION = "us-east-1"
READERS = [f"r{i:02d}@example.com" for i in range(8)]
FROM = "newsletter@example.org"  # mailer.toml's From
MAX_SEND_RATE = 14.0

pytestmark = pytest.mark.usefixtures("render_memo")


# -- moto's server ------------------------------------------------------------------------


def _get_account(self: SESV2Response) -> str:
    """GetAccount as SES answers it: moto's SESv2 server has neither the route nor the action."""
    return json.dumps(
        {
            "SendingEnabled": True,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendQuota": {
                "Max24HourSend": 50000.0,
                "MaxSendRate": MAX_SEND_RATE,
                "SentLast24Hours": 0,
            },
        }
    )


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    # Before the server's first request builds its routes from url_paths.
    moto_sesv2_urls.url_paths.setdefault("{0}/v2/email/account$", SESV2Response.dispatch)
    SESV2Response.get_account = _get_account  # type: ignore[attr-defined]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The standard AWS variables pointing at moto (nothing from whoever runs the tests)."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    env = {
        "AWS_ENDPOINT_URL_SESV2": moto_url,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "AKIDMAILERTEST000000",
        "AWS_SECRET_ACCESS_KEY": "mailer-test-secret-access-key",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    urllib.request.urlopen(urllib.request.Request(moto_url + "/moto-api/reset", method="POST"))
    return env


def sesv2() -> Any:
    return boto3.client("sesv2", region_name=REGION)


def sent_by_moto(moto_url: str) -> list[dict[str, Any]]:
    """What moto's SES kept: each raw message with its source and destinations."""
    with urllib.request.urlopen(moto_url + "/moto-api/data.json") as reply:
        data = json.load(reply)
    return list(data["ses"]["RawMessage"])


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email,name\n" + "".join(f"{a},Reader {a[1:3]}\n" for a in READERS))


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ses-dkim") / "mail.rsa.pem"
    path.write_bytes(mdkim.generate(mdkim.RSA)[0])
    return path


def send_env(aws: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        **aws,
        "MAILER_TRANSPORT": "ses",
        "MAILER_SECRET": SECRET,
        "MAILER_RATE": "off",
        "MAILER_RETRY_DELAY": "0.2",
        "MAILER_RETRY_WINDOW": "1s",
        **extra,
    }


def ledger_rows(project: Path) -> dict[str, tuple[str, int, str]]:
    if not (project / ".mailer" / "ledger.db").exists():
        return {}
    with Ledger(project / ".mailer") as ledger:
        rows = list(ledger.deliveries("issue-2"))
    assert all(n == 1 for n in Counter(d.email for d in rows).values())
    return {d.email: (d.state, d.attempts, d.last_reply) for d in rows}


# -- a real send through moto ---------------------------------------------------------------


def test_send_issue_through_ses_sends_every_reader_once_with_the_exact_bytes(
    project: Path,
    aws: dict[str, str],
    moto_url: str,
    dkim_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    mailer_cli: MailerCli,
) -> None:
    sesv2().create_email_identity(EmailIdentity="example.org")
    handed: dict[str, bytes] = {}
    request = SESTransport.request

    def spy(self: SESTransport, message: Message) -> dict[str, Any]:
        handed[message.recipient] = message.data
        return request(self, message)

    monkeypatch.setattr(SESTransport, "request", spy)
    env = send_env(
        aws,
        MAILER_DKIM_KEY_FILE=str(dkim_key),
        MAILER_BOUNCE_ADDRESS="bounces@example.org",
        MAILER_CONNECTIONS="2",
    )
    result = mailer_cli(project, "send", "issue-2", "--yes", env=env)
    assert result.exit_code == 0, result.output
    # MAILER_RATE=off, and the account's MaxSendRate (14/s) is the ceiling: it is said.
    assert "via Amazon SES (2 connection(s), rate 14/s (SES's MaxSendRate))" in result.output
    rows = ledger_rows(project)
    assert {e: s for e, (s, _, _) in rows.items()} == dict.fromkeys(READERS, SENT)
    assert all("accepted by Amazon SES as " in reply for _, _, reply in rows.values())

    kept = sent_by_moto(moto_url)
    assert len(kept) == len(READERS)  # every reader once
    by_reader = {}
    for raw in kept:
        assert raw["source"] == FROM  # FromEmailAddress: the From header's identity
        assert raw["destinations"][0] in READERS
        by_reader[raw["destinations"][0]] = raw["raw_data"].encode("utf-8")
    assert set(by_reader) == set(READERS)
    for reader, data in by_reader.items():
        assert data == handed[reader]  # the same bytes the Composer made: DKIM included
        assert data.startswith(b"DKIM-Signature: ")
        assert f"To: Reader {reader[1:3]} <{reader}>".encode() in data
    # SES rewrites Message-ID and Date: they are not signed, so the signature survives that.
    [key] = mdkim.load_keys(config.load(project, environ=env))
    records = {f"{key.dns_name}.".encode(): key.dns_value.encode()}
    sample = by_reader[READERS[0]]
    signed = re.search(rb"\bh=([^;]+);", sample.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b""))
    assert signed is not None
    names = {n.strip().lower() for n in signed.group(1).replace(b" ", b"").split(b":")}
    assert b"from" in names and not names & {b"date", b"message-id"}
    rewritten = re.sub(rb"(?m)^Message-ID: [^\r]+", b"Message-ID: <x@email.amazonses.com>", sample)
    rewritten = re.sub(rb"(?m)^Date: [^\r]+", b"Date: Thu, 03 Dec 2026 09:00:00 +0000", rewritten)
    assert rewritten != sample
    assert dkim.DKIM(rewritten).verify(dnsfunc=lambda name, timeout=5: records.get(name))
    # And again: nobody is sent twice.
    again = mailer_cli(project, "send", "issue-2", "--yes", env=env)
    assert again.exit_code == 0, again.output
    assert len(sent_by_moto(moto_url)) == len(READERS)


def test_an_unverified_from_stops_the_run_before_anyone_is_marked(
    project: Path, aws: dict[str, str], moto_url: str, mailer_cli: MailerCli
) -> None:
    """moto rejects a From no identity covers (MessageRejected, 'Did not have authority to
    send from email ...'): about us, not a reader, so no reader may be marked failed."""
    sesv2().create_email_identity(EmailIdentity="other.example")
    result = mailer_cli(project, "send", "issue-2", "--yes", env=send_env(aws))
    assert result.exit_code == SESRefused.exit_code, result.output
    assert "will not send as newsletter@example.org" in result.output
    assert "MessageRejected" in result.output
    assert aws["AWS_SECRET_ACCESS_KEY"] not in result.output
    assert not any(state == FAILED for state, _, _ in ledger_rows(project).values())
    assert sent_by_moto(moto_url) == []


def test_a_message_rejected_reader_fails_and_the_rest_are_sent(
    project: Path,
    aws: dict[str, str],
    moto_url: str,
    monkeypatch: pytest.MonkeyPatch,
    mailer_cli: MailerCli,
) -> None:
    """moto rejects an address it finds malformed (InvalidParameterValue) for that message
    only; SES's own rejection of one reader (MessageRejected, the sandbox) is the Stubber
    test below. Both fail the reader and the others go on."""
    sesv2().create_email_identity(EmailIdentity="example.org")
    bad = READERS[3]
    request = SESTransport.request

    def broken_for_one(self: SESTransport, message: Message) -> dict[str, Any]:
        args = request(self, message)
        if message.recipient == bad:
            args["Destination"] = {"ToAddresses": ["r03@@example.com"]}
        return args

    monkeypatch.setattr(SESTransport, "request", broken_for_one)
    result = mailer_cli(project, "send", "issue-2", "--yes", env=send_env(aws))
    assert result.exit_code == 1, result.output  # some recipients failed permanently
    rows = ledger_rows(project)
    assert rows[bad][0] == FAILED
    assert "InvalidParameterValue" in rows[bad][2]
    assert {e for e, (s, _, _) in rows.items() if s == SENT} == set(READERS) - {bad}
    assert len(sent_by_moto(moto_url)) == len(READERS) - 1


def test_rate_ceiling_is_the_accounts_max_send_rate(project: Path, aws: dict[str, str]) -> None:
    settings = config.load(project, environ={"MAILER_TRANSPORT": "ses", "MAILER_SECRET": SECRET})
    assert rate_ceiling(settings) == MAX_SEND_RATE
    assert rate_ceiling(config.load(project, environ={})) is None  # smtp: no ceiling


def test_factory_shares_one_client(project: Path, aws: dict[str, str]) -> None:
    settings = config.load(project, environ={"MAILER_TRANSPORT": "ses", "MAILER_SECRET": SECRET})
    make = factory(settings, "bounces@example.org")
    first, second = make(), make()
    assert isinstance(first, SESTransport) and isinstance(second, SESTransport)
    assert first.ses is second.ses


def test_no_region_and_no_credentials_are_one_line_errors(
    project: Path, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.load(project, environ={"MAILER_TRANSPORT": "ses", "MAILER_SECRET": SECRET})
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(config.ConfigError, match="needs an AWS region"):
        ses_mod.client(settings)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SESAuthError, match="no AWS credentials"):
        ses_mod.client(settings)


def test_missing_boto3_is_one_line(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    import importlib

    real = importlib.import_module

    def no_boto3(name: str, *args: Any) -> Any:
        if name.startswith(("boto3", "botocore")):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_boto3)
    settings = config.load(project, environ={"MAILER_TRANSPORT": "ses", "MAILER_SECRET": SECRET})
    with pytest.raises(config.ConfigError, match=r"needs boto3: pip install 'mailer\[ses\]'"):
        ses_mod.client(settings)


# -- replies moto cannot give: botocore's Stubber ---------------------------------------------


@pytest.fixture
def settings(project: Path) -> config.Settings:
    return config.load(project, environ={"MAILER_TRANSPORT": "ses", "MAILER_SECRET": SECRET})


@pytest.fixture
def stubbed(aws: dict[str, str]) -> Iterator[tuple[Any, Stubber]]:
    client = sesv2()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


MESSAGE = Message(
    "reader@example.com",
    "<issue-2.x@example.org>",
    b"From: newsletter@example.org\r\nTo: reader@example.com\r\n\r\nhello\r\n",
    "bounces+token@example.org",
)


def transport(settings: config.Settings, client: Any) -> SESTransport:
    t = SESTransport(settings, "bounces@example.org", client)
    t.open()
    return t


def expect_send(stubber: Stubber) -> None:
    stubber.add_response(
        "send_email",
        {"MessageId": "0100-abc"},
        {
            "FromEmailAddress": FROM,
            "Destination": {"ToAddresses": ["reader@example.com"]},
            "Content": {"Raw": {"Data": MESSAGE.data}},
            "FeedbackForwardingEmailAddress": "bounces+token@example.org",
        },
    )


def test_stubbed_request_carries_from_destination_raw_bytes_and_the_verp_address(
    settings: config.Settings, stubbed: tuple[Any, Stubber]
) -> None:
    client, stubber = stubbed
    expect_send(stubber)
    result = transport(settings, client).send(MESSAGE)
    assert result.state == SENT and result.code == 250
    assert "0100-abc" in result.reply


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        ("TooManyRequestsException", 429, "Maximum sending rate exceeded."),
        ("Throttling", 400, "Rate exceeded"),
        ("ThrottlingException", 400, "Rate exceeded"),
    ],
)
def test_throttling_defers_with_454_so_the_loop_slows_down(
    settings: config.Settings, stubbed: tuple[Any, Stubber], code: str, status: int, text: str
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("send_email", code, text, http_status_code=status)
    result = transport(settings, client).send(MESSAGE)
    assert result.state == DeliveryState.DEFERRED
    assert result.code == 454 and result.throttled
    assert not result.dropped
    assert code in result.reply


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("SendingPausedException", "Sending is paused for this account."),
        ("AccountSuspendedException", "The account has been suspended for sending."),
    ],
)
def test_paused_or_suspended_account_stops_the_run_with_exit_75(
    settings: config.Settings, stubbed: tuple[Any, Stubber], code: str, text: str
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("send_email", code, text, http_status_code=400)
    with pytest.raises(SESPaused) as caught:
        transport(settings, client).send(MESSAGE)
    assert caught.value.exit_code == EXIT_TEMPFAIL == 75
    assert code in caught.value.format_message() and text in caught.value.format_message()


def test_daily_quota_stops_the_run_with_exit_75(
    settings: config.Settings, stubbed: tuple[Any, Stubber]
) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "send_email", "LimitExceededException", "Daily message quota exceeded.", 400
    )
    with pytest.raises(SESPaused, match="quota"):
        transport(settings, client).send(MESSAGE)


@pytest.mark.parametrize(
    ("identity", "stops"),
    [("reader@example.com", False), ("bounces+token@example.org", True)],
    ids=["the-reader-fails", "our-feedback-address-stops-the-run"],
)
def test_a_not_verified_rejection_is_the_readers_or_ours(
    settings: config.Settings, stubbed: tuple[Any, Stubber], identity: str, stops: bool
) -> None:
    """SES's sandbox naming the reader fails that reader; naming our own (feedback) address
    stops the run, as a refused MAIL FROM does: every message would fail the same way."""
    client, stubber = stubbed
    text = (
        "Email address is not verified. The following identities failed the check in region"
        f" US-EAST-1: {identity}"
    )
    stubber.add_client_error("send_email", "MessageRejected", text, 400)
    if stops:
        with pytest.raises(SESRefused):
            transport(settings, client).send(MESSAGE)
        return
    result = transport(settings, client).send(MESSAGE)
    assert result.state == FAILED and result.code == 554
    assert "MessageRejected" in result.reply


def test_aws_5xx_defers_as_a_lost_connection(
    settings: config.Settings, stubbed: tuple[Any, Stubber]
) -> None:
    client, stubber = stubbed
    stubber.add_client_error("send_email", "InternalFailure", "oops", 500)
    result = transport(settings, client).send(MESSAGE)
    assert result.state == DeliveryState.DEFERRED and result.dropped and not result.throttled


def test_refused_credentials_stop_the_run_and_never_show_the_secret(
    settings: config.Settings, stubbed: tuple[Any, Stubber], aws: dict[str, str]
) -> None:
    client, stubber = stubbed
    leak = f"signature for {aws['AWS_SECRET_ACCESS_KEY']} does not match"
    stubber.add_client_error("send_email", "SignatureDoesNotMatch", leak, 403)
    with pytest.raises(SESAuthError) as caught:
        transport(settings, client).send(MESSAGE)
    assert caught.value.exit_code == 77
    assert aws["AWS_SECRET_ACCESS_KEY"] not in caught.value.format_message()
    assert "********" in caught.value.format_message()


def test_stubbed_rate_ceiling_and_a_paused_account(
    settings: config.Settings, stubbed: tuple[Any, Stubber]
) -> None:
    client, stubber = stubbed
    quota = {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0}
    stubber.add_response("get_account", {"SendingEnabled": True, "SendQuota": quota})
    assert ses_mod.max_send_rate(settings, client) == 1.0  # the sandbox's 1 a second
    stubber.add_response(
        "get_account",
        {"SendingEnabled": False, "EnforcementStatus": "SHUTDOWN", "SendQuota": quota},
    )
    with pytest.raises(SESPaused, match="SHUTDOWN"):
        ses_mod.max_send_rate(settings, client)
    stubber.add_client_error("get_account", "AccessDeniedException", "not allowed", 403)
    with pytest.raises(SESAuthError) as caught:
        ses_mod.max_send_rate(settings, client)
    assert "ses:GetAccount" in caught.value.format_message()  # the hint says what to allow


# -- the send loop with SES's replies moto cannot give ----------------------------------------


def stubbed_send(
    project: Path, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, replies: list[str]
) -> tuple[Any, Stubber]:
    """`mailer send` with the shared client stubbed: each reply in turn, "ok" or an error code."""
    client = sesv2()
    stubber = Stubber(client)
    for reply in replies:
        if reply == "ok":
            stubber.add_response("send_email", {"MessageId": "0100-stub"})
        else:
            status = 429 if reply == "TooManyRequestsException" else 400
            stubber.add_client_error("send_email", reply, f"{reply} said SES", status)
    stubber.activate()
    monkeypatch.setattr(ses_mod, "client", lambda settings: client)
    return client, stubber


def test_a_paused_account_mid_run_exits_75_and_leaves_the_rest_owed(
    project: Path, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, mailer_cli: MailerCli
) -> None:
    _, stubber = stubbed_send(project, aws, monkeypatch, ["ok", "ok", "SendingPausedException"])
    result = mailer_cli(project, "send", "issue-2", "--yes", env=send_env(aws))
    assert result.exit_code == 75, result.output
    assert "SendingPausedException" in result.output
    rows = ledger_rows(project)
    assert sorted(e for e, (s, _, _) in rows.items() if s == SENT) == READERS[:2]
    assert all(s == SENT for s, _, _ in rows.values())  # the third reader stays unmarked
    stubber.assert_no_pending_responses()


def test_throttling_in_a_run_defers_slows_down_and_then_sends_everyone(
    project: Path, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, mailer_cli: MailerCli
) -> None:
    throttled = ["TooManyRequestsException"] * 3
    replies = ["ok", *throttled, *["ok"] * (len(READERS) - 1)]
    _, stubber = stubbed_send(project, aws, monkeypatch, replies)
    env = send_env(aws, MAILER_RATE="50/s")
    result = mailer_cli(project, "send", "issue-2", "--yes", env=env)
    assert result.exit_code == 0, result.output
    rows = ledger_rows(project)
    assert {e: s for e, (s, _, _) in rows.items()} == dict.fromkeys(READERS, SENT)
    assert sum(attempts for _, attempts, _ in rows.values()) == len(READERS) + len(throttled)
    assert "slow-downs for a throttling server" in result.output  # Result.throttled did it
    stubber.assert_no_pending_responses()
