"""Email + Subscriber -> the exact bytes of one message, cheaply: the MIME is built once per issue.

The rendered HTML and text are cut at their slots and each literal piece is quoted-printable
encoded once. A message is then the constant pieces joined with the reader's few values,
each encoded on its own between soft line breaks (`=` CRLF), so every line stays within
QP's 76 characters and nothing is re-rendered or re-encoded per reader.

With a DKIM Signer (mailer/deliver/dkim.py), each message is signed over its final bytes. The body
hash is taken over the same pieces: the constant runs between values are canonicalised once
per issue, only the values per reader (see dkim.relaxed_fragment for why that is exact).
Each message also carries its envelope sender (mailer/deliver/verp.py): the From address, the
bounce address, or with VERP one address per copy.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import html
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import BaseHeader
from email.utils import formataddr, formatdate, parseaddr
from typing import cast

from mailer.compose import fields as fields_mod
from mailer.compose.render import Email
from mailer.compose.slots import SLOT_RE, fill_slots, unescape
from mailer.config import Settings
from mailer.deliver import msgid
from mailer.deliver import verp as verp_mod
from mailer.deliver.dkim import Signer, relaxed_body, relaxed_fragment
from mailer.deliver.tokens import sign
from mailer.errors import ConfigError, InputError
from mailer.state.subscribers import Subscriber

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"
MAX_NAME = 200  # a display name longer than this is junk; cut, it keeps header lines short
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Message:
    """One reader's copy, ready for the wire."""

    recipient: str
    message_id: str
    data: bytes  # CRLF line endings, every line under 998 octets
    envelope_from: str = ""  # MAIL FROM; "" leaves it to the transport's own


def clean_header_text(value: str) -> str:
    """No CR, LF or other control character can reach a header: they would start a new one."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _qp(data: str) -> bytes:
    return binascii.b2a_qp(data.encode("utf-8"), istext=True).replace(b"\n", CRLF)


def _fold(name: str, value: str) -> bytes:
    """A header line, RFC 2047-encoded when not ASCII, folded, CRLF-terminated."""
    # header_factory is untyped in typeshed; the default registry builds a BaseHeader.
    header = cast(BaseHeader, policy.SMTP.header_factory(name, clean_header_text(value)))
    return header.fold(policy=policy.SMTP).encode("ascii")


def wire_address(address: str) -> str:
    """The address as it goes on the wire: an internationalised domain in its ASCII (IDNA) form.

    A non-ASCII local part stays as it is; the transport asks the server for SMTPUTF8.
    """
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    with contextlib.suppress(UnicodeError):  # left as it is: the server then decides
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


def _to_header(name: str, address: str) -> bytes:
    name = name[:MAX_NAME]
    if not address.isascii():  # SMTPUTF8: the header carries the address in UTF-8
        shown = _fold("To", name).split(b":", 1)[1].strip() if name else b""
        return b"To: " + (shown + b" " if shown else b"") + f"<{address}>".encode() + CRLF
    line = b"To: " + formataddr((name, address), charset="utf-8").encode() + CRLF
    if len(line) <= 78:
        return line
    # A long display name: let the email package fold it (rare, so its cost does not matter).
    return _fold("To", formataddr((name, address), charset="utf-8"))


class _Part:
    """One body part cut at its slots: encoded literal pieces, and which slot goes between them."""

    def __init__(self, content: str, escape: bool) -> None:
        pieces = SLOT_RE.split(content)
        # unescape: slot syntax the issue itself holds is text again, after the cut
        self.literals = [_qp(unescape(p)) for p in pieces[0::2]]
        self.slots = [int(i) for i in pieces[1::2]]
        self.escape = escape

    def encode(self, values: list[str]) -> bytes:
        out = [self.literals[0]]
        for value, literal in zip(self.encoded(values), self.literals[1:], strict=True):
            out += (SOFT_BREAK, value, SOFT_BREAK, literal)
        return b"".join(out)

    def encoded(self, values: list[str]) -> list[bytes]:
        """Each slot's value, escaped (HTML) and quoted-printable, in slot order."""
        if self.escape:
            return [_qp(html.escape(values[slot], quote=True)) for slot in self.slots]
        return [_qp(values[slot]) for slot in self.slots]


