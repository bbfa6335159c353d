"""What comes back: bounces, spam complaints and mailed unsubscribes (`mailer bounces`).

    classify()  one message's bytes -> what it is, and about which addresses (no ledger)
    Maildir, Mbox, Imap   where messages are read from, and where handled ones go
    process()   classify each message, find its reader and issue, record it in the ledger

A message is, in this order: an RFC 3464 DSN (multipart/report; report-type=delivery-status),
an ARF report (report-type=feedback-report), a mail to the List-Unsubscribe mailto: address,
a bounce in another format flufl.bounce knows, or not understood (counted, left alone).

Per DSN recipient: Action failed with a 5.x.x Status is a hard bounce, except the codes that
blame the message or our sending rather than the address (PERMANENT_BUT_SOFT: mailbox full,
too big, content, policy/spam blocks): a blocklisted IP must not wipe out a domain's readers.
Those, 4.x.x and Action delayed are soft. Delivered/relayed/expanded recipients are ignored.

flufl.bounce reports addresses only. Its permanent failures are hard only when the message
proves it is about a copy we sent to that address (a VERP token, or one of our Message-IDs
whose digest is that address's); else they count as soft, so three such reports on
consecutive issues are needed, the same as any soft bounce. Its heuristics read free text:
acting on one unproven guess would let any stray message suppress a reader.

A reader is found from the VERP address first (verp.parse), then the DSN's
Original-Recipient / Final-Recipient (or the ARF's Original-Rcpt-To, the reported message's
To), then our Message-ID's digest among that issue's deliveries (a redacted ARF). Someone who
never had a copy is nobody's bounce: counted as not understood. The issue is the VERP token's,
else the returned message's Message-ID (<slug.digest@domain>, see message.Composer).
"""

from __future__ import annotations

import contextlib
import email
import hashlib
import hmac
import imaplib
import logging
import os
import re
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any, Protocol

from flufl.bounce import all_failures

from mailer.config import Settings, env_name
from mailer.deliver import verp
from mailer.deliver.message import wire_address
from mailer.errors import EXIT_NOPERM, EXIT_UNAVAILABLE, ConfigError, InputError, MailerError
from mailer.state.deliveries import Delivery
from mailer.state.feedback import FeedbackEvent, FeedbackOutcome
from mailer.state.ledger import open_ledger, state_lock
from mailer.state.subscribers import check_email
from mailer.states import Feedback

# flufl.bounce logs a detector's exception with its traceback; the message is only "not
# understood" here, and nothing may reach the terminal as a traceback.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

PROCESSED = "processed"  # the folder handled messages move to (Maildir: .processed)
IMAP_TIMEOUT = 30.0
DETAIL_MAX = 300
# Enhanced status codes (RFC 3463) that are permanent but do not say the address is bad.
PERMANENT_BUT_SOFT = re.compile(r"^5\.(2\.2|3\.4|6\.\d+|7\.\d+)$")
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})  # ARF Feedback-Type values
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC_CODE = re.compile(r"^\s*(?:smtp\s*;)?\s*([245])\d\d\b", re.I)
_OUR_ID = re.compile(r"^<?([^<>@\s]+)\.([0-9a-f]{32})@([^<>@\s]+?)>?$")
# Syntax enough to look an address up (the ledger decides whose it is): one @, a dot after it.
_ADDRESS = re.compile(r'^[^\s@<>(),;:"\[\]\\]+@[^\s@<>(),;:"\[\]\\]+\.[^\s@<>(),;:"\[\]\\.]+$')
_QUOTED_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.I | re.M)


# -- what a message is --------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One reader a message is about."""

    addresses: tuple[str, ...]  # naming the reader, best first; empty in a redacted report
    kind: Feedback
    status: str = ""
    detail: str = ""
    unproven: bool = False  # flufl.bounce's guess: hard only with proof that it is ours


@dataclass(frozen=True)
class Classified:
    """What one incoming message is; kind None: not understood (why says why)."""

    kind: Feedback | None
    why: str
    failures: tuple[Failure, ...] = ()
    message_id: str = ""  # the incoming message's own
    quoted_ids: tuple[str, ...] = ()  # Message-IDs of the message it returns or quotes
    verp: tuple[str, ...] = ()  # addresses that may carry a VERP token


