"""RFC 2920 pipelining for the SMTP transport, and the DATA both of its paths send.

With PIPELINING the transactions are written on smtplib's socket and its replies read in
order: MAIL, RCPT and DATA go in one write, and with pipeline_depth 2 the next message's
three go out in the same write as the previous body (RFC 2920 3.1), one round trip a
message. No Python library pipelines: aiosmtplib 5.1 awaits each reply as smtplib does.
Without it (the server does not offer it, or smtp_pipelining is off) `submit` is the
transport's own `send`, one reply awaited at a time.
"""

from __future__ import annotations

import re
import smtplib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from mailer.deliver.message import Message
from mailer.deliver.transports.base import ACCEPTED, Done, Result, send_now
from mailer.errors import MailerError
from mailer.states import DeliveryState

DEFERRED, FAILED = DeliveryState.DEFERRED, DeliveryState.FAILED

LOST = (smtplib.SMTPServerDisconnected, OSError)


@dataclass(frozen=True)
class _Txn:
    """One message in the pipeline and who to tell its outcome."""

    message: Message
    done: Done


def _body(txn: _Txn) -> bytes:
    """A message's DATA as it goes on the wire: dot-stuffed, then the end-of-data line."""
    return dot_stuff(txn.message.data) + b".\r\n"


def state_for(code: int) -> DeliveryState:
    """What a refusal makes of a message: 4xx defers it, anything else fails it."""
    return DEFERRED if 400 <= code < 500 else FAILED


_LINE_DOT = re.compile(rb"\n\.")


