"""How each service's export maps onto the store's readers, and how a header says which it is.

    mailchimp   audience export: subscribed_/unsubscribed_/cleaned_members_export_*.csv
                (Email Address, First Name, Last Name, OPTIN_TIME, CONFIRM_TIME, TAGS, ...)
    substack    email_list.<publication>.csv (email, active_subscription, expiry, plan,
                email_disabled, created_at, first_payment_at)
    listmonk    its export (uuid, email, name, attributes, status, created_at, updated_at)
                and its import format (email, name, attributes)
    buttondown  its subscriber export (email, creation_date, subscriber_type, tags, metadata)
    csv         any CSV with an email column, this tool's own `subscribers list --csv` too

The layouts, and where each was taken from, are in tests/fixtures/PROVENANCE.md.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mailer.state.imports.sources import Table
from mailer.state.reader_rows import RESERVED_FIELDS, Wanted, field_name, tag_name
from mailer.state.store import to_text
from mailer.state.subscribers import check_email, clean
from mailer.states import SubscriberStatus

MAX_ADDRESS_CHARS = 1_000  # far past any valid address: refused before email-validator
CONFIRMED, PENDING = SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING
UNSUBSCRIBED, BOUNCED = SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED
COMPLAINED = SubscriberStatus.COMPLAINED
EMAIL_COLUMNS = ("email", "email address", "email_address", "e-mail", "mail")
# Go's time.String(), as listmonk writes times: "2024-01-15 10:00:00.123456 +0000 UTC".
_GO_TIME = re.compile(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d\d)(\d\d)(?: \S+)?")
# A time in UTC as most exports write it: "2023-04-21 11:16:57", "2024-01-15T10:00:00.000Z".
_UTC_TIME = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(?:Z|[+-]00:?00)?")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})


class Refused(NamedTuple):
    """A row that does not come in: invalid (a bad address, a bad value) or skipped."""

    invalid: bool
    email: str  # as written, for messages
    reason: str


Result = Wanted | Refused
Mapper = Callable[[list[str], int], Result]


class Header:
    """Where the columns are, found by name whatever their case."""

    def __init__(self, cells: list[str]) -> None:
        self.names = [cell.strip() for cell in cells]
        self.width = len(cells)
        self.index: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self.index.setdefault(name.lower(), i)

    @property
    def lower(self) -> frozenset[str]:
        return frozenset(self.index)

    def find(self, *names: str) -> int | None:
        """The first of these columns the header has."""
        return next((self.index[n] for n in names if n in self.index), None)


def when(text: str) -> str | None:
    """A time as an export writes it -> stored text (UTC; a time without a zone is UTC)."""
    text = text.strip()
    if not text:
        return None
    utc = _UTC_TIME.fullmatch(text)
    if utc:  # the common case, without time zone arithmetic: checked, then written out
        day, clock, fraction = utc.groups()
        try:
            datetime.fromisoformat(f"{day}T{clock}")
        except ValueError:
            raise ValueError(f"not a date and time: {text[:40]!r}") from None
        return f"{day}T{clock}.{(fraction or '')[:6]:0<6}+00:00"
    go = _GO_TIME.fullmatch(text)
    if go:
        day, clock, fraction, hours, minutes = go.groups()
        text = f"{day}T{clock}.{(fraction or '0')[:6]:0<6}{hours}:{minutes}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date and time: {text[:40]!r}") from None
    return to_text(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def tags_in(text: str) -> list[str]:
    """Tags as exports write them: `a, b`, `"a","b"` (Mailchimp) or `["a", "b"]` (JSON)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, list):
            return [tag_name(str(t)) for t in loaded if str(t).strip()]
    cells = next(csv.reader([text], skipinitialspace=True))
    return [tag_name(t.strip().strip('"')) for t in cells if t.strip().strip('"')]