def classify(raw: bytes, settings: Settings) -> Classified:
    """Tell what a message is. Never raises: a broken or hostile message is not understood."""
    try:
        msg = email.message_from_bytes(raw)
        found = _classify(msg, settings)
    except Exception as exc:  # any parser or detector failure on junk: not understood
        return Classified(None, f"cannot parse it ({type(exc).__name__})")
    return found


def _classify(msg: Message, settings: Settings) -> Classified:
    parts = list(msg.walk())
    types = {p.get_content_type() for p in parts}
    report = ""
    if msg.get_content_type() == "multipart/report":
        report = str(msg.get_param("report-type") or "").lower()
    status_types = {"message/delivery-status", "message/global-delivery-status"}
    if report == "delivery-status" or types & status_types:
        status_parts = [p for p in parts if p.get_content_type() in status_types]
        kind, why, failures = _dsn(status_parts)
    elif report == "feedback-report" or "message/feedback-report" in types:
        kind, why, failures = _arf(msg, parts)
    elif _to_unsubscribe(msg, settings):
        kind, why, failures = _mailto(msg)
    else:
        kind, why, failures = _flufl(msg)
        if kind is None and _from_a_mail_system(msg):
            # A bounce in a form no detector knows (qmail's, a gateway's own text): only a VERP
            # address can say whose it is, and nothing says how final it is, so it counts soft.
            kind, why = Feedback.SOFT, "a bounce in a form not understood"
            failures = [Failure((), Feedback.SOFT, "", "a bounce in a form not understood")]
    return Classified(
        kind,
        why,
        tuple(failures),
        message_id=_text(msg.get("Message-ID"))[:250],
        quoted_ids=_quoted_ids(msg, parts),
        verp=_verp_candidates(msg, parts),
    )


_Found = tuple[Feedback | None, str, list[Failure]]


def _text(value: object) -> str:
    """A header value as one line of text ("" when absent)."""
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(msg: Message, *names: str) -> list[str]:
    values = [_text(v) for name in names for v in msg.get_all(name) or []]
    return [a.lower() for _, a in getaddresses(values) if "@" in a]


def _fields(text: str) -> list[dict[str, list[str]]]:
    """Blocks of `Name: value` lines (continuations folded), split at blank lines."""
    blocks: list[dict[str, list[str]]] = []
    block: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if not line.strip():
            if block:
                blocks.append(block)
            block, name = {}, ""
        elif line[:1] in " \t" and name:
            block[name][-1] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            name = name.strip().lower()
            block.setdefault(name, []).append(value.strip())
    if block:
        blocks.append(block)
    return blocks


def _blocks(part: Message) -> list[dict[str, list[str]]]:
    """The field blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parsed the blocks as headers
        out: list[dict[str, list[str]]] = []
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            lines = [f"{k}: {_text(v)}" for k, v in sub.items()]
            out += _fields("\n".join(lines))
            rest = sub.get_payload()
            if isinstance(rest, str):
                out += _fields(rest)
        return out
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    return _fields(text)


def _first(block: dict[str, list[str]], name: str) -> str:
    values = block.get(name)
    return values[0] if values else ""


def _typed_address(value: str) -> str:
    """'rfc822; Ada@Example.com' -> 'ada@example.com' ("" when it is no address)."""
    address = value.split(";", 1)[1] if ";" in value else value
    address = address.strip().strip("<>").strip()
    return address.lower() if _ADDRESS.match(address) else ""


def _dsn(status_parts: list[Message]) -> _Found:
    if not status_parts:
        return None, "a delivery report without its delivery-status part", []
    failures = []
    recipients = 0
    for part in status_parts:
        for block in _blocks(part):
            if "final-recipient" not in block and "original-recipient" not in block:
                continue
            recipients += 1
            failure = _dsn_recipient(block)
            if failure is not None:
                failures.append(failure)
    if not failures:
        if recipients:
            return None, "a delivery report with no failed or delayed recipient", []
        return None, "a malformed delivery report (no recipient fields)", []
    failures.sort(key=lambda f: f.kind != Feedback.HARD)
    return failures[0].kind, "RFC 3464 delivery report", failures


def _dsn_recipient(block: dict[str, list[str]]) -> Failure | None:
    """One recipient's fields -> a hard or soft Failure; None if it was delivered or is junk."""
    names = (
        _first(block, n) for n in ("original-recipient", "final-recipient", "x-actual-recipient")
    )
    addresses = tuple(dict.fromkeys(a for a in map(_typed_address, names) if a))
    action = _first(block, "action").split(";")[0].strip().lower()
    diagnostic = _first(block, "diagnostic-code")
    status_match = _STATUS.search(_first(block, "status")) or _STATUS.search(diagnostic)
    status = ".".join(status_match.groups()) if status_match else ""
    klass = status[:1]
    if not klass:
        basic = _BASIC_CODE.match(diagnostic)
        klass = basic.group(1) if basic else ""
    if not addresses or action in ("delivered", "relayed", "expanded") or klass == "2":
        return None
    detail = _short(diagnostic.split(";", 1)[1] if ";" in diagnostic else diagnostic)
    if action == "delayed" or klass == "4":
        return Failure(addresses, Feedback.SOFT, status, detail)
    if klass == "5":
        permanent = not PERMANENT_BUT_SOFT.match(status)
        return Failure(addresses, Feedback.HARD if permanent else Feedback.SOFT, status, detail)
    return None  # failed, but no code to say how: not enough to act on


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"