class Composer:
    """Builds each subscriber's message from one rendered Email."""

    def __init__(
        self,
        email: Email,
        settings: Settings,
        *,
        secret: str | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.email = email
        self.settings = settings
        self.secret = secret if secret is not None else settings.signing_secret
        self.sender = settings.from_
        address = parseaddr(self.sender)[1]
        if not address or "@" not in address:
            raise ConfigError(
                f"from must be an address like 'Name <news@example.org>', got {self.sender!r}",
                hint="set `from` in mailer.toml or MAILER_FROM",
            )
        self.envelope = verp_mod.Envelope(settings, email.issue.slug, address)
        self.envelope_from = self.envelope.fixed  # the transport's own, for a bare Message
        self.domain = address.rsplit("@", 1)[1]
        self.signer = signer
        self.list_id = settings.list_id_effective
        self.slots = email.slots
        self.boundary = "=_mailer_" + hashlib.sha256(email.html.encode()).hexdigest()[:24]
        self._html = _Part(email.html, escape=True)
        self._text = _Part(email.text, escape=False)
        self._head = self._constant_headers(settings.list_name)
        self._parts_head = (
            f"--{self.boundary}\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        self._html_head = (
            f"\r\n--{self.boundary}\r\n"
            'Content-Type: text/html; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._mailto = settings.unsubscribe_mailto
        self._targets = bool(settings.unsubscribe_url or self._mailto)
        self._runs = self._constant_runs()
        # Canonicalised once: relaxed_fragment for the runs between values, the whole body's
        # rules (trailing blank lines) for the last one.
        self._canonical_runs = [relaxed_fragment(r) for r in self._runs[:-1]] + [
            relaxed_body(self._runs[-1])
        ]

    def _constant_runs(self) -> list[bytes]:
        """The body's constant bytes between one reader's values (one more than the values).

        Every value sits between two soft line breaks, which end the run before it and
        start the run after it.
        """
        runs: list[bytes] = []
        current = self._parts_head
        for part, after in ((self._text, self._html_head), (self._html, self._tail)):
            current += part.literals[0]
            for literal in part.literals[1:]:
                runs.append(current + SOFT_BREAK)
                current = SOFT_BREAK + literal
            current += after
        runs.append(current)
        return runs

    def _constant_headers(self, list_name: str) -> bytes:
        s = self.settings
        lines = [
            b"From: "
            + formataddr(parseaddr(clean_header_text(s.from_)), charset="utf-8").encode()
            + CRLF,
            _fold("Subject", self.email.subject),
        ]
        if s.reply_to:
            reply_to = parseaddr(clean_header_text(s.reply_to))
            lines.append(b"Reply-To: " + formataddr(reply_to, charset="utf-8").encode() + CRLF)
        lines += [
            _fold("List-Id", f"{list_name} <{self.list_id}>"),
            b"Precedence: bulk\r\n",
            b"MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n'.encode(),
        ]
        if s.unsubscribe_url:  # RFC 8058: one-click needs an https URL to POST to
            lines.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        return b"".join(lines)

    def unsubscribe_url(self, address: str, token: str = "") -> str:
        """The signed one-click unsubscribe link for one address."""
        base = self.settings.unsubscribe_url
        if not base:
            return ""
        token = token or sign(self.secret, self.list_id, address)
        return f"{base}{'&' if '?' in base else '?'}token={token}"

    def unsubscribe_mailto(self, token: str) -> str:
        """The List-Unsubscribe mailto: URI; its subject carries the reader's signed token,
        so `mailer bounces` can believe the mail whoever sends it (a forwarding address)."""
        return f"mailto:{self._mailto}?subject=unsubscribe%20{token}"

    def message_id(self, address: str) -> str:
        """The same for the same issue and reader, so a copy re-sent after a crash collapses."""
        return msgid.make(self.secret, self.email.issue.slug, address, self.domain)

    def values(self, subscriber: Subscriber, unsubscribe_url: str) -> list[str]:
        """Each slot's value for one reader (fallback where the reader's field is empty)."""
        out = []
        for slot in self.slots:
            if slot.field == "unsubscribe_url":
                value = unsubscribe_url
            elif slot.field == "email":
                value = subscriber.email
            elif slot.field == "name":
                value = subscriber.name
            elif slot.field == "first_name":
                value = subscriber.name.split()[0] if subscriber.name.strip() else ""
            else:
                value = subscriber.fields.get(slot.field, "")
            out.append(value or slot.fallback)
        return out

    def personalise(
        self, subscriber: Subscriber, unsubscribe_url: str | None = None
    ) -> tuple[str, str]:
        """(html, text) as one reader sees them, for previews and archives (not the hot path)."""
        url = self.unsubscribe_url(subscriber.email) if unsubscribe_url is None else unsubscribe_url
        values = self.values(subscriber, url)
        return (
            fill_slots(self.email.html, values, escape=True),
            fill_slots(self.email.text, values, escape=False),
        )

    def preheader(self, subscriber: Subscriber) -> str:
        """The preheader as one reader sees it in the inbox (merge fields filled)."""
        text = self.email.preheader
        if not self.email.issue.preheader_from_body or "{{" not in text:
            return text
        values = {"email": subscriber.email, "name": subscriber.name, **subscriber.fields}
        values["first_name"] = subscriber.name.split()[0] if subscriber.name.strip() else ""
        return fields_mod.fill_text(text, values, self.settings.name_fallback)

    def check_fields(self, columns: set[str], source: str = "subscriber list") -> None:
        """A field the subscriber list does not have is an error, not a blank: the issue's
        first (with its line), then the template's."""
        issue = self.email.issue
        fields_mod.check(issue.fields, sorted(columns), path=issue.path, source=source)
        known = {"unsubscribe_url", "email", "name", "first_name"} | columns
        missing = sorted(self.email.fields() - known)
        if missing:
            raise InputError(
                f"the template uses subscriber field(s) {', '.join(missing)}"
                " but the subscriber list has no such column",
                hint=f"columns: {', '.join(sorted(columns | {'email', 'name'}))}",
            )

    def compose(self, subscriber: Subscriber, date: str | None = None) -> Message:
        """The complete message for one subscriber."""
        address = wire_address(subscriber.email)
        token = sign(self.secret, self.list_id, subscriber.email) if self._targets else ""
        unsubscribe = self.unsubscribe_url(subscriber.email, token)
        values = self.values(subscriber, unsubscribe)
        message_id = self.message_id(address)
        targets = []
        if unsubscribe:
            targets.append(f"<{unsubscribe}>")
        if self._mailto:
            targets.append(f"<{self.unsubscribe_mailto(token)}>")
        head = [
            _to_header(clean_header_text(subscriber.name), address),
            b"Date: ",
            (date or formatdate(usegmt=True)).encode(),
            CRLF,
            b"Message-ID: ",
            message_id.encode(),
            CRLF,
        ]
        if targets:
            head += [b"List-Unsubscribe: ", ",\r\n ".join(targets).encode(), CRLF]
        encoded = self._text.encoded(values) + self._html.encoded(values)
        runs = self._runs
        body = [runs[0]]
        for value, run in zip(encoded, runs[1:], strict=True):
            body += (value, run)
        header = b"".join([self._head, *head])
        signatures = b""
        if self.signer is not None:  # over the final bytes: every value is in place
            digest = hashlib.sha256(self._canonical_runs[0])
            for value, run in zip(encoded, self._canonical_runs[1:], strict=True):
                digest.update(relaxed_fragment(value))
                digest.update(run)
            bh = binascii.b2a_base64(digest.digest(), newline=False)
            signatures = self.signer.signatures(header, bh)
        data = b"".join([signatures, header, CRLF, *body])
        return Message(address, message_id, data, self.envelope.sender(subscriber.email))
