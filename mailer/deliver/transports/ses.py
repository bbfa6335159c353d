"""Amazon SES v2's API: `sesv2.send_email` with `Content.Raw`, the same bytes SMTP would send.

Region and credentials come from the standard AWS environment (AWS_REGION or
AWS_DEFAULT_REGION, then the profile's region; boto3's credentials chain); botocore honours
AWS_ENDPOINT_URL_SESV2 / AWS_ENDPOINT_URL, which is how the tests reach moto on 127.0.0.1.

Addresses. `FromEmailAddress` is the From header's address: the identity SES authorises.
`Destination` is the reader alone, so the To header is never read for recipients. SES uses
its own envelope sender (amazonses.com, or the identity's custom MAIL FROM domain) and
rewrites Message-ID and Date; the VERP address (message.envelope_from) goes in
`FeedbackForwardingEmailAddress`, so SES's forwarded bounce mail reaches bounces+TOKEN@ and
`mailer bounces` still finds the copy. That address must be covered by a verified identity
(verify the domain). SNS notifications (mailer/web/sns.py) are the other way back.

Outcomes. Throttling -> DEFERRED 454 (`Result.throttled`: the send loop slows down); the
daily quota used up, a paused sending or a suspended account -> SESPaused (exit 75: nothing
more can go out today, the reader stays unmarked); MessageRejected about the reader (SES's
sandbox, a virus) -> FAILED, but about our own identity (not verified) -> SESRefused, as a
refused MAIL FROM stops an SMTP run; a malformed request about one message (a bad address)
-> FAILED; credentials refused -> SESAuthError (exit 77); AWS 5xx and network errors ->
DEFERRED with dropped=True (a lost connection: the circuit breaker counts them), uncertain
when the request may have been read. botocore retries nothing: each reply reaches the loop.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from email.utils import parseaddr
from types import ModuleType
from typing import Any

from mailer.config import Settings
from mailer.deliver.message import Message, wire_address
from mailer.deliver.transports.base import Result
from mailer.errors import EXIT_NOPERM, EXIT_TEMPFAIL, EXIT_UNAVAILABLE, ConfigError, MailerError
from mailer.states import DeliveryState

SENT, DEFERRED, FAILED = DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED

MASK = "********"
REPLY_MAX = 300
THROTTLING = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException"})
PAUSED = frozenset({"SendingPausedException", "AccountSuspendedException"})
AUTH = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
# The request was bad for this one message (an address SES will not take, a header it
# refuses): that reader fails, the others go on.
BAD_MESSAGE = frozenset({"BadRequestException", "InvalidParameterValue", "ValidationException"})
_QUOTA = re.compile(r"daily (message|sending) quota", re.I)
_NOT_VERIFIED = re.compile(r"not verified|authority to send|not authorized to send", re.I)


class SESUnavailable(MailerError):
    """SES cannot be reached, or answered in a way that lets no message out."""

    exit_code = EXIT_UNAVAILABLE


class SESAuthError(MailerError):
    """SES refused our credentials or our identity."""

    exit_code = EXIT_NOPERM


class SESRefused(SESAuthError):
    """SES refuses to send as us: the From or feedback address is not a verified identity."""


class SESPaused(MailerError):
    """Sending is paused, the account suspended, or the day's quota used up: try later."""

    exit_code = EXIT_TEMPFAIL


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            "transport = ses needs boto3: pip install 'mailer[ses]'",
            hint="or set transport = smtp",
        ) from None