def _arf(msg: Message, parts: list[Message]) -> _Found:
    reports = [p for p in parts if p.get_content_type() == "message/feedback-report"]
    if not reports:
        return None, "a feedback report without its message/feedback-report part", []
    fields: dict[str, list[str]] = {}
    for block in _blocks(reports[0]):
        for name, values in block.items():
            fields.setdefault(name, []).extend(values)
    kind = _first(fields, "feedback-type").lower()
    if kind not in COMPLAINT_TYPES:
        return None, f"an ARF report of type {kind or '(none)'!r}, not a complaint", []
    addresses = [_typed_address(v) for v in fields.get("original-rcpt-to", [])]
    for original in _originals(parts):
        addresses += _addresses(original, "To")
    candidates = tuple(dict.fromkeys(a for a in addresses if a))
    agent = _short(_first(fields, "user-agent"))
    return (
        Feedback.COMPLAINT,
        f"ARF {kind} report",
        [Failure(candidates, Feedback.COMPLAINT, kind, agent)],
    )


def _to_unsubscribe(msg: Message, settings: Settings) -> bool:
    target = parseaddr(settings.unsubscribe_mailto)[1].lower()
    names = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
    return bool(target) and target in _addresses(msg, *names)


def _mailto(msg: Message) -> _Found:
    auto = _text(msg.get("Auto-Submitted")).lower()
    if auto and auto != "no":
        return None, "an automatic message to the unsubscribe address", []
    sender = parseaddr(_text(msg.get("From")))[1]
    try:
        address = check_email(sender)
    except ValueError:
        return None, f"a mail to the unsubscribe address from no valid address ({sender!r})", []
    subject = _short(_text(msg.get("Subject")))
    return (
        Feedback.UNSUBSCRIBE,
        "mail to the unsubscribe address",
        [Failure((address.lower(),), Feedback.UNSUBSCRIBE, "", subject)],
    )


def _flufl(msg: Message) -> _Found:
    temporary, permanent = all_failures(msg)
    failures = [
        Failure((a,), Feedback.HARD, "", "flufl.bounce: permanent failure", unproven=True)
        for a in sorted({_flufl_address(b) for b in permanent} - {""})
    ]
    failures += [
        Failure((a,), Feedback.SOFT, "", "flufl.bounce: temporary failure")
        for a in sorted(
            {_flufl_address(b) for b in temporary} - {""} - {f.addresses[0] for f in failures}
        )
    ]
    if not failures:
        return None, "not a bounce, a complaint or an unsubscribe", []
    return failures[0].kind, "a bounce flufl.bounce recognised", failures


_MAIL_SYSTEM = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon)$", re.I)


def _from_a_mail_system(msg: Message) -> bool:
    """From MAILER-DAEMON or postmaster, and not an auto-reply: a delivery failure of some kind."""
    if _text(msg.get("Auto-Submitted")).strip().lower() == "auto-replied":
        return False
    sender = parseaddr(_text(msg.get("From")))[1]
    return bool(_MAIL_SYSTEM.match(sender.rpartition("@")[0] if "@" in sender else sender))


def _flufl_address(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return _typed_address(text)


def _originals(parts: list[Message]) -> list[Message]:
    """The headers of each message a report returns (message/rfc822, text/rfc822-headers)."""
    out = []
    for part in parts:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list):
                out += [m for m in payload if isinstance(m, Message)]
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                out.append(BytesHeaderParser().parsebytes(data))
    return out


