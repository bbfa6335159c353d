"""Amazon SNS messages carrying SES feedback: is it genuine, and what does it say (no HTTP).

mailer/web/sns.py is the POST /sns route that hands each request body here. Each message is
checked before anything is believed:

  * the SigningCertURL must be https on port 443 of sns.<region>.amazonaws.com (or
    .amazonaws.com.cn) and name a .pem file; anything else is refused before any fetch;
  * the certificate is fetched once per URL (no redirects followed; cached), must be in
    its validity period and hold an RSA key;
  * the Signature (base64) must verify over the canonical string AWS documents (each of
    Message, MessageId, Subject if present, Timestamp, TopicArn, Type for a Notification;
    Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type for a
    (Un)SubscriptionConfirmation; "name\\nvalue\\n" each) with SHA1withRSA for
    SignatureVersion 1, SHA256withRSA for 2.

A verified Notification carrying SES's JSON (identity notifications' notificationType, or
event publishing's eventType) becomes the same `Classified` that `mailer bounces` makes of a
DSN or an ARF report, and goes through the same path (process.handle: resolve the reader,
record once per feedbackId, suppress): Permanent bounces are hard (except the enhanced codes
classify.PERMANENT_BUT_SOFT names, as for a DSN), Transient and Undetermined ones soft, a
complaint suppresses. Other SES events (Delivery, Send, ...) are acknowledged and ignored.
A signed notification is still only SES's word about some addresses: as for a DSN, it counts
only for the reader of the copy its original headers (our Message-ID) or its envelope sender
(a VERP address) tie it to, so identity notifications need "include original headers".
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.config import Settings
from mailer.errors import EXIT_UNAVAILABLE, MailerError
from mailer.feedback.classify import DETAIL_MAX, PERMANENT_BUT_SOFT, Classified, Failure
from mailer.feedback.process import Report, handle
from mailer.state.ledger import Ledger
from mailer.states import Feedback

MAX_CERT = 64 * 1024
FETCH_TIMEOUT = 10.0
CACHE_SIZE = 32
SOURCE = "ses"  # the feedback's and suppressions' source
CERT_HOST = re.compile(r"^sns\.[a-z0-9]+(?:-[a-z0-9]+)+\.amazonaws\.com(?:\.cn)?$")
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_ADDRESS = re.compile(r"^[^\s@<>]+@[^\s@<>]+\.[^\s@<>.]+$")

Fetch = Callable[[str], bytes]


class BadMessage(Exception):
    """Not a genuine SNS message: answered 400, nothing recorded."""


class CertificateUnavailable(MailerError):
    """AWS's signing certificate could not be fetched: 503, SNS tries again later."""

    exit_code = EXIT_UNAVAILABLE


# -- the signature ----------------------------------------------------------------------------


