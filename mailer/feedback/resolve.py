"""A classified message -> the one ledger event it stands for, or why it counts for nobody.

What comes back is untrusted: anyone can write a DSN listing every address on the list, or
an ARF report, or mail the unsubscribe address. So a report counts only for a reader it ties
to one of our copies, and each copy had one recipient, so one report moves at most one reader:

  * bounces and complaints: the VERP token of the address it came back to (verp.parse), else
    our Message-ID among the ones it returns or quotes (msgid: only we can make one). The
    reader is the address that Message-ID was made for: one the report names, else (a
    redacted complaint) the one among that issue's deliveries;
  * mailed unsubscribes: a signed unsubscribe token (the one in the copy's List-Unsubscribe
    mailto: subject, deliver/tokens.py) names its reader whoever sends it; without one, the
    From address unsubscribes itself only if it is one of ours (had a copy, or is on the
    subscriber list).

Anything else is not understood: counted, and left in the mailbox for a person to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr

from mailer.config import STORE, Settings
from mailer.deliver import msgid, tokens, verp
from mailer.deliver.message import wire_address
from mailer.errors import MailerError
from mailer.feedback.classify import Classified, Failure
from mailer.state.ledger import FeedbackEvent, Ledger
from mailer.state.subscribers import SubscriberList
from mailer.states import Feedback

SHOWN = 3  # addresses a "not understood" line names before it only counts them


@dataclass(frozen=True)
class Resolved:
    """The event a message stands for (None: nobody's), and why not, for -v."""

    event: FeedbackEvent | None
    why_not: str = ""


class Readers:
    """Whether an address is one of ours: it had a copy (the ledger) or is on the subscriber
    list (the store's, or a CSV read once, when first asked; a missing or broken CSV counts
    as empty)."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        self.store = settings.subscribers == STORE  # the list is the ledger's own table
        self.path = settings.root / settings.subscribers
        self._listed: frozenset[str] | None = None

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        if self.ledger.is_reader(address):
            return True
        if self.store:
            return self.ledger.reader(address) is not None
        if self._listed is None:
            try:
                self._listed = frozenset(s.email.lower() for s in SubscriberList(self.path))
            except (MailerError, OSError, ValueError):
                self._listed = frozenset()
        return address.lower() in self._listed


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


def _who(failures: tuple[Failure, ...]) -> str:
    addresses = list(dict.fromkeys(a for f in failures for a in f.addresses[:1]))
    if not addresses:
        return "no address"
    if len(addresses) <= SHOWN:
        return ", ".join(addresses)
    return f"{len(addresses)} addresses ({', '.join(addresses[:SHOWN])}, ...)"


def resolve(
    found: Classified, ledger: Ledger, settings: Settings, readers: Readers | None = None
) -> Resolved:
    """The one event a classified message proves, or why it proves none."""
    if found.kind is Feedback.UNSUBSCRIBE:
        return _unsubscribe(found, ledger, settings, readers)
    failures = found.failures
    hit = next(
        (hit for a in found.verp if (hit := _verp_parse(a, settings, ledger)) is not None), None
    )
    if hit is not None:  # the token names the copy; the report only adds how it failed
        slug, reader = hit
        failure = next((f for f in failures if reader.lower() in f.addresses), failures[0])
        return Resolved(_event(reader, slug, failure))
    secret = settings.signing_secret
    ours = our_ids(found.quoted_ids, settings)
    for our in ours:
        for failure in failures:
            for address in failure.addresses:
                if _names(our, secret, address):
                    return Resolved(_event(address, our.slug, failure))
        # Not one of the addresses named (a redacted report, a forwarding address that
        # failed): the reader of the copy the Message-ID was made for.
        for delivery in ledger.deliveries(our.slug):
            if _names(our, secret, delivery.email):
                return Resolved(_event(delivery.email, our.slug, failures[0]))
    about = f"{found.why} about {_who(failures)}"
    if ours:
        return Resolved(None, f"{about}: its Message-ID looks like ours but is no copy we sent")
    return Resolved(None, f"{about}: no VERP address or Message-ID of ours ties it to a copy")


def _event(reader: str, slug: str, failure: Failure) -> FeedbackEvent:
    return FeedbackEvent(reader.lower(), failure.kind, slug, failure.status, failure.detail)


def _unsubscribe(
    found: Classified, ledger: Ledger, settings: Settings, readers: Readers | None
) -> Resolved:
    [failure] = found.failures
    secret = settings.signing_secret
    for token in found.tokens:
        try:
            address = tokens.verify(secret, settings.list_id_effective, token)
        except tokens.BadToken:
            continue
        detail = " ".join(filter(None, (failure.detail, "(signed)")))
        return Resolved(FeedbackEvent(address.lower(), Feedback.UNSUBSCRIBE, "", "", detail))
    sender = failure.addresses[0] if failure.addresses else ""
    known = readers if readers is not None else Readers(ledger, settings)
    if sender and sender in known:
        ours = our_ids(found.quoted_ids, settings)  # a reply to one issue's copy says which
        issue = next((o.slug for o in ours if _names(o, secret, sender)), "")
        event = FeedbackEvent(sender, Feedback.UNSUBSCRIBE, issue, "", failure.detail)
        return Resolved(event)
    token = "an unsubscribe token we did not sign" if found.tokens else "no unsubscribe token"
    return Resolved(
        None, f"{found.why} from {sender or 'no valid address'}: not one of our readers, {token}"
    )
