"""POST /sns: SNS signatures (v1 SHA1withRSA, v2 SHA256withRSA) and SES feedback into the ledger.

The one thing here that cannot run for real is fetching AWS's signing certificate: a
throwaway key and certificate stand in, handed to mailer.feedback.ses's Verifier for an
https://sns.us-east-1.amazonaws.com/... URL. Everything else is mailer.web's WSGI app,
called as a server calls it, and the ledger it writes.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailer import config
from mailer.deliver import verp
from mailer.deliver.msgid import digest
from mailer.feedback import ses as sns
from mailer.state.ledger import Ledger
from mailer.states import DeliveryState, Reason
from mailer.web import routes as web

REPO = Path(__file__).resolve().parents[1]
SECRET = "test-secret"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
READERS = ["ann@example.com", "bob@example.com", "carol@example.com"]


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    pem: bytes


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signer() -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer(key, _certificate(key))


@pytest.fixture
def fetched(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs the app fetched a certificate from (the throwaway one stands in for AWS's)."""
    urls: list[str] = []

    def fetch(url: str) -> bytes:
        urls.append(url)
        return signer.pem

    monkeypatch.setattr(sns, "verifier", sns.Verifier(fetch))
    return urls


def sign(signer: Signer, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
    message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = signer.key.sign(sns.canonical(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode("ascii")
    return message


def notification(payload: dict[str, Any], message_id: str = "sns-1") -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(payload),
        "Timestamp": "2026-12-03T08:00:00.000Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def bounce(kind: str, address: str, status: str, feedback: str = "fb-1") -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind,
            "bounceSubType": "General",
            "feedbackId": feedback,
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": f"smtp; 550 {status} whatever",
                }
            ],
            "timestamp": "2026-12-03T08:00:00.000Z",
        },
        "mail": {
            "timestamp": "2026-12-03T07:59:00.000Z",
            "source": "newsletter@example.org",
            "messageId": "0100-ses-id",
            "destination": [address],
            # The Message-ID the Composer gave the copy, as SES reports the original headers.
            "commonHeaders": {"messageId": our_message_id(address)},
        },
    }


def our_message_id(address: str) -> str:
    return f"<issue-2.{digest(SECRET, 'issue-2', address.lower())}@example.org>"


def complaint(address: str, feedback: str = "fb-c") -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "feedbackId": feedback,
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
        },
        "mail": {
            "source": "newsletter@example.org",
            "messageId": "0100-ses-id",
            "commonHeaders": {"messageId": our_message_id(address)},
        },
    }


@dataclass
class Reply:
    status: int
    body: str
    log: str


class Site:
    def __init__(self, settings: config.Settings) -> None:
        self.app = web.WebApp(settings)
        self.settings = settings

    def post(self, body: bytes | dict[str, Any], path: str = "/sns", method: str = "POST") -> Reply:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "CONTENT_TYPE": "text/plain; charset=UTF-8",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
            "wsgi.errors": io.StringIO(),
        }
        if isinstance(body, dict) and isinstance(body.get("Type"), str):
            environ["HTTP_X_AMZ_SNS_MESSAGE_TYPE"] = body["Type"]
        setup_testing_defaults(environ)
        statuses: list[str] = []
        chunks = self.app(environ, lambda status, headers: statuses.append(status))  # type: ignore[arg-type]
        text = b"".join(chunks).decode("utf-8")
        return Reply(int(statuses[0].split()[0]), text, environ["wsgi.errors"].getvalue())

    def suppressions(self) -> dict[str, Reason]:
        with Ledger(self.settings.state_path) as ledger:
            return {s.email: s.reason for s in ledger.suppressions()}

    def ledger(self) -> Ledger:
        return Ledger(self.settings.state_path)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "news"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "issues" / "issue-2.md", root / "issues")
    shutil.copy(REPO / "mailer.toml", root)
    environ = {"MAILER_SECRET": SECRET, "MAILER_BOUNCE_ADDRESS": "bounces@example.org"}
    settings = config.load(root, environ=environ)
    with Ledger(settings.state_path) as ledger:
        for reader in READERS:
            ledger.record("issue-2", reader, DeliveryState.SENT, "250 accepted by Amazon SES")
    s = Site(settings)
    try:
        yield s
    finally:
        s.app.close()


