"""One incoming message's bytes -> what it is and about which addresses (no ledger, no mailbox).

A message is, in this order: an RFC 3464 DSN (multipart/report; report-type=delivery-status),
an ARF report (report-type=feedback-report), a mail to the List-Unsubscribe mailto: address,
a bounce in another format flufl.bounce knows, or not understood (counted, left alone).

Per DSN recipient: Action failed with a 5.x.x Status is a hard bounce, except the codes that
blame the message or our sending rather than the address (PERMANENT_BUT_SOFT: mailbox full,
too big, content, policy/spam blocks): a blocklisted IP must not wipe out a domain's readers.
Those, 4.x.x and Action delayed are soft. Delivered/relayed/expanded recipients are ignored.

Nothing here is believed yet: anyone can send any of these. Besides the failures, a
Classified carries what may tie the message to one of our copies (resolve.py decides): the
Message-IDs it returns or quotes, the addresses that may hold a VERP token, and in a mail to
the unsubscribe address the signed unsubscribe tokens it may carry.
"""

from __future__ import annotations

import email
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from mailer.config import Settings
from mailer.state.subscribers import check_email
from mailer.states import Feedback

# flufl.bounce logs a detector's exception with its traceback; the message is only "not
# understood" here, and nothing may reach the terminal as a traceback.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

DETAIL_MAX = 300
# Enhanced status codes (RFC 3463) that are permanent but do not say the address is bad.
PERMANENT_BUT_SOFT = re.compile(r"^5\.(2\.2|3\.4|6\.\d+|7\.\d+)$")
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})  # ARF Feedback-Type values
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC_CODE = re.compile(r"^\s*(?:smtp\s*;)?\s*([245])\d\d\b", re.I)
# Syntax enough to look an address up (the ledger decides whose it is): one @, a dot after it.
_ADDRESS = re.compile(r'^[^\s@<>(),;:"\[\]\\]+@[^\s@<>(),;:"\[\]\\]+\.[^\s@<>(),;:"\[\]\\.]+$')
_QUOTED_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.I | re.M)
# A signed unsubscribe token (deliver/tokens.py): URL-safe base64 payload, a dot, and the
# 43 characters of an HMAC-SHA256; a leading dot when the payload is compressed.
_TOKEN = re.compile(r"(?<![\w.-])(\.?[A-Za-z0-9_-]{10,1000}\.[A-Za-z0-9_-]{43})(?![\w.-])")
MAX_TOKENS = 5  # each one found costs an HMAC: a message stuffed with them is no reason


@dataclass(frozen=True)
class Failure:
    """One reader a message is about."""

    addresses: tuple[str, ...]  # naming the reader, best first; empty in a redacted report
    kind: Feedback
    status: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Classified:
    """What one incoming message is; kind None: not understood (why says why)."""

    kind: Feedback | None
    why: str
    failures: tuple[Failure, ...] = ()
    message_id: str = ""  # the incoming message's own
    quoted_ids: tuple[str, ...] = ()  # Message-IDs of the message it returns or quotes
    verp: tuple[str, ...] = ()  # addresses that may carry a VERP token
    tokens: tuple[str, ...] = ()  # what may be signed unsubscribe tokens (mailto only)


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
    tokens: tuple[str, ...] = ()
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
        tokens = _tokens(msg, parts)
        kind, why, failures = _mailto(msg, signed=bool(tokens))
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
        tokens=tokens,
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


def _mailto(msg: Message, *, signed: bool) -> _Found:
    auto = _text(msg.get("Auto-Submitted")).lower()
    if auto and auto != "no":
        return None, "an automatic message to the unsubscribe address", []
    sender = parseaddr(_text(msg.get("From")))[1]
    try:
        addresses: tuple[str, ...] = (check_email(sender).lower(),)
    except ValueError:
        if not signed:
            return None, f"a mail to the unsubscribe address from no valid address ({sender!r})", []
        addresses = ()  # the token may still say whose it is
    # The token is a credential (it unsubscribes its reader): never kept in the ledger.
    subject = _short(" ".join(_TOKEN.sub("", _text(msg.get("Subject"))[:2000]).split()))
    return (
        Feedback.UNSUBSCRIBE,
        "mail to the unsubscribe address",
        [Failure(addresses, Feedback.UNSUBSCRIBE, "", subject)],
    )


def _tokens(msg: Message, parts: list[Message]) -> tuple[str, ...]:
    """What may be signed unsubscribe tokens: in the Subject (the mailto: address puts it
    there), else in the first text part (a client that moved it to the body)."""
    texts = [_text(msg.get("Subject"))[:2000]]
    for part in parts:
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                texts.append(data[:4096].decode("utf-8", "replace"))
            break
    found = [t for text in texts for t in _TOKEN.findall(text)]
    return tuple(dict.fromkeys(found))[:MAX_TOKENS]


def _flufl(msg: Message) -> _Found:
    temporary, permanent = all_failures(msg)
    failures = [
        Failure((a,), Feedback.HARD, "", "flufl.bounce: permanent failure")
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