def _quoted_ids(msg: Message, parts: list[Message]) -> tuple[str, ...]:
    """Message-IDs of what the message returns, quotes or replies to."""
    ids = [_text(m.get("Message-ID")) for m in _originals(parts)]
    for part in parts:
        if part.get_content_maintype() == "text" and not part.is_multipart():
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                ids += _QUOTED_ID.findall(data.decode("utf-8", "replace"))
    for name in ("In-Reply-To", "References"):
        ids += re.findall(r"<[^<>\s]+>", _text(msg.get(name)))
    own = _text(msg.get("Message-ID"))
    return tuple(dict.fromkeys(i for i in ids if i and i != own))


def _verp_candidates(msg: Message, parts: list[Message]) -> tuple[str, ...]:
    names = ("Delivered-To", "X-Original-To", "Envelope-To", "To")
    found = _addresses(msg, *names)
    for original in _originals(parts):
        found += _addresses(original, "Return-Path")
    return tuple(dict.fromkeys(found))


# -- whose, and which issue ---------------------------------------------------------------


def digest(secret: str, slug: str, address: str) -> str:
    """The digest in our Message-ID for one reader of one issue (as message.Composer makes it)."""
    data = f"{slug}\0{address.lower()}".encode()
    return hmac.new(secret.encode(), data, "sha256").hexdigest()[:32]


def _matches(secret: str, slug: str, want: str, address: str) -> bool:
    return any(
        hmac.compare_digest(digest(secret, slug, a), want)
        for a in dict.fromkeys((address, wire_address(address)))
    )


class Returns(verp.Readers, Protocol):
    """The ledger as feedback is tied to readers and recorded (a VERP token's too)."""

    def delivery(self, issue: str, email: str) -> Delivery | None: ...
    def is_reader(self, email: str) -> bool: ...
    def last_issue(self, email: str) -> str | None: ...
    def feedback_seen(self, message_id: str) -> bool: ...
    def record_feedback(
        self,
        message_id: str,
        kind: Feedback,
        events: Sequence[FeedbackEvent],
        *,
        source: str,
        soft_limit: int,
    ) -> list[FeedbackOutcome] | None: ...


def _verp_parse(address: str, settings: Settings, ledger: Returns) -> tuple[str, str] | None:
    """(issue slug, reader) from a VERP address, else None (a domain IDNA refuses too)."""
    try:
        return verp.parse(address, settings, ledger)
    except ValueError:
        return None


def _our_ids(ids: tuple[str, ...], settings: Settings) -> list[tuple[str, str]]:
    """(slug, digest) of each of our Message-IDs among ids."""
    sender = parseaddr(settings.from_)[1]
    domain = sender.rsplit("@", 1)[1].lower() if "@" in sender else ""
    out = []
    for message_id in ids:
        match = _OUR_ID.match(message_id)
        if match and (not domain or match.group(3).lower() == domain):
            out.append((match.group(1), match.group(2)))
    return out


def resolve(
    found: Classified, ledger: Returns, settings: Settings
) -> tuple[list[FeedbackEvent], list[str]]:
    """The ledger events a classified message stands for, and the addresses it could not
    tie to one of our readers."""
    secret = settings.signing_secret
    ours = _our_ids(found.quoted_ids, settings)
    verp = next(
        (hit for a in found.verp if (hit := _verp_parse(a, settings, ledger)) is not None), None
    )
    failures = list(found.failures)
    if verp is not None and found.kind is not Feedback.UNSUBSCRIBE:
        # One copy went to one reader: the VERP token names them, the report only adds how.
        slug, reader = verp
        match = [f for f in failures if reader.lower() in f.addresses] or failures[:1]
        failure = match[0]  # flufl's guess included: the token is the proof it is ours
        event = FeedbackEvent(reader.lower(), failure.kind, slug, failure.status, failure.detail)
        return [event], []
    events: dict[str, FeedbackEvent] = {}
    strangers: list[str] = []
    for failure in failures:
        email, issue, proven = _reader(failure, ours, ledger, secret)
        if email is None:
            strangers += failure.addresses or ["(no address)"]
            continue
        kind, detail = failure.kind, failure.detail
        if failure.unproven and not proven:
            kind, detail = Feedback.SOFT, f"{detail} (no proof it is our copy: counted soft)"
        if not issue and kind is Feedback.SOFT:
            issue = ledger.last_issue(email) or ""
        events.setdefault(email, FeedbackEvent(email, kind, issue, failure.status, detail))
    return list(events.values()), strangers