# -- signatures -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_valid_signature_is_accepted_and_a_permanent_bounce_suppresses(
    site: Site, signer: Signer, fetched: list[str], version: str
) -> None:
    message = sign(signer, notification(bounce("Permanent", "Ann@Example.com", "5.1.1")), version)
    reply = site.post(message)
    assert reply.status == 200, reply.body
    assert fetched == [CERT_URL]
    assert site.suppressions() == {"ann@example.com": Reason.BOUNCED}
    with site.ledger() as ledger:
        rows = {d.email: d.state for d in ledger.deliveries("issue-2")}
    assert rows["ann@example.com"] == DeliveryState.BOUNCED
    assert "hard bounce  ann@example.com  issue-2  5.1.1" in reply.log
    # SNS delivers again (its retry): handled once, the certificate comes from the cache.
    again = site.post(message)
    assert again.status == 200 and "already handled" in again.log
    assert fetched == [CERT_URL]


def test_a_subject_is_part_of_what_is_signed(
    site: Site, signer: Signer, fetched: list[str]
) -> None:
    message = notification(complaint("bob@example.com"))
    message["Subject"] = "Amazon SES Complaint"
    signed = sign(signer, message, "2")
    assert site.post({**signed, "Subject": "something else"}).status == 400
    assert site.suppressions() == {}
    assert site.post(signed).status == 200
    assert site.suppressions() == {"bob@example.com": Reason.COMPLAINED}


def _tampered(signer: Signer) -> dict[str, Any]:
    message = sign(signer, notification(bounce("Permanent", "ann@example.com", "5.1.1")))
    payload = bounce("Permanent", "bob@example.com", "5.1.1")
    return {**message, "Message": json.dumps(payload)}  # signed for ann, says bob


def _other_key(signer: Signer) -> dict[str, Any]:
    other = Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), b"")
    return sign(other, notification(bounce("Permanent", "ann@example.com", "5.1.1")))


BAD_SIGNATURES: dict[str, Callable[[Signer], dict[str, Any]]] = {
    "tampered message": _tampered,
    "another key": _other_key,
    "not base64": lambda s: {
        **sign(s, notification(complaint("ann@example.com"))),
        "Signature": "%%%",
    },
    "unsigned": lambda s: notification(complaint("ann@example.com")),
    "version 3": lambda s: {
        **sign(s, notification(complaint("ann@example.com"))),
        "SignatureVersion": "3",
    },
    "v1 signature claimed as v2": lambda s: {
        **sign(s, notification(complaint("ann@example.com")), "1"),
        "SignatureVersion": "2",
    },
}


@pytest.mark.parametrize("name", list(BAD_SIGNATURES))
def test_a_bad_signature_gets_400_and_records_nothing(
    site: Site, signer: Signer, fetched: list[str], name: str
) -> None:
    reply = site.post(BAD_SIGNATURES[name](signer))
    assert reply.status == 400, reply.body
    assert "Traceback" not in reply.body + reply.log
    assert "The SNS signature is not valid." in reply.body
    assert site.suppressions() == {}
    with site.ledger() as ledger:
        assert {d.state for d in ledger.deliveries("issue-2")} == {DeliveryState.SENT}


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.us-east-1.amazonaws.com/cert.pem",
        "https://s3.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
        "file:///etc/passwd",
    ],
)
def test_a_cert_url_not_on_amazonaws_gets_400_without_any_fetch(
    site: Site, signer: Signer, fetched: list[str], url: str
) -> None:
    message = notification(bounce("Permanent", "ann@example.com", "5.1.1"))
    message = {**message, "SignatureVersion": "1", "SigningCertURL": url}
    digest = signer.key.sign(sns.canonical(message), padding.PKCS1v15(), hashes.SHA1())
    message["Signature"] = base64.b64encode(digest).decode()
    reply = site.post(message)
    assert reply.status == 400
    assert fetched == []
    assert site.suppressions() == {}


def test_china_regions_cert_host_is_accepted() -> None:
    sns.check_cert_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem")


def test_not_json_and_other_methods(site: Site, fetched: list[str]) -> None:
    assert site.post(b"not json").status == 400
    assert site.post(b"[1, 2]").status == 400
    got = site.post(b"", method="GET")
    assert got.status == 405
    assert fetched == []


# -- what SES said ----------------------------------------------------------------------------