def dot_stuff(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): a line starting with '.' gets another; ends in CRLF.

    A compiled regex finds and doubles them 3-4 times faster than `in` and bytes.replace on
    a 70 KB message with many lines (8 us to look, 34 to replace, against 29 and 129).
    """
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if _LINE_DOT.search(data) is not None:
        data = _LINE_DOT.sub(b"\n..", data)
    return b"." + data if data.startswith(b".") else data


class Pipelining(ABC):
    """The transactions in flight on one SMTP connection, and how they are sent and answered.

    The transport (smtp.SMTPTransport) opens the session, sends one message at a time when
    the server does not pipeline, and says what a reply or a refusal means to the user.
    """

    smtp: smtplib.SMTP | None
    envelope_from: str
    _sender: str  # the current message's envelope sender, for error messages

    def __init__(self, depth: int) -> None:
        self.pipelined = False  # set at open: smtp_pipelining auto and the server offers it
        self.depth = depth
        # The pipeline, oldest first: a body sent (its reply owed), an envelope sent (MAIL,
        # RCPT and DATA replies owed), an envelope answered 354 (its body goes out next).
        self._body: _Txn | None = None
        self._envelope: _Txn | None = None
        self._ready: _Txn | None = None

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def send(self, message: Message) -> Result: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _reply(self, code: int, text: bytes | str) -> str:
        """A server reply as mailer shows and records it: one line, secrets masked."""

    @abstractmethod
    def _session_refused(self, code: int, text: bytes | str) -> MailerError:
        """MAIL FROM refused for good: the error that stops the run."""

    @abstractmethod
    def _lost_reply(self, exc: BaseException) -> str:
        """What a lost connection is recorded as."""

    def submit(self, message: Message, done: Done) -> bool:
        """Send one message; its outcome reaches `done` now or at a later submit or flush."""
        if not self.pipelined:
            return send_now(self, message, done)
        if not self._collect():
            done(None)  # the connection went while answering earlier messages: never sent
            return False
        smtp = self.smtp
        if smtp is None:
            raise RuntimeError("submit before open")
        txn = _Txn(message, done)
        envelope = self._envelope_for(smtp, message)
        ready, self._ready = self._ready, None
        out = _body(ready) if ready is not None else b""
        if isinstance(envelope, Result):
            done(envelope)  # refused before a word was sent (SMTPUTF8, a line break)
        else:
            out += envelope
        if out:
            try:
                smtp.send(out)
            except LOST as exc:
                # The body (if any) is the one charged; the envelope behind it never counted.
                if ready is not None and not isinstance(envelope, Result):
                    self._envelope = txn
                self._lost(exc, ready if ready is not None else txn, uncertain=False)
                return False
        self._body = ready
        if not isinstance(envelope, Result):
            self._envelope = txn
        return self.flush() if self.depth == 1 else True

    def flush(self) -> bool:
        """Send the body that waits, if any, and read every reply owed."""
        if not self.pipelined:
            return self.smtp is not None
        if not self._collect():
            return False
        ready, self._ready = self._ready, None
        if ready is None:
            return True
        smtp = self.smtp
        if smtp is None:
            raise RuntimeError("flush before open")
        try:
            smtp.send(_body(ready))
        except LOST as exc:
            self._lost(exc, ready, uncertain=False)
            return False
        self._body = ready
        return self._collect()

    def _envelope_for(self, smtp: smtplib.SMTP, message: Message) -> bytes | Result:
        """MAIL, RCPT and DATA for one message as one write, or why it cannot be sent."""
        sender = message.envelope_from or self.envelope_from
        recipient = message.recipient
        if any(c in a for a in (sender, recipient) for c in "\r\n\0"):
            return Result(FAILED, 0, "the address holds a line break or NUL: not sent")
        options = f" SIZE={len(message.data)}" if smtp.has_extn("size") else ""
        if not (sender.isascii() and recipient.isascii()):
            if not smtp.has_extn("smtputf8"):
                return Result(FAILED, 0, "the server does not support SMTPUTF8 for this address")
            options += " SMTPUTF8"
        commands = f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
        return commands.encode("utf-8")

    def _collect(self) -> bool:
        """Read the replies owed, oldest first, telling each message its outcome."""
        smtp = self.smtp
        if smtp is None:
            return False
        body, self._body = self._body, None
        if body is not None:
            try:
                code, text = smtp.getreply()
            except LOST as exc:
                self._lost(exc, body, uncertain=True)
                return False
            if code == 250:
                body.done(ACCEPTED)
            elif code == 421:  # "closing": the server hangs up; the envelope behind is untried
                self._hang_up()
                body.done(Result(DEFERRED, code, self._reply(code, text), dropped=True))
                return False
            else:
                body.done(Result(state_for(code), code, self._reply(code, text)))
        envelope, self._envelope = self._envelope, None
        if envelope is None:
            return True
        replies: list[tuple[int, bytes]] = []
        try:
            while len(replies) < 3 and 421 not in (r[0] for r in replies):
                replies.append(smtp.getreply())  # after a 421 the server has hung up
        except LOST as exc:
            self._lost(exc, envelope, uncertain=False)
            return False
        if [r[0] for r in replies] in ([250, 250, 354], [250, 251, 354]):
            self._ready = envelope
            return True
        return self._refused_envelope(envelope, replies)

    def _refused_envelope(self, txn: _Txn, replies: list[tuple[int, bytes]]) -> bool:
        """The first refusal of MAIL, RCPT or DATA is the reader's outcome, as with smtplib."""
        smtp = self.smtp
        if smtp is None:
            raise RuntimeError("no connection")
        self._sender = txn.message.envelope_from or self.envelope_from
        codes = [code for code, _ in replies]
        if codes[0] >= 500:
            txn.done(None)  # the server refuses us, not this reader: nobody is marked
            self.close()
            raise self._session_refused(*replies[0])
        code, text = next(r for r in replies if r[0] not in (250, 251, 354))
        dropped = code == 421
        if not dropped:
            try:
                if codes[-1] == 354:  # DATA taken with no valid recipient: a lone dot ends it
                    smtp.send(b".\r\n")  # (RFC 2920 3.1; the server must deliver nothing)
                    smtp.getreply()
                smtp.rset()
            except (smtplib.SMTPException, OSError):
                dropped = True
        if dropped:
            self._hang_up()
        txn.done(Result(state_for(code), code, self._reply(code, text), dropped))
        return not dropped

    def _lost(self, exc: BaseException, charged: _Txn, *, uncertain: bool) -> None:
        """The connection went: the oldest message owed is charged, the rest are untried."""
        self._hang_up()
        charged.done(Result(DEFERRED, 0, self._lost_reply(exc), True, uncertain=uncertain))

    def _hang_up(self) -> None:
        """Close without QUIT; every message still owed goes back untried."""
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()
        self._give_back_untried()

    def _give_up_owed(self, why: str) -> bool:
        """close() with messages still owed (an error path): the body sent may have arrived.
        True when the server may be reading a body (a QUIT would be taken as its text)."""
        mid_data = self._ready is not None or self._envelope is not None
        body, self._body = self._body, None
        if body is not None:
            body.done(Result(DEFERRED, 0, why, True, uncertain=True))
        self._give_back_untried()
        return mid_data

    def _give_back_untried(self) -> None:
        """Every message still owed goes back to the queue untried: the envelopes, whose body
        never went, and a body owed, which never is (its caller charged it first)."""
        for txn in (self._envelope, self._ready, self._body):
            if txn is not None:
                txn.done(None)
        self._envelope = self._ready = self._body = None
