"""A classified message -> the ledger events it stands for: whose copy, which issue.

A reader is found from the VERP address first (verp.parse), then the DSN's
Original-Recipient / Final-Recipient (or the ARF's Original-Rcpt-To, the reported message's
To), then our Message-ID's digest among that issue's deliveries (a redacted ARF). Someone who
never had a copy is nobody's bounce: counted as not understood. The issue is the VERP token's,
else the returned message's Message-ID (deliver/msgid.py).
"""

from __future__ import annotations

from email.utils import parseaddr

from mailer.config import Settings
from mailer.deliver import msgid, verp
from mailer.deliver.message import wire_address
from mailer.feedback.classify import Classified, Failure
from mailer.state.ledger import FeedbackEvent, Ledger
from mailer.states import Feedback


def _names(our: msgid.OurId, secret: str, address: str) -> bool:
    """Whether our Message-ID is the one of `address`'s copy (as kept, or as it went out)."""
    return any(our.names(secret, a) for a in dict.fromkeys((address, wire_address(address))))


def _verp_parse(address: str, settings: Settings, ledger: Ledger) -> tuple[str, str] | None:
    """(issue slug, reader) from a VERP address, else None (a domain IDNA refuses too)."""
    try:
        return verp.parse(address, settings, ledger)
    except ValueError:
        return None


def our_ids(ids: tuple[str, ...], settings: Settings) -> list[msgid.OurId]:
    """Each of our Message-IDs among ids (on the From address's domain)."""
    sender = parseaddr(settings.from_)[1]
    domain = sender.rsplit("@", 1)[1] if "@" in sender else ""
    return [our for i in ids if (our := msgid.read(i, domain)) is not None]


def resolve(
    found: Classified, ledger: Ledger, settings: Settings
) -> tuple[list[FeedbackEvent], list[str]]:
    """The ledger events a classified message stands for, and the addresses it could not
    tie to one of our readers."""
    secret = settings.signing_secret
    ours = our_ids(found.quoted_ids, settings)
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
    failure: Failure, ours: list[msgid.OurId], ledger: Ledger, secret: str
) -> tuple[str | None, str, bool]:
    """(reader, issue, proven by our Message-ID's digest) for one Failure."""
    for our in ours:
        for address in failure.addresses:
            if _names(our, secret, address):
                return address, our.slug, True
    if failure.kind is Feedback.UNSUBSCRIBE:  # anyone may ask not to be mailed
        address = failure.addresses[0]
        issue = next((o.slug for o in ours if ledger.delivery(o.slug, address)), "")
        return address, issue, False
    for address in failure.addresses:
        if ledger.is_reader(address):
            issue = next((o.slug for o in ours if ledger.delivery(o.slug, address)), "")
            return address, issue, False
    for our in ours:  # a redacted report: find the reader the digest names
        for delivery in ledger.deliveries(our.slug):
            if _names(our, secret, delivery.email):
                return delivery.email, our.slug, True
    return None, "", False