def _reader(
    failure: Failure, ours: list[tuple[str, str]], ledger: Returns, secret: str
) -> tuple[str | None, str, bool]:
    """(reader, issue, proven by our Message-ID's digest) for one Failure."""
    for slug, want in ours:
        for address in failure.addresses:
            if _matches(secret, slug, want, address):
                return address, slug, True
    if failure.kind is Feedback.UNSUBSCRIBE:  # anyone may ask not to be mailed
        issue = next((slug for slug, _ in ours if ledger.delivery(slug, failure.addresses[0])), "")
        return failure.addresses[0], issue, False
    for address in failure.addresses:
        if ledger.is_reader(address):
            issue = next((slug for slug, _ in ours if ledger.delivery(slug, address)), "")
            return address, issue, False
    for slug, want in ours:  # a redacted report: find the reader the digest names
        for delivery in ledger.deliveries(slug):
            if _matches(secret, slug, want, delivery.email):
                return delivery.email, slug, True
    return None, "", False


# -- where messages come from -------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One message in a mailbox: its key there, how to name it to a user, its bytes."""

    key: str
    label: str
    data: bytes


class Mailbox(Protocol):
    name: str  # maildir, mbox, imap: recorded as the source

    def messages(self) -> Iterator[Item]: ...

    def done(self, item: Item) -> None:
        """Move a handled message out of the way (to the processed folder)."""

    def close(self) -> None: ...


