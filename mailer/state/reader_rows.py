"""One reader of the store's list as stored and as wanted: the records, the rules for tags
and field names, how a wanted reader merges into a stored one, and the keyed hash that
stands for an address once its owner asked to be forgotten."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.state.store import from_text
from mailer.states import Reason, SubscriberStatus

# A forgotten address lives on in the suppressions as this prefix and the hex HMAC-SHA256 of
# the lower-cased address under MAILER_SECRET: never mailed again, never named again.
FORGOTTEN_PREFIX = "hmac-sha256:"
MAX_TAG_CHARS = 64
ACTIVE = (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED)
# Why a reader who left is suppressed, and the other way round.
REASON_OF = {
    SubscriberStatus.UNSUBSCRIBED: Reason.UNSUBSCRIBED,
    SubscriberStatus.BOUNCED: Reason.BOUNCED,
    SubscriberStatus.COMPLAINED: Reason.COMPLAINED,
}
RESERVED_FIELDS = frozenset({"email", "name"})
EMPTY_FIELDS: Mapping[str, str] = types.MappingProxyType({})
# What SELECT reads and INSERT writes, in this order (a Row).
COLUMNS = "email, address, name, fields, tags, status, source, signed_up_at, confirmed_at, form_url"
Row = tuple[str, str, str, str, str, str, str, str, str | None, str]

_FIELD_NAME = re.compile(r"[^a-z0-9]+")


def tag_name(text: str) -> str:
    """A tag as stored: stripped and lower-cased; ValueError when it cannot be one."""
    tag = " ".join(text.split()).lower()
    if not tag:
        raise ValueError("a tag cannot be empty")
    if "," in tag or not tag.isprintable():
        raise ValueError(f"a tag cannot hold a comma or a control character: {tag!r}")
    if len(tag) > MAX_TAG_CHARS:
        raise ValueError(f"a tag has at most {MAX_TAG_CHARS} characters: {tag[:20]!r}…")
    return tag


def field_name(text: str) -> str:
    """A merge field's name as templates use it: `ZIP Code` -> `zip_code`; "" if none."""
    return _FIELD_NAME.sub("_", text.strip().lower()).strip("_")


def tags_text(tags: Iterable[str]) -> str:
    """Tags as stored: sorted, between commas (",a,b,"), so `LIKE '%,a,%'` finds one."""
    unique = sorted(set(tags))
    return f",{','.join(unique)}," if unique else ""


def tags_of(text: str) -> tuple[str, ...]:
    """The stored tags text back as a tuple."""
    return tuple(t for t in text.split(",") if t)


# One encoder for every row: json.dumps with options would build a new one each call.
_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


def fields_text(fields: Mapping[str, str]) -> str:
    """Fields as stored: a JSON object with sorted keys, so equal fields are equal text."""
    if not fields:
        return "{}"
    return _ENCODE(dict(fields))


def fields_of(text: str) -> Mapping[str, str]:
    """The stored fields text back as a read-only mapping."""
    if text == "{}":
        return EMPTY_FIELDS
    loaded: dict[str, str] = json.loads(text)
    return types.MappingProxyType(loaded)


def forget_key(secret: str, email: str) -> str:
    """What stands for `email` in the suppressions once it was forgotten."""
    digest = hmac.new(secret.encode(), email.strip().lower().encode(), hashlib.sha256)
    return FORGOTTEN_PREFIX + digest.hexdigest()


class Forgotten:
    """The addresses erased on request, as keyed hashes: `email in forgotten`."""

    def __init__(self, secret: str, keys: Iterable[str]) -> None:
        self.secret = secret
        self.keys = frozenset(k for k in keys if k.startswith(FORGOTTEN_PREFIX))

    def __contains__(self, email: object) -> bool:
        # No HMAC at all while nobody was forgotten: the common case costs nothing per reader.
        if not self.keys or not isinstance(email, str):
            return False
        return forget_key(self.secret, email) in self.keys

    def __bool__(self) -> bool:
        return bool(self.keys)


@dataclass(frozen=True)
class Consent:
    """How a reader came to be on the list: what a data-protection request is answered with."""

    source: str  # "form", "import:<file name>" or "cli"
    signed_up_at: datetime
    confirmed_at: datetime | None  # None: pending, or the service exported no time
    form_url: str = ""  # the page of the signup form


@dataclass(frozen=True)
class Reader:
    """One reader of the store's list."""

    email: str  # the address as mail is sent to it
    name: str
    fields: Mapping[str, str] = field(hash=False)
    tags: tuple[str, ...]
    status: SubscriberStatus
    consent: Consent


def reader_of(row: Row) -> Reader:
    """Build a Reader from a row in COLUMNS order."""
    _, address, name, fields, tags, status, source, signed, confirmed, form_url = row
    consent = Consent(
        source, from_text(signed), from_text(confirmed) if confirmed else None, form_url
    )
    return Reader(
        address, name, fields_of(fields), tags_of(tags), SubscriberStatus(status), consent
    )


@dataclass(frozen=True)
class Wanted:
    """A reader as an import row, a command or a signup wants them to be.

    `status` is pending or confirmed for a reader to add; unsubscribed, bounced or
    complained for one an export says has left, who is then suppressed.
    """

    email: str  # normalised by check_email
    status: SubscriberStatus
    source: str
    name: str = ""
    fields: Mapping[str, str] = field(default_factory=lambda: EMPTY_FIELDS, hash=False)
    tags: tuple[str, ...] = ()
    signed_up_at: str | None = None  # stored text; None: now
    confirmed_at: str | None = None  # stored text; None: not known (or not confirmed)
    form_url: str = ""
    line: int = 0  # where it was read, for messages

    @property
    def key(self) -> str:
        """The lower-cased address: the key of every table."""
        return self.email.lower()


def merged(old: Row | None, want: Wanted, now: str) -> Row:
    """The row `want` makes of `old` (None: a new reader).

    A new reader takes everything, the consent record included. An existing one keeps its
    consent record (how they first came) and gains the new name, fields and tags; a pending
    reader becomes confirmed; a reader who left stays gone; a reader an export says has
    left takes that status.
    """
    if old is None:
        return (
            want.key,
            want.email,
            want.name,
            fields_text(want.fields),
            tags_text(want.tags),
            want.status.value,
            want.source,
            want.signed_up_at or now,
            want.confirmed_at,
            want.form_url,
        )
    key, address, name, fields, tags, status, source, signed, confirmed, form_url = old
    current = SubscriberStatus(status)
    if current in ACTIVE and want.status not in ACTIVE:
        status = want.status.value
    elif current is SubscriberStatus.PENDING and want.status is SubscriberStatus.CONFIRMED:
        status = want.status.value
        confirmed = want.confirmed_at
    if want.fields:
        old_fields: dict[str, Any] = json.loads(fields)
        fields = fields_text({**old_fields, **want.fields})
    if want.tags:
        tags = tags_text((*tags_of(tags), *want.tags))
    return (
        key,
        address,
        want.name or name,
        fields,
        tags,
        status,
        source,
        signed,
        confirmed,
        form_url,
    )