def check_cert_url(url: str) -> None:
    """SigningCertURL: https, port 443, sns.<region>.amazonaws.com(.cn), a .pem; else BadMessage."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadMessage("SigningCertURL is not a URL") from None
    host = parts.hostname or ""
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not CERT_HOST.match(host)
        or parts.netloc.lower() not in (host, f"{host}:443")
        or not parts.path.endswith(".pem")
    ):
        raise BadMessage(f"SigningCertURL is not an Amazon SNS certificate: {url[:200]!r}")


def fetch_certificate(url: str) -> bytes:
    """GET the certificate over verified TLS; redirects are not followed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    context = ssl.create_default_context()
    conn = http.client.HTTPSConnection(host, 443, timeout=FETCH_TIMEOUT, context=context)
    try:
        conn.request("GET", path, headers={"User-Agent": "mailer"})
        reply = conn.getresponse()
        data = reply.read(MAX_CERT + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise CertificateUnavailable(f"cannot fetch the SNS certificate {url}: {exc}") from None
    finally:
        conn.close()
    if reply.status != 200:
        raise BadMessage(f"the SNS certificate {url} answered HTTP {reply.status}")
    if len(data) > MAX_CERT:
        raise BadMessage(f"the SNS certificate {url} is too large")
    return data


def canonical(message: dict[str, Any]) -> bytes:
    """The string SNS signs: "name\\nvalue\\n" for each field of the message's Type, in order."""
    kind = message.get("Type")
    names = NOTIFICATION_FIELDS if kind == "Notification" else CONFIRMATION_FIELDS
    out = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue  # optional, and only in a Notification
        if not isinstance(value, str):
            raise BadMessage(f"the SNS message has no {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


@dataclass(frozen=True)
class _Cert:
    key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime


class Verifier:
    """Checks SNS signatures; `fetch` gets a certificate's PEM bytes by URL (injectable: the
    tests give it a throwaway certificate for an amazonaws URL, without the network)."""

    def __init__(
        self, fetch: Fetch = fetch_certificate, now: Callable[[], datetime] | None = None
    ) -> None:
        self.fetch = fetch
        self.now = now or (lambda: datetime.now(UTC))
        self._cache: dict[str, _Cert] = {}
        self._lock = threading.Lock()

    def certificate(self, url: str) -> _Cert:
        check_cert_url(url)  # before anything is fetched
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None:
            return cached
        pem = self.fetch(url)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise BadMessage(f"{url} is not a PEM certificate") from None
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise BadMessage(f"{url} holds no RSA key")
        found = _Cert(key, cert.not_valid_before_utc, cert.not_valid_after_utc)
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[url] = found
        return found

    def verify(self, message: dict[str, Any]) -> None:
        """Return if the message is signed by SNS; else raise BadMessage saying why."""
        if message.get("Type") not in TYPES:
            raise BadMessage(f"not an SNS message type: {str(message.get('Type'))[:50]!r}")
        version = message.get("SignatureVersion")
        algorithm = HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise BadMessage(f"unknown SignatureVersion {str(version)[:20]!r}")
        url, signature = message.get("SigningCertURL"), message.get("Signature")
        if not isinstance(url, str) or not isinstance(signature, str):
            raise BadMessage("the SNS message is not signed")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise BadMessage("the Signature is not base64") from None
        text = canonical(message)
        cert = self.certificate(url)
        now = self.now()
        if not cert.not_before <= now <= cert.not_after:
            raise BadMessage(f"the certificate {url} is not valid now")
        try:
            cert.key.verify(raw, text, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise BadMessage("the signature does not match") from None


verifier = Verifier()  # the app's; tests replace it (monkeypatch) with one that fetches locally


# -- SES's notification -> what `mailer bounces` makes of a DSN ---------------------------


def one_line(value: object, limit: int = DETAIL_MAX) -> str:
    """A value as one line of text, cut at `limit` characters ("" for None)."""
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _address(value: object) -> str:
    address = one_line(value).strip("<>").lower()
    if "<" in address:  # "Name <a@b>"
        address = address.rsplit("<", 1)[1].strip("<> ")
    return address if _ADDRESS.match(address) else ""


def _ties(found: Classified, mail: dict[str, Any]) -> Classified:
    """What may tie the notification to one of our copies, as for a DSN: the Message-ID the
    sent message had (the original headers SES includes: ours, though SES rewrote the one
    that went out), and its envelope sender (a VERP address, when it went through SES's
    SMTP interface)."""
    ids = []
    common = mail.get("commonHeaders")
    if isinstance(common, dict):
        ids.append(one_line(common.get("messageId"), 250))
    senders = [one_line(mail.get("source"), 300)]
    headers = mail.get("headers")
    for header in headers if isinstance(headers, list) else []:
        if not isinstance(header, dict):
            continue
        name = str(header.get("name", "")).lower()
        if name == "message-id":
            ids.append(one_line(header.get("value"), 250))
        elif name == "return-path":
            senders.append(one_line(header.get("value"), 300))
    return replace(
        found,
        quoted_ids=tuple(dict.fromkeys(i for i in ids if i)),
        verp=tuple(dict.fromkeys(a for s in senders if (a := _address(s)))),
    )


def classify(payload: object) -> tuple[Classified, str]:
    """SES's notification (the SNS Message, parsed) -> (what it is, the key it is recorded
    under: ses:<feedbackId>, "" when it has none)."""
    if not isinstance(payload, dict):
        return Classified(None, "an SNS message that is not SES's JSON"), ""
    kind = payload.get("notificationType") or payload.get("eventType")
    mail = payload.get("mail") if isinstance(payload.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    if kind == "Bounce" and isinstance(payload.get("bounce"), dict):
        bounce = payload["bounce"]
        return _ties(_bounce(bounce), mail), _key(bounce)
    if kind == "Complaint" and isinstance(payload.get("complaint"), dict):
        complaint = payload["complaint"]
        return _ties(_complaint(complaint), mail), _key(complaint)
    return Classified(
        None, f"an SES {one_line(kind, 40) or 'unknown'} notification: not feedback"
    ), ""


def _key(part: dict[str, Any]) -> str:
    feedback = one_line(part.get("feedbackId"), 200)
    return f"ses:{feedback}" if feedback else ""


def _bounce(bounce: dict[str, Any]) -> Classified:
    kind_text = one_line(bounce.get("bounceType"), 40)
    sub = one_line(bounce.get("bounceSubType"), 60)
    failures = []
    for recipient in bounce.get("bouncedRecipients") or []:
        if not isinstance(recipient, dict):
            continue
        address = _address(recipient.get("emailAddress"))
        if not address:
            continue
        status = one_line(recipient.get("status"), 20)
        match = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", status)
        status = match.group(1) if match else ""
        permanent = kind_text == "Permanent" and not PERMANENT_BUT_SOFT.match(status)
        diagnostic = one_line(recipient.get("diagnosticCode"))
        detail = one_line(f"SES {kind_text}/{sub}" + (f": {diagnostic}" if diagnostic else ""))
        kind = Feedback.HARD if permanent else Feedback.SOFT
        failures.append(Failure((address,), kind, status, detail))
    if not failures:
        return Classified(None, "an SES bounce notification with no bounced recipient")
    failures.sort(key=lambda f: f.kind != Feedback.HARD)
    return Classified(failures[0].kind, f"SES {kind_text} bounce", tuple(failures))


def _complaint(complaint: dict[str, Any]) -> Classified:
    feedback_type = one_line(complaint.get("complaintFeedbackType"), 40).lower()
    if feedback_type == "not-spam":
        return Classified(None, "an SES complaint notification of type not-spam")
    agent = one_line(complaint.get("userAgent"))
    failures = tuple(
        Failure((address,), Feedback.COMPLAINT, feedback_type or "abuse", agent)
        for r in complaint.get("complainedRecipients") or []
        if isinstance(r, dict) and (address := _address(r.get("emailAddress")))
    )
    if not failures:
        return Classified(None, "an SES complaint notification with no recipient")
    return Classified(Feedback.COMPLAINT, "SES complaint", failures)


# -- into the ledger ------------------------------------------------------------------------


def record(message: dict[str, Any], ledger: Ledger, settings: Settings) -> list[str]:
    """A verified Notification into the ledger, as `mailer bounces` records a DSN; the lines
    say what happened (the same as `mailer bounces -v`)."""
    raw = message["Message"]
    sns_id = one_line(message.get("MessageId"), 200)
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    found, key = classify(payload)
    key = key or f"sns:{sns_id}"
    label = f"SNS {sns_id}"
    if found.kind is None:
        return [f"not understood  {label}: {found.why}"]
    report = Report()
    handle(found, key, label, SOURCE, ledger, settings, report, settings.soft_bounce_limit)
    return report.lines