class Maildir:
    """A Maildir's new/ and cur/; handled messages move to its .processed sub-Maildir."""

    name = "maildir"

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.expanduser(path))
        if not (self.path / "cur").is_dir() or not (self.path / "new").is_dir():
            raise InputError("not a Maildir (no cur/ and new/ in it)", path=self.path)
        self.processed = self.path / f".{PROCESSED}"

    def messages(self) -> Iterator[Item]:
        files = []
        for sub in ("new", "cur"):
            try:
                files += sorted((self.path / sub).iterdir())
            except OSError as exc:
                raise InputError(f"cannot read {sub}/: {exc.strerror}", path=self.path) from None
        for path in files:
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # another reader took it meanwhile
                continue
            except OSError as exc:
                raise InputError(f"cannot read it: {exc.strerror}", path=path) from None
            yield Item(str(path), f"{path.parent.name}/{path.name}", data)

    def done(self, item: Item) -> None:
        source = Path(item.key)
        name = source.name if ":2," in source.name else source.name + ":2,S"
        try:
            for sub in ("tmp", "new", "cur"):
                (self.processed / sub).mkdir(parents=True, exist_ok=True)
            (self.processed / "maildirfolder").touch()
            source.rename(self.processed / "cur" / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(
                f"cannot move it to {self.processed}: {exc.strerror}", path=source
            ) from None

    def close(self) -> None:
        pass


class Mbox:
    """An mbox file, read only: handled messages stay; their ids in the ledger mark them."""

    name = "mbox"

    def __init__(self, path: Path) -> None:
        import mailbox

        self.path = Path(os.path.expanduser(path))
        try:
            with self.path.open("rb") as fh:
                head = fh.read(5)
            self.box = mailbox.mbox(self.path, create=False)
        except OSError as exc:
            raise InputError(
                f"cannot read the mbox: {exc.strerror or exc}", path=self.path
            ) from None
        if head and head != b"From ":
            raise InputError("not an mbox (it does not start with a 'From ' line)", path=self.path)

    def messages(self) -> Iterator[Item]:
        for number, key in enumerate(self.box.keys(), 1):
            yield Item(str(key), f"message {number}", self.box.get_bytes(key))

    def done(self, item: Item) -> None:
        pass  # never rewritten: another program may be appending to it

    def close(self) -> None:
        self.box.close()


class IMAPUnavailable(MailerError):
    """The IMAP server cannot be reached (or its certificate is not trusted)."""

    exit_code = EXIT_UNAVAILABLE


class IMAPLoginRefused(MailerError):
    """The IMAP server refused the user name or password."""

    exit_code = EXIT_NOPERM


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Imap:
    """One folder over IMAP with TLS (certificate and host name verified); handled messages
    are moved to the `processed` folder (MOVE, else COPY, \\Deleted and EXPUNGE)."""

    name = "imap"

    def __init__(self, settings: Settings) -> None:
        s = settings
        for key in ("bounce_imap_host", "bounce_imap_user", "bounce_imap_password"):
            if not getattr(s, key):
                raise ConfigError(
                    f"--imap needs {key}",
                    hint=f"set {env_name(key)}"
                    + (" in .env" if key.endswith("password") else " or it in mailer.toml"),
                )
        self.where = f"{s.bounce_imap_host}:{s.bounce_imap_port}"
        self.password = s.bounce_imap_password
        try:
            context = ssl.create_default_context(cafile=s.bounce_imap_cafile or None)
        except OSError as exc:
            raise ConfigError(
                f"bounce_imap_cafile {s.bounce_imap_cafile}: {exc.strerror or exc}"
            ) from None
        try:
            self.conn = imaplib.IMAP4_SSL(
                s.bounce_imap_host, s.bounce_imap_port, ssl_context=context, timeout=IMAP_TIMEOUT
            )
        except ssl.SSLCertVerificationError as exc:
            raise IMAPUnavailable(
                f"{self.where}: the server's TLS certificate is not trusted ({exc.verify_message})",
                hint="fix the certificate, or name its CA in MAILER_BOUNCE_IMAP_CAFILE",
            ) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise IMAPUnavailable(f"cannot reach the IMAP server at {self.where}: {exc}") from None
        try:
            self.conn.login(s.bounce_imap_user, s.bounce_imap_password)
        except imaplib.IMAP4.error as exc:
            self._drop()
            # One line, no hint: what to check is in it; the password never is.
            raise IMAPLoginRefused(
                f"{self.where} refused the login for {s.bounce_imap_user!r}: {self._say(exc)}"
                " (check MAILER_BOUNCE_IMAP_USER and MAILER_BOUNCE_IMAP_PASSWORD)"
            ) from None
        except OSError as exc:
            raise IMAPUnavailable(f"{self.where}: the connection failed: {exc}") from None
        self.folder = s.bounce_imap_folder
        typ, data = self._call(self.conn.select, _quote(self.folder))
        if typ != "OK":
            self.close()
            raise ConfigError(
                f"{self.where}: cannot open folder {self.folder!r}: {self._say(data)}",
                hint="set bounce_imap_folder (MAILER_BOUNCE_IMAP_FOLDER) to a folder that exists",
            )
        # Asked again: servers (Dovecot) list MOVE and UIDPLUS only once logged in.
        typ, data = self._call(self.conn.capability)
        words = data[0].split() if typ == "OK" and data and isinstance(data[0], bytes) else []
        self.capabilities = {w.decode("ascii", "replace").upper() for w in words}
        self._made_processed = False

    def _say(self, what: object) -> str:
        """Server text for a message: one line, the password never in it."""
        if isinstance(what, list):
            what = b" ".join(w for w in what if isinstance(w, bytes))
        text = what.decode("utf-8", "replace") if isinstance(what, bytes) else str(what)
        text = " ".join(text.split())
        return text.replace(self.password, "********") if self.password else text

    def _call(self, method: Callable[..., tuple[str, Any]], *args: str) -> tuple[str, list[Any]]:
        try:
            return method(*args)
        except (imaplib.IMAP4.abort, OSError) as exc:
            raise IMAPUnavailable(
                f"{self.where}: the connection failed: {self._say(exc)}"
            ) from None
        except imaplib.IMAP4.error as exc:
            raise IMAPUnavailable(f"{self.where}: {self._say(exc)}") from None

    def messages(self) -> Iterator[Item]:
        typ, data = self._call(self.conn.uid, "SEARCH", "ALL")
        uids = data[0].split() if typ == "OK" and data and isinstance(data[0], bytes) else []
        for uid in uids:
            typ, fetched = self._call(self.conn.uid, "FETCH", uid.decode(), "(BODY.PEEK[])")
            body = next((p[1] for p in fetched if isinstance(p, tuple) and len(p) == 2), None)
            if typ == "OK" and isinstance(body, bytes):  # gone meanwhile: nothing to read
                yield Item(uid.decode(), f"uid {uid.decode()}", body)

    def done(self, item: Item) -> None:
        if not self._made_processed:
            typ, data = self._call(self.conn.list, '""', _quote(PROCESSED))
            if not any(isinstance(d, bytes) for d in data):
                self._call(self.conn.create, _quote(PROCESSED))
            self._made_processed = True
        if "MOVE" in self.capabilities:
            typ, data = self._call(self.conn.uid, "MOVE", item.key, _quote(PROCESSED))
        else:
            typ, data = self._call(self.conn.uid, "COPY", item.key, _quote(PROCESSED))
            if typ == "OK":
                self._call(self.conn.uid, "STORE", item.key, "+FLAGS.SILENT", "(\\Deleted)")
                if "UIDPLUS" in self.capabilities:  # only this message
                    self._call(self.conn.uid, "EXPUNGE", item.key)
                else:
                    self._call(self.conn.expunge)
        if typ != "OK":
            raise IMAPUnavailable(
                f"{self.where}: cannot move {item.label} to {PROCESSED!r}: {self._say(data)}"
            )

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown()

    def close(self) -> None:
        try:
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            self._drop()


# -- reading a mailbox into the ledger ----------------------------------------------------


@dataclass
class Report:
    """What `mailer bounces` did; lines say who and why, for -v."""

    read: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    already: int = 0
    unknown: int = 0
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"read {self.read}: {self.hard} hard bounces, {self.soft} soft, "
            f"{self.complaints} complaints, {self.unsubscribes} unsubscribes, "
            f"{self.already} already handled, {self.unknown} not understood"
        )

    def count(self, kind: Feedback) -> None:
        if kind is Feedback.HARD:
            self.hard += 1
        elif kind is Feedback.SOFT:
            self.soft += 1
        elif kind is Feedback.COMPLAINT:
            self.complaints += 1
        else:
            self.unsubscribes += 1