def region() -> str | None:
    """AWS_REGION, else AWS_DEFAULT_REGION; None leaves it to the profile's configuration."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def client(settings: Settings) -> Any:
    """A boto3 `sesv2` client from the standard AWS environment; thread-safe, share it.

    No retries inside botocore: a throttle or an error reaches the send loop, which slows
    down or defers; a retried send after a lost reply could deliver a copy twice.
    """
    boto3 = _import("boto3")
    botocore_config = _import("botocore.config")
    exceptions = _import("botocore.exceptions")
    try:
        session = boto3.session.Session(region_name=region())
        if not session.region_name:
            raise ConfigError(
                "transport = ses needs an AWS region",
                hint="export AWS_REGION (e.g. eu-west-1): AWS_* come from the environment,"
                " not from .env",
            )
        if session.get_credentials() is None:
            raise SESAuthError(
                "transport = ses found no AWS credentials",
                hint="export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                " (or run where an IAM role provides them)",
            )
        timeout = settings.smtp_timeout
        config = botocore_config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
            max_pool_connections=max(10, settings.connections),
            user_agent_extra="mailer",
        )
        return session.client("sesv2", config=config)
    except exceptions.BotoCoreError as exc:  # a broken profile or config file
        raise ConfigError(f"transport = ses: {_first_line(str(exc))}") from None


_new_client = client  # for functions whose `client` parameter hides it


def _first_line(text: str) -> str:
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return line if len(line) <= REPLY_MAX else line[: REPLY_MAX - 1] + "…"


class _Masker:
    """What a reply must never show: the access key, secret key and session token."""

    def __init__(self, ses: Any) -> None:
        self.secrets: tuple[str, ...] = ()
        try:
            creds = ses._request_signer._credentials  # botocore's own; may be refreshable
            frozen = creds.get_frozen_credentials() if creds is not None else None
        except Exception:  # no credentials object to read: nothing known to mask
            frozen = None
        if frozen is not None:
            values = (frozen.access_key, frozen.secret_key, frozen.token)
            self.secrets = tuple(sorted({str(v) for v in values if v}, key=len, reverse=True))

    def say(self, text: str) -> str:
        """One line of AWS text fit to print and record: first line, secrets masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _first_line(text)


def _error(exc: Any) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "") or str(exc)
    status = int(meta.get("HTTPStatusCode") or 0)
    return code, message, status


def max_send_rate(settings: Settings, client: Any = None) -> float:
    """The account's MaxSendRate (messages per second), from `get_account`.

    Raises SESPaused when the account says sending is disabled: nothing could go out.
    """
    ses = client if client is not None else _new_client(settings)
    exceptions = _import("botocore.exceptions")
    masker = _Masker(ses)
    try:
        account = ses.get_account()
    except exceptions.ClientError as exc:
        code, message, status = _error(exc)
        said = masker.say(f"{code}: {message}")
        if code in AUTH:
            raise SESAuthError(
                f"Amazon SES refused to tell the account's sending rate: {said}",
                hint="the IAM policy needs ses:GetAccount as well as ses:SendEmail",
            ) from None
        if code in PAUSED:
            raise SESPaused(f"Amazon SES: sending is stopped for this account: {said}") from None
        raise SESUnavailable(
            f"Amazon SES: cannot read the account's sending rate: {said} (HTTP {status})"
        ) from None
    except exceptions.BotoCoreError as exc:
        raise SESUnavailable(f"cannot reach Amazon SES: {masker.say(str(exc))}") from None
    if account.get("SendingEnabled") is False:
        enforcement = account.get("EnforcementStatus") or "sending disabled"
        raise SESPaused(
            f"Amazon SES: sending is paused for this account ({enforcement})",
            hint="see the SES console's account dashboard; resume with"
            " `aws sesv2 put-account-sending-attributes --sending-enabled`",
        )
    rate = float(account["SendQuota"]["MaxSendRate"])
    if not rate > 0:
        raise SESUnavailable(f"Amazon SES reports a MaxSendRate of {rate:g}: nothing can go out")
    return rate


