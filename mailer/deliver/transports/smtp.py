"""SMTP over smtplib: one reused connection, STARTTLS or implicit TLS, AUTH, SMTPUTF8.

smtplib opens the session (TLS, EHLO, AUTH) and, when the server does not offer PIPELINING
or smtp_pipelining is off, sends each message waiting for every reply. With PIPELINING
(RFC 2920) the transactions go out as pipeline.py writes them, one round trip a message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import re
import smtplib
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, overload

from mailer.config import Settings
from mailer.deliver.message import Message
from mailer.deliver.transports.base import ACCEPTED, Result
from mailer.deliver.transports.pipeline import LOST, Pipelining, dot_stuff, state_for
from mailer.errors import MailerError, SMTPAuthError, SMTPTryLater, SMTPUnavailable
from mailer.states import DeliveryState

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

SENT, DEFERRED, FAILED = DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED

MASK = "********"  # as `mailer config` shows a secret
# A word of a reply that may be base64 (AUTH data echoed back): decoded to look for a secret.
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")


class Secrets:
    """What a server reply must never show: the password (and the secret), as typed and as AUTH
    sent them in base64 (PLAIN's `\\0user\\0password`, LOGIN's password on its own)."""

    def __init__(self, user: str, secrets: Iterable[str]) -> None:
        self.raw = tuple(sorted({v for v in secrets if v}, key=len, reverse=True))
        forms = set(self.raw)
        for value in self.raw:
            data = value.encode("utf-8")
            forms.add(base64.b64encode(data).decode("ascii"))
            forms.add(base64.b64encode(b"\0" + user.encode("utf-8") + b"\0" + data).decode())
        self.forms = tuple(sorted(forms, key=len, reverse=True))  # longest first

    def mask(self, text: str) -> str:
        """`text` with every form of every secret replaced by ********."""
        if not self.raw:
            return text
        for form in self.forms:
            text = text.replace(form, MASK)
        # Base64 the exact forms above miss (another authzid, a cut-off echo): decode and look.
        return _BASE64_WORD.sub(self._mask_base64, text)

    def _mask_base64(self, match: re.Match[str]) -> str:
        word = match.group(0)
        try:
            data = base64.b64decode(word + "=" * (-len(word) % 4), validate=True)
        except (binascii.Error, ValueError):
            return word
        decoded = data.decode("utf-8", "replace")
        return MASK if any(secret in decoded for secret in self.raw) else word


class _UTF8Auth(smtplib.SMTP):
    """AUTH with the user and password in UTF-8 (smtplib sends only ASCII ones).

    RFC 4616 defines PLAIN's data as UTF-8; LOGIN and CRAM-MD5 have no charset of their own
    and servers (Dovecot, Postfix's Cyrus and Dovecot SASL, Exchange) take UTF-8 there too.
    This is smtplib's `auth` with the one `.encode('ascii')` changed.
    """

    def auth(
        self,
        mechanism: str,
        authobject: smtplib._AuthObject,
        *,
        initial_response_ok: bool = True,
    ) -> tuple[int, bytes]:
        mechanism = mechanism.upper()
        initial = authobject() if initial_response_ok else None
        # _auth_challenge_count as smtplib keeps it: auth_login reads it to know what to answer.
        if initial is not None:
            code, resp = self.docmd("AUTH", f"{mechanism} {_b64(initial)}")
            self._auth_challenge_count = 1
        else:
            code, resp = self.docmd("AUTH", mechanism)
            self._auth_challenge_count = 0
        while code == 334:
            self._auth_challenge_count += 1
            code, resp = self.docmd(_b64(authobject(base64.decodebytes(resp))))
            if self._auth_challenge_count > 5:  # smtplib's _MAXCHALLENGE
                raise smtplib.SMTPException("the server's AUTH exchange never ends")
        if code in (235, 503):
            return code, resp
        _closing(self, code, resp)
        raise smtplib.SMTPAuthenticationError(code, resp)

    def ehlo(self, name: str = "") -> tuple[int, bytes]:
        code, resp = super().ehlo(name)
        _closing(self, code, resp)
        return code, resp

    def helo(self, name: str = "") -> tuple[int, bytes]:
        code, resp = super().helo(name)
        _closing(self, code, resp)
        return code, resp

    @overload
    def auth_cram_md5(self, challenge: None = None) -> None: ...
    @overload
    def auth_cram_md5(self, challenge: ReadableBuffer) -> str: ...
    def auth_cram_md5(self, challenge: ReadableBuffer | None = None) -> str | None:
        if challenge is None:  # CRAM-MD5 has no initial response
            return None
        digest = hmac.HMAC(self.password.encode("utf-8"), challenge, "md5").hexdigest()
        return f"{self.user} {digest}"


def _closing(smtp: smtplib.SMTP, code: int, resp: bytes) -> None:
    """A 421 ends the session: raise it as it is, before smtplib tries HELO or another AUTH
    mechanism on a connection the server has closed and the reply is lost."""
    if code == 421:
        smtp.close()
        raise smtplib.SMTPResponseException(code, resp)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class _SMTP(_UTF8Auth):
    pass


class _SMTP_SSL(_UTF8Auth, smtplib.SMTP_SSL):
    pass


def _abandon(smtp: smtplib.SMTP, code: int) -> None:
    """End a refused transaction as smtplib does: hang up after a 421, else RSET."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


class SMTPTransport(Pipelining):
    """A reused SMTP connection: one login per connection, RSET after a refusal.

    MAIL FROM is each message's own envelope_from (a VERP address, see mailer/deliver/verp.py),
    else the one given here.
    """

    def __init__(self, settings: Settings, envelope_from: str) -> None:
        super().__init__(settings.pipeline_depth)
        self.settings = settings
        self.envelope_from = envelope_from
        self._sender = envelope_from  # the current message's, for error messages
        self.smtp = None
        # Every reply mailer prints or records goes through _reply, which masks these.
        self.secrets = Secrets(settings.smtp_user, (settings.smtp_password, settings.secret))
        self._data_sent = False  # the whole message went out: a lost reply may hide delivery

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.settings.smtp_verify:  # only ever by the user's explicit choice
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def open(self) -> None:
        s = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            if s.smtp_security == "ssl":
                smtp = _SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=self._tls_context()
                )
            else:
                smtp = _SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
                if s.smtp_security == "starttls":
                    smtp.starttls(context=self._tls_context())
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
            smtp.ehlo_or_helo_if_needed()  # what the server offers decides how we send
        except (OSError, smtplib.SMTPException) as exc:
            if smtp is not None:
                smtp.close()
            raise self._open_failed(exc) from None
        self.smtp = smtp
        self.pipelined = s.smtp_pipelining == "auto" and smtp.has_extn("pipelining")

    def _open_failed(self, exc: OSError | smtplib.SMTPException) -> MailerError:
        """Why the session could not start, as one line and the exit code that fits it."""
        s = self.settings
        where = f"{s.smtp_host}:{s.smtp_port}"
        if isinstance(exc, smtplib.SMTPResponseException) and 400 <= exc.smtp_code < 500:
            # 421 at the greeting or EHLO ("too many connections", "try later"), 454 at
            # STARTTLS or AUTH: the server is there and asks us to come back.
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            return SMTPTryLater(f"the SMTP server at {where} asks to try later: {reply}")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return SMTPAuthError(
                f"{where} refused the login for {s.smtp_user!r}:"
                f" {self._reply(exc.smtp_code, exc.smtp_error)}",
                hint="check MAILER_SMTP_USER and MAILER_SMTP_PASSWORD in .env",
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return SMTPUnavailable(
                f"{where}: {exc}",
                hint="set MAILER_SMTP_SECURITY to ssl, starttls or none to match the server",
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return SMTPUnavailable(
                f"{where}: the server's TLS certificate is not trusted ({exc.verify_message})",
                hint="fix the certificate; MAILER_SMTP_VERIFY=false turns checking off (unsafe)",
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            return SMTPUnavailable(f"cannot reach the SMTP server at {where}: {reply}")
        return SMTPUnavailable(
            f"cannot reach the SMTP server at {where}: {self.secrets.mask(str(exc))}"
        )

    def send(self, message: Message) -> Result:
        smtp = self.smtp
        if smtp is None:
            raise RuntimeError("send before open")
        sender = message.envelope_from or self.envelope_from
        self._sender = sender
        ascii_only = message.recipient.isascii() and sender.isascii()
        options = [] if ascii_only else ["SMTPUTF8"]
        try:
            self._data_sent = False
            self._sendmail(smtp, sender, message.recipient, message.data, options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[message.recipient]
            if code == 421:  # the server said goodbye and _abandon hung up
                self.smtp = None
            reply = self._reply(code, text)
            return Result(state_for(code), code, reply, dropped=code == 421)
        except smtplib.SMTPSenderRefused as exc:
            if exc.smtp_code >= 500:
                self.close()
                raise self._session_refused(exc.smtp_code, exc.smtp_error) from None
            return self._refused(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPNotSupportedError:
            # An internationalised address needs SMTPUTF8, which this server does not offer.
            return Result(FAILED, 0, "the server does not support SMTPUTF8 for this address")
        except smtplib.SMTPDataError as exc:
            return self._refused(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:
            self.close()
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            return Result(DEFERRED, exc.smtp_code, reply, True)
        except LOST as exc:
            self.smtp = None
            return Result(DEFERRED, 0, self._lost_reply(exc), True, uncertain=self._data_sent)
        return ACCEPTED

    def _sendmail(
        self, smtp: smtplib.SMTP, sender: str, recipient: str, data: bytes, options: list[str]
    ) -> None:
        """smtplib's sendmail for one recipient, with a faster dot-stuffing.

        smtplib runs a regular expression over every message to double leading dots; on a
        60 KB newsletter that is most of the client's time per message. bytes.replace does
        the same in C, and a message with no line starting with a dot is sent as it is.
        Replies and errors are smtplib's own, raised the way sendmail raises them.
        """
        smtp.ehlo_or_helo_if_needed()
        mail_options = [*options]
        if smtp.does_esmtp and smtp.has_extn("size"):
            mail_options.append(f"SIZE={len(data)}")
        code, reply = smtp.mail(sender, mail_options)
        if code != 250:
            _abandon(smtp, code)
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = smtp.rcpt(recipient)
        if code not in (250, 251):
            _abandon(smtp, code)
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        code, reply = smtp.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        smtp.send(dot_stuff(data) + b".\r\n")
        self._data_sent = True
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def _reply(self, code: int, text: bytes | str) -> str:
        words = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        # Masked before the whitespace is folded: a password may hold spaces.
        return f"{code} {' '.join(self.secrets.mask(words).split())}".strip()

    def _lost_reply(self, exc: BaseException) -> str:
        return f"connection lost: {self.secrets.mask(str(exc) or type(exc).__name__)}"

    def _session_refused(self, code: int, text: bytes | str) -> SMTPAuthError | SMTPUnavailable:
        """MAIL FROM refused for good: no reader can get the issue; nobody is marked."""
        s, reply = self.settings, self._reply(code, text)
        where = f"{s.smtp_host}:{s.smtp_port}"
        if code == 530 and "starttls" in reply.lower():
            return SMTPUnavailable(
                f"{where} wants TLS first: {reply}", hint="set MAILER_SMTP_SECURITY=starttls"
            )
        if code == 530 or reply[4:9].startswith("5.7."):
            return SMTPAuthError(
                f"{where} refused to relay for {self._sender}: {reply}",
                hint="set MAILER_SMTP_USER and MAILER_SMTP_PASSWORD in .env",
            )
        return SMTPUnavailable(
            f"{where} refused the sender {self._sender}: {reply}",
            hint=(
                "check bounce_address (MAILER_BOUNCE_ADDRESS)"
                if self.settings.bounce_address
                else "check `from` in mailer.toml"
            ),
        )

    def _refused(self, code: int, text: bytes | str) -> Result:
        dropped = code == 421  # "service closing": the server hangs up after saying it
        if dropped:
            self.close()
        else:
            try:
                if self.smtp is None:
                    raise smtplib.SMTPServerDisconnected("no connection")
                self.smtp.rset()
            except (smtplib.SMTPException, OSError):
                self.smtp, dropped = None, True
        return Result(state_for(code), code, self._reply(code, text), dropped)

    def close(self) -> None:
        mid_data = self._give_up_owed("closed with its reply owed")
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            if mid_data:  # the server may be reading a body: a QUIT would be taken as text
                smtp.close()
                return
            try:
                smtp.quit()
            except (TimeoutError, smtplib.SMTPException, OSError):
                smtp.close()