def message_key(found: Classified, raw: bytes) -> str:
    """What makes a message the same one when read again: its Message-ID, else its bytes."""
    if re.fullmatch(r"<[^<>\s]{1,240}>", found.message_id):
        return found.message_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _line(outcome: FeedbackOutcome, limit: int) -> str:
    e = outcome.event
    what = {
        Feedback.HARD: "hard bounce",
        Feedback.SOFT: "soft bounce",
        Feedback.COMPLAINT: "complaint",
        Feedback.UNSUBSCRIBE: "unsubscribe",
    }[e.kind]
    said = " ".join(filter(None, (e.status, e.detail)))
    if outcome.suppressed:
        result = "suppressed"
    elif e.kind is Feedback.SOFT and outcome.streak < limit:
        result = f"{outcome.streak} of {limit} in a row"
    else:
        result = "was already suppressed"
    return f"{what}  {e.email}  {e.issue or '-'}  {said or '-'}  ({result})"


def process(
    settings: Settings,
    box: Mailbox,
    *,
    keep: bool = False,
    on_message: Callable[[Report], None] | None = None,
) -> Report:
    """Read every message in `box`, record what each says, move handled ones (unless keep).

    One run at a time per project (the `bounces` lock): two would move the same files.
    """
    report = Report()
    limit = settings.soft_bounce_limit
    with state_lock(settings, "bounces"), open_ledger(settings) as ledger:
        for item in box.messages():
            report.read += 1
            found = classify(item.data, settings)
            key = message_key(found, item.data)
            handled = handle(found, key, item, box.name, ledger, settings, report, limit)
            if handled and not keep:
                box.done(item)
            if on_message is not None:
                on_message(report)
    return report


def handle(
    found: Classified,
    key: str,
    item: Item,
    source: str,
    ledger: Returns,
    settings: Settings,
    report: Report,
    limit: int,
) -> bool:
    """Act on one message; True when it is handled (now or before) and may be moved."""
    if ledger.feedback_seen(key):
        report.already += 1
        report.lines.append(f"already handled  {item.label}  {key}")
        return True
    if found.kind is None:
        report.unknown += 1
        report.lines.append(f"not understood  {item.label}: {found.why}")
        return False
    events, strangers = resolve(found, ledger, settings)
    if not events:
        report.unknown += 1
        who = ", ".join(strangers)
        report.lines.append(
            f"not understood  {item.label}: {found.why} about {who}, not one of our readers"
        )
        return False
    kind = min((e.kind for e in events), key=list(Feedback).index)
    outcomes = ledger.record_feedback(key, kind, events, source=source, soft_limit=limit)
    if outcomes is None:  # another process handled it a moment ago
        report.already += 1
        report.lines.append(f"already handled  {item.label}  {key}")
        return True
    report.count(kind)
    report.lines += [_line(o, limit) for o in outcomes]
    return True