class SESTransport:
    """One 'connection' to SES: the client is shared; open and close cost nothing."""

    def __init__(self, settings: Settings, envelope_from: str, client: Any = None) -> None:
        self.settings = settings
        self.envelope_from = envelope_from
        self.ses: Any = client
        self.from_address = wire_address(parseaddr(settings.from_)[1])
        self._masker: _Masker | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self.ses is None:
                self.ses = client(self.settings)
            if self._masker is None:
                self._masker = _Masker(self.ses)

    def close(self) -> None:
        pass  # the client's pool is shared by every transport; nothing is this one's

    def _say(self, text: str) -> str:
        return (self._masker or _Masker(self.ses)).say(text)

    def request(self, message: Message) -> dict[str, Any]:
        """The send_email arguments for one message."""
        args: dict[str, Any] = {
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": message.data}},
        }
        if self.from_address:
            args["FromEmailAddress"] = self.from_address
        feedback = message.envelope_from or self.envelope_from
        if feedback and feedback.lower() != self.from_address.lower():
            args["FeedbackForwardingEmailAddress"] = feedback
        return args

    def send(self, message: Message) -> Result:
        ses = self.ses
        if ses is None:
            raise RuntimeError("send before open")
        if not message.recipient.isascii():
            # SES takes no SMTPUTF8 local part (an IDN domain is already in its ASCII form).
            return Result(FAILED, 0, "Amazon SES does not support SMTPUTF8 for this address")
        exceptions = _import("botocore.exceptions")
        try:
            reply = ses.send_email(**self.request(message))
        except exceptions.ClientError as exc:
            return self._refused(exc, message)
        except (exceptions.ConnectTimeoutError, exceptions.EndpointConnectionError) as exc:
            return Result(DEFERRED, 0, f"cannot reach Amazon SES: {self._say(str(exc))}", True)
        except (exceptions.ReadTimeoutError, exceptions.ConnectionClosedError) as exc:
            # The request went out: SES may have taken the message.
            lost = f"connection to Amazon SES lost: {self._say(str(exc))}"
            return Result(DEFERRED, 0, lost, True, uncertain=True)
        except exceptions.ParamValidationError as exc:
            return Result(FAILED, 0, f"not a message Amazon SES takes: {self._say(str(exc))}")
        except exceptions.BotoCoreError as exc:  # any other transport-level failure
            lost = f"Amazon SES request failed: {self._say(str(exc))}"
            return Result(DEFERRED, 0, lost, True, uncertain=True)
        return Result(SENT, 250, f"250 accepted by Amazon SES as {reply.get('MessageId', '?')}")

    def _refused(self, exc: Any, message: Message) -> Result:
        code, text, status = _error(exc)
        said = self._say(f"{code}: {text}" if code else text)
        if _QUOTA.search(text) or code == "LimitExceededException":
            raise self._quota(said)  # a daily limit: every reader would only be deferred
        if code in THROTTLING or status == 429:  # the per-second rate: slow down, retry
            return Result(DEFERRED, 454, f"454 4.7.0 Amazon SES: {said}")
        if code in PAUSED:
            raise SESPaused(
                f"Amazon SES stopped the run: {said}",
                hint="the account's sending is paused or suspended: see the SES console;"
                " readers not sent yet stay owed this issue",
            )
        if code in AUTH:
            raise SESAuthError(
                f"Amazon SES refused our credentials: {said}",
                hint="check the AWS credentials and that the IAM policy allows ses:SendEmail",
            )
        if code == "MailFromDomainNotVerifiedException":
            raise SESRefused(
                f"Amazon SES refused the custom MAIL FROM domain: {said}",
                hint="verify the MAIL FROM domain's MX and SPF records in the SES console",
            )
        if code == "MessageRejected":
            if _NOT_VERIFIED.search(text) and self._about_us(text, message):
                raise SESRefused(
                    f"Amazon SES will not send as {self.from_address}: {said}",
                    hint="verify the From address's domain in SES (it also covers"
                    " bounce_address and its VERP addresses)",
                )
            return Result(FAILED, 554, f"554 5.7.1 Amazon SES: {said}")
        if code in BAD_MESSAGE:
            return Result(FAILED, 0, f"Amazon SES: {said}")
        if status >= 500 or code in ("InternalFailure", "ServiceUnavailable"):
            return Result(DEFERRED, 0, f"Amazon SES: {said} (HTTP {status})", True)
        raise SESUnavailable(f"Amazon SES refused the request: {said} (HTTP {status})")

    def _quota(self, said: str) -> SESPaused:
        return SESPaused(
            f"Amazon SES: the day's sending quota is used up: {said}",
            hint="the rest go out on a later run (the quota is a rolling 24 hours)",
        )

    def _about_us(self, text: str, message: Message) -> bool:
        """Whether a 'not verified' rejection names our From or feedback address (or its
        domain), not only the reader (SES's sandbox rejects unverified recipients too)."""
        lowered = text.lower()
        ours = {self.from_address, message.envelope_from or self.envelope_from}
        names = {a.lower() for a in ours if a} | {
            a.rsplit("@", 1)[1].lower() for a in ours if "@" in a
        }
        reader = message.recipient.lower()
        rest = lowered.replace(reader, " ")
        return any(name in rest for name in names) or reader not in lowered
