"""The envelope sender (MAIL FROM, the Return-Path a receiver records) of each copy.

Without `bounce_address` it is the From address, as it always was. With it (e.g.
bounces@example.org, MAILER_BOUNCE_ADDRESS) bounces go there instead of the editors' inbox,
and with `verp` (the default once bounce_address is set) every copy gets its own:
bounces+TOKEN@example.org (Variable Envelope Return Path), so a bounce names the copy it is
about even when the DSN says nothing usable about the original recipient.

The token. RFC 5321 limits a local part to 64 octets, and an address may be longer than
that on its own, so the token does not carry the reader: it is 24 base32 characters
(15 bytes, lower case, no padding) made of
    3 bytes   HMAC-SHA256(signing_secret, "mailer-verp-issue\\0" + issue slug), truncated
    12 bytes  HMAC-SHA256(signing_secret, "mailer-verp\\0" + slug + "\\0" + email), truncated
where email is the address as the ledger keeps it (trimmed, lower case). It is found again
with nothing stored beyond what the ledger already holds: `parse` takes the issues whose tag
matches (one, bar a 1-in-16-million collision, which costs one more look) and compares the
12-byte HMAC with each of that issue's deliveries (an index built once per issue and
process, rebuilt when the issue has new rows). 96 bits of HMAC: a forged or mistyped token
matches no reader. Limits: the bounce address's local part may be at most 39 characters
(39 + "+" + 24 = 64); a copy that was never recorded in the ledger (a test copy) cannot be
traced back; a token made with another MAILER_SECRET matches nothing. The separator is "+",
the usual recipient_delimiter (Postfix, Exim, Gmail, Fastmail): the mailbox behind
bounces@ must accept bounces+anything@.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import threading
from collections.abc import Iterable, Mapping
from email.utils import parseaddr
from typing import TYPE_CHECKING, Protocol

from mailer.config import MAX_VERP_LOCAL, Settings

if TYPE_CHECKING:  # annotations only: the Composer imports this module, and builds need no ledger
    from mailer.state.deliveries import Delivery
    from mailer.states import DeliveryState

SEPARATOR = "+"
TAG_BYTES = 3
MAC_BYTES = 12
TOKEN_CHARS = (TAG_BYTES + MAC_BYTES) * 8 // 5  # 24
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
MAX_BOUNCE_LOCAL = MAX_LOCAL - len(SEPARATOR) - TOKEN_CHARS  # 39: config checks it
assert MAX_BOUNCE_LOCAL == MAX_VERP_LOCAL


def _ascii_domain(domain: str) -> str:
    with contextlib.suppress(UnicodeError):
        return domain.encode("idna").decode("ascii")
    return domain


def _norm(email: str) -> str:
    return email.strip().lower()


def issue_tag(secret: str, slug: str) -> bytes:
    return hmac.new(secret.encode(), b"mailer-verp-issue\0" + slug.encode(), "sha256").digest()[
        :TAG_BYTES
    ]


def reader_mac(secret: str, slug: str, email: str) -> bytes:
    data = f"mailer-verp\0{slug}\0{_norm(email)}".encode()
    return hmac.new(secret.encode(), data, "sha256").digest()[:MAC_BYTES]


def token(secret: str, slug: str, email: str) -> str:
    """The 24 characters that follow bounces+ for one reader's copy of one issue."""
    raw = issue_tag(secret, slug) + reader_mac(secret, slug, email)
    return base64.b32encode(raw).decode("ascii").lower()


def _decode(text: str) -> bytes | None:
    if len(text) != TOKEN_CHARS:
        return None
    try:
        return base64.b32decode(text.upper())
    except (binascii.Error, ValueError):
        return None


class Envelope:
    """The envelope sender of each copy of one issue."""

    def __init__(self, settings: Settings, slug: str, from_address: str) -> None:
        self.slug = slug
        self.secret = settings.signing_secret
        bounce = settings.bounce_address
        local, _, domain = (bounce or from_address).rpartition("@")
        self.fixed = f"{local}@{_ascii_domain(domain)}"
        self.verp = bool(bounce and settings.verp)
        self._prefix = f"{local}{SEPARATOR}"
        self._suffix = f"@{_ascii_domain(domain)}"
        self._tag = issue_tag(self.secret, slug)
        self._mac = hmac.new(self.secret.encode(), f"mailer-verp\0{slug}\0".encode(), "sha256")

    def sender(self, email: str) -> str:
        """MAIL FROM for the copy sent to `email`."""
        if not self.verp:
            return self.fixed
        mac = self._mac.copy()
        mac.update(_norm(email).encode())
        raw = self._tag + mac.digest()[:MAC_BYTES]
        return self._prefix + base64.b32encode(raw).decode("ascii").lower() + self._suffix


def address(settings: Settings, slug: str, email: str) -> str:
    """The VERP envelope sender of one copy (bounce_address must be set)."""
    if not settings.bounce_address:
        raise ValueError("no bounce_address: there is no VERP address")
    local, _, domain = settings.bounce_address.rpartition("@")
    token_text = token(settings.signing_secret, slug, email)
    return f"{local}{SEPARATOR}{token_text}@{_ascii_domain(domain)}"


# -- back from a bounce -------------------------------------------------------------------

_lock = threading.Lock()
# (where the ledger is, secret digest, slug) -> (rows when built, {reader mac: email})
_indexes: dict[tuple[str, str, str], tuple[int, dict[bytes, str]]] = {}


class Readers(Protocol):
    """The ledger as a VERP token is traced back: its issues, and each one's readers."""

    @property
    def where(self) -> str: ...
    def issues(self) -> list[str]: ...
    def counts(self, issue: str) -> Mapping[DeliveryState, int]: ...
    def deliveries(self, issue: str) -> Iterable[Delivery]: ...


def _index(ledger: Readers, secret: str, slug: str) -> dict[bytes, str]:
    rows = sum(ledger.counts(slug).values())
    key = (ledger.where, hashlib.sha256(secret.encode()).hexdigest(), slug)
    with _lock:
        cached = _indexes.get(key)
    if cached is not None and cached[0] == rows:
        return cached[1]
    index = {reader_mac(secret, slug, d.email): d.email for d in ledger.deliveries(slug)}
    with _lock:
        if len(_indexes) > 64:
            _indexes.clear()
        _indexes[key] = (rows, index)
    return index


def parse(address: str, settings: Settings, ledger: Readers) -> tuple[str, str] | None:
    """(issue slug, reader's email) of a VERP address we made, else None.

    `address` may be bare or as a header has it (`<bounces+...@example.org>`). It is ours
    when it is bounce_address with a token after the separator, the token matches an
    issue in the ledger and one of that issue's deliveries. Case is ignored (some servers
    lower-case local parts; the token is lower case anyway).
    """
    if not settings.bounce_address:
        return None
    found = parseaddr(address)[1] or address.strip().strip("<>")
    local, _, domain = found.rpartition("@")
    bounce_local, _, bounce_domain = settings.bounce_address.rpartition("@")
    domains = {bounce_domain.lower(), _ascii_domain(bounce_domain).lower()}
    prefix = (bounce_local + SEPARATOR).lower()
    if domain.lower() not in domains or not local.lower().startswith(prefix):
        return None
    raw = _decode(local[len(prefix) :])
    if raw is None:
        return None
    tag, mac = raw[:TAG_BYTES], raw[TAG_BYTES:]
    secret = settings.signing_secret
    for slug in ledger.issues():
        if hmac.compare_digest(issue_tag(secret, slug), tag):
            email = _index(ledger, secret, slug).get(mac)
            if email is not None:
                return slug, email
    return None