def json_fields(text: str) -> dict[str, str]:
    """A JSON object of attributes or metadata as merge fields (nested values as JSON)."""
    if not text.strip():
        return {}
    try:
        loaded = json.loads(text)
    except ValueError:
        raise ValueError(f"not a JSON object: {text[:40]!r}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"not a JSON object: {text[:40]!r}")
    out = {}
    for key, value in loaded.items():
        name = field_name(str(key))
        if name and name not in RESERVED_FIELDS and value is not None:
            out[name] = clean(value if isinstance(value, str) else json.dumps(value))
    return out


class Row:
    """The common part of every format: the width, the address, the values."""

    def __init__(self, header: Header, table: Table, source: str, email: int) -> None:
        self.header, self.table, self.source, self.email = header, table, source, email
        # The field columns with their names, worked out once (not once a row).
        self._fields: list[tuple[int, str]] | None = None
        self._skip: Collection[int | None] = ()

    def address(self, cells: list[str]) -> str | Refused:
        """The normalised address of this row, or why it is refused."""
        raw = cells[self.email].strip() if self.email < len(cells) else ""
        if len(cells) != self.header.width:
            return Refused(True, raw, f"expected {self.header.width} columns, found {len(cells)}")
        if not raw:
            return Refused(True, raw, "missing address")
        try:
            if len(raw) > MAX_ADDRESS_CHARS:
                raise ValueError(f"The email address is too long ({len(raw):,} characters).")
            return check_email(raw)
        except ValueError as exc:
            return Refused(True, raw, f"invalid address: {exc}")

    def cell(self, cells: list[str], index: int | None) -> str:
        return clean(cells[index]) if index is not None else ""

    def fields(self, cells: list[str], skip: Collection[int | None]) -> dict[str, str]:
        """Every other column as a merge field, by its name as templates use it."""
        if self._fields is None or self._skip != skip:
            self._skip = skip
            self._fields = []
            for i, name in enumerate(self.header.names):
                key = field_name(name)
                if i not in skip and key and key not in RESERVED_FIELDS:
                    self._fields.append((i, key))
        out: dict[str, str] = {}
        for i, key in self._fields:
            if cells[i] and not cells[i].isspace():
                out.setdefault(key, clean(cells[i]))
        return out


def _guarded(row: Row, make: Callable[[list[str], int], Result]) -> Mapper:
    """A mapper whose ValueError (a bad date, bad JSON, a bad tag) refuses the row."""

    def mapper(cells: list[str], line: int) -> Result:
        try:
            return make(cells, line)
        except ValueError as exc:
            raw = cells[row.email].strip() if row.email < len(cells) else ""
            return Refused(True, raw, str(exc))

    return mapper


# -- the formats ----------------------------------------------------------------------------


def generic(header: Header, table: Table, source: str) -> Mapper:
    """Any CSV with an email column; name (or first and last name), status, tags, created,
    confirmed and fields (a JSON object) are understood, other columns become fields."""
    row = Row(header, table, source, header.find(*EMAIL_COLUMNS) or 0)
    name = header.find("name", "full name", "full_name")
    first = header.find("first name", "first_name", "firstname")
    last = header.find("last name", "last_name", "lastname")
    status = header.find("status")
    tags = header.find("tags")
    created = header.find("created", "created_at", "signed_up_at")
    confirmed = header.find("confirmed", "confirmed_at")
    extra = header.find("fields")
    used = {row.email, name, status, tags, created, confirmed, extra}

    def make(cells: list[str], line: int) -> Result:
        email = row.address(cells)
        if isinstance(email, Refused):
            return email
        said = row.cell(cells, status).lower()
        state = _GENERIC_STATUS.get(said)
        if state is None:
            return Refused(True, email, f"unknown status {said!r}")
        full = row.cell(cells, name) or " ".join(
            filter(None, (row.cell(cells, first), row.cell(cells, last)))
        )
        fields = row.fields(cells, used)
        if extra is not None:
            fields.update(json_fields(cells[extra]))
        return Wanted(
            email,
            state,
            source,
            full,
            fields,
            tuple(tags_in(cells[tags])) if tags is not None else (),
            when(cells[created]) if created is not None else None,
            when(cells[confirmed]) if confirmed is not None else None,
            line=line,
        )

    return _guarded(row, make)


_GENERIC_STATUS = {
    "": CONFIRMED,
    "confirmed": CONFIRMED,
    "subscribed": CONFIRMED,
    "active": CONFIRMED,
    "enabled": CONFIRMED,
    "pending": PENDING,
    "unconfirmed": PENDING,
    "unsubscribed": UNSUBSCRIBED,
    "bounced": BOUNCED,
    "cleaned": BOUNCED,
    "complained": COMPLAINED,
}


def mailchimp(header: Header, table: Table, source: str) -> Mapper:
    """Mailchimp's audience export; the status comes from the file name (or its columns)."""
    row = Row(header, table, source, header.find("email address") or 0)
    first, last = header.find("first name"), header.find("last name")
    optin, confirm = header.find("optin_time"), header.find("confirm_time")
    tags = header.find("tags")
    kind = table.name.lower()
    state = CONFIRMED
    if kind.startswith("unsubscribed") or "unsub_time" in header.lower:
        state = UNSUBSCRIBED
    elif kind.startswith("cleaned") or "clean_time" in header.lower:
        state = BOUNCED
    # Mailchimp's own columns are in capitals (MEMBER_RATING, LEID, ...); the audience's
    # merge fields are named as the author named them (Company, ZIP Code).
    own = {i for i, n in enumerate(header.names) if n.upper() == n}
    used = {row.email, *own}

    def make(cells: list[str], line: int) -> Result:
        email = row.address(cells)
        if isinstance(email, Refused):
            return email
        names = [row.cell(cells, first), row.cell(cells, last)]
        return Wanted(
            email,
            state,
            source,
            " ".join(filter(None, names)),
            row.fields(cells, used),
            tuple(tags_in(cells[tags])) if tags is not None else (),
            when(cells[optin]) if optin is not None else None,
            when(cells[confirm]) if confirm is not None else None,
            line=line,
        )

    return _guarded(row, make)


def substack(header: Header, table: Table, source: str) -> Mapper:
    """Substack's email_list: paid readers tagged `paid`; email_disabled is unsubscribed."""
    row = Row(header, table, source, header.find("email") or 0)
    active = header.find("active_subscription")
    disabled = header.find("email_disabled")
    created = header.find("created_at")
    used = {row.email, active, disabled, created}

    def make(cells: list[str], line: int) -> Result:
        email = row.address(cells)
        if isinstance(email, Refused):
            return email
        if email.lower().endswith("@deletion-request.substack.com"):
            return Refused(False, email, "a deletion request at Substack")
        off = row.cell(cells, disabled).lower() in _TRUE
        paid = row.cell(cells, active).lower() in _TRUE
        return Wanted(
            email,
            UNSUBSCRIBED if off else CONFIRMED,
            source,
            fields=row.fields(cells, used),
            tags=("paid",) if paid else (),
            signed_up_at=when(cells[created]) if created is not None else None,
            line=line,
        )

    return _guarded(row, make)


_LISTMONK_STATUS = {"": CONFIRMED, "enabled": CONFIRMED, "blocklisted": UNSUBSCRIBED}


def listmonk(header: Header, table: Table, source: str) -> Mapper:
    """listmonk's export or import CSV; attributes (JSON) become fields."""
    row = Row(header, table, source, header.find("email") or 0)
    name, attributes = header.find("name"), header.find("attributes")
    status, created = header.find("status"), header.find("created_at")

    def make(cells: list[str], line: int) -> Result:
        email = row.address(cells)
        if isinstance(email, Refused):
            return email
        said = row.cell(cells, status).lower()
        if said == "disabled":
            return Refused(False, email, "disabled in listmonk")
        state = _LISTMONK_STATUS.get(said)
        if state is None:
            return Refused(True, email, f"unknown status {said!r}")
        return Wanted(
            email,
            state,
            source,
            row.cell(cells, name),
            json_fields(cells[attributes]) if attributes is not None else {},
            signed_up_at=when(cells[created]) if created is not None else None,
            line=line,
        )

    return _guarded(row, make)


# Buttondown's subscriber types: who gets mail, who has left, who is left out.
_BUTTONDOWN = {
    "regular": CONFIRMED,
    "premium": CONFIRMED,
    "trialed": CONFIRMED,
    "gifted": CONFIRMED,
    "churning": CONFIRMED,
    "unpaid": CONFIRMED,
    "unactivated": PENDING,
    "unsubscribed": UNSUBSCRIBED,
    "undeliverable": BOUNCED,
    "complained": COMPLAINED,
}
_BUTTONDOWN_LEFT_OUT = frozenset({"removed", "paused", "spammy", "blocked"})
_BUTTONDOWN_PAID = frozenset({"premium", "trialed", "gifted", "churning"})


def buttondown(header: Header, table: Table, source: str) -> Mapper:
    """Buttondown's subscriber export; metadata (JSON) becomes fields, premium is `paid`."""
    row = Row(header, table, source, header.find("email", "email_address") or 0)
    kind = header.find("subscriber_type", "type")
    created, tags = header.find("creation_date"), header.find("tags")
    metadata = header.find("metadata")

    def make(cells: list[str], line: int) -> Result:
        email = row.address(cells)
        if isinstance(email, Refused):
            return email
        said = row.cell(cells, kind).lower() or "regular"
        if said in _BUTTONDOWN_LEFT_OUT:
            return Refused(False, email, f"{said} in Buttondown")
        state = _BUTTONDOWN.get(said)
        if state is None:
            return Refused(True, email, f"unknown subscriber_type {said!r}")
        found = tags_in(cells[tags]) if tags is not None else []
        return Wanted(
            email,
            state,
            source,
            fields=json_fields(cells[metadata]) if metadata is not None else {},
            tags=tuple(found + (["paid"] if said in _BUTTONDOWN_PAID else [])),
            signed_up_at=when(cells[created]) if created is not None else None,
            line=line,
        )

    return _guarded(row, make)


@dataclass(frozen=True)
class Format:
    """One export format: how to recognise its header, and how to map its rows."""

    name: str
    detect: Callable[[frozenset[str], str], bool]  # (lower-cased header, file name)
    mapper: Callable[[Header, Table, str], Mapper]


def _has(header: frozenset[str], *names: str) -> bool:
    return all(n in header for n in names)


FORMATS: Mapping[str, Format] = {
    f.name: f
    for f in (
        Format(
            "mailchimp",
            lambda h, name: (
                "email address" in h
                and (bool(h & {"optin_time", "confirm_time", "member_rating", "leid", "euid"}))
            ),
            mailchimp,
        ),
        Format(
            "substack",
            lambda h, name: _has(h, "email", "active_subscription", "email_disabled"),
            substack,
        ),
        Format("listmonk", lambda h, name: _has(h, "email", "name", "attributes"), listmonk),
        Format(
            "buttondown",
            lambda h, name: (
                bool(h & {"email", "email_address"})
                and bool(h & {"subscriber_type", "creation_date"})
            ),
            buttondown,
        ),
        Format("csv", lambda h, name: bool(h & set(EMAIL_COLUMNS)), generic),
    )
}


def detect(header: Header, table: Table) -> Format | None:
    """The format whose header this is (the most specific first), or None."""
    name = table.name.lower()
    return next((f for f in FORMATS.values() if f.detect(header.lower, name)), None)


def describe(value: Any) -> str:
    """A header as messages quote it."""
    return ", ".join(repr(str(c).strip()) for c in value)