def test_a_signed_bounce_tied_to_no_copy_of_ours_changes_nothing(
    site: Site, signer: Signer, fetched: list[str]
) -> None:
    """Signed by SNS, yet only SES's word about some addresses: every reader listed as a
    permanent bounce, without the original headers or a VERP sender, moves nobody."""
    payload = bounce("Permanent", "carol@example.com", "5.1.1")
    del payload["mail"]["commonHeaders"]
    payload["bounce"]["bouncedRecipients"] = [
        {"emailAddress": r, "action": "failed", "status": "5.1.1"} for r in READERS
    ]
    reply = site.post(sign(signer, notification(payload)))
    assert reply.status == 200
    assert (
        "not understood  SNS sns-1: SES Permanent bounce about ann@example.com, bob@example.com,"
        " carol@example.com: no VERP address or Message-ID of ours ties it to a copy"
    ) in reply.log
    assert site.suppressions() == {}
    with site.ledger() as ledger:
        assert {d.state for d in ledger.deliveries("issue-2")} == {DeliveryState.SENT}
    # One copy's Message-ID ties it to that copy: its reader alone, whoever else is listed.
    payload["mail"]["commonHeaders"] = {"messageId": our_message_id("bob@example.com")}
    payload["bounce"]["feedbackId"] = "fb-2"
    assert site.post(sign(signer, notification(payload, "sns-2"))).status == 200
    assert site.suppressions() == {"bob@example.com": Reason.BOUNCED}


def test_a_verp_envelope_sender_ties_a_bounce_to_its_copy(
    site: Site, signer: Signer, fetched: list[str]
) -> None:
    """Sent through SES's SMTP interface, the copy's MAIL FROM (source) is its VERP address."""
    payload = bounce("Permanent", "carol@example.com", "5.1.1")
    del payload["mail"]["commonHeaders"]
    payload["mail"]["source"] = verp.address(site.settings, "issue-2", "carol@example.com")
    assert site.post(sign(signer, notification(payload))).status == 200
    assert site.suppressions() == {"carol@example.com": Reason.BOUNCED}


def test_a_complaint_suppresses(site: Site, signer: Signer, fetched: list[str]) -> None:
    reply = site.post(sign(signer, notification(complaint("carol@example.com"))))
    assert reply.status == 200
    assert site.suppressions() == {"carol@example.com": Reason.COMPLAINED}
    assert "complaint  carol@example.com  issue-2  abuse Yahoo!-Mail-Feedback/2.0" in reply.log


def test_a_transient_bounce_counts_soft(site: Site, signer: Signer, fetched: list[str]) -> None:
    reply = site.post(sign(signer, notification(bounce("Transient", "bob@example.com", "4.2.2"))))
    assert reply.status == 200
    assert site.suppressions() == {}
    assert "soft bounce  bob@example.com  issue-2" in reply.log
    assert f"1 of {site.settings.soft_bounce_limit} in a row" in reply.log


def test_a_permanent_policy_block_counts_soft_as_for_a_dsn(
    site: Site, signer: Signer, fetched: list[str]
) -> None:
    reply = site.post(sign(signer, notification(bounce("Permanent", "bob@example.com", "5.7.1"))))
    assert reply.status == 200
    assert site.suppressions() == {}
    assert "soft bounce  bob@example.com" in reply.log


def test_a_stranger_and_a_delivery_event_change_nothing(
    site: Site, signer: Signer, fetched: list[str]
) -> None:
    payload = bounce("Permanent", "x@example.net", "5.1.1")
    payload["mail"]["commonHeaders"] = {"messageId": "<someone-else@example.net>"}
    stranger = site.post(sign(signer, notification(payload)))
    assert stranger.status == 200 and "ties it to a copy" in stranger.log
    delivery = {"eventType": "Delivery", "mail": {}, "delivery": {"recipients": READERS}}
    other = site.post(sign(signer, notification(delivery, "sns-2")))
    assert other.status == 200 and "not understood" in other.log
    assert site.suppressions() == {}


def test_subscription_confirmation_is_verified_logged_and_not_fetched(
    site: Site, signer: Signer, fetched: list[str]
) -> None:
    subscribe = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok"
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "sns-3",
        "Token": "tok",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic ...",
        "SubscribeURL": subscribe,
        "Timestamp": "2026-12-03T08:00:00.000Z",
    }
    reply = site.post(sign(signer, message, "2"))
    assert reply.status == 200
    assert "not confirmed automatically" in reply.body
    assert subscribe in reply.log and TOPIC in reply.log
    assert fetched == [CERT_URL]  # only the certificate: never the SubscribeURL
    forged = sign(signer, message, "2")
    forged["SubscribeURL"] = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&x"
    assert site.post(forged).status == 400
