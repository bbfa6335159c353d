"""Our Message-ID, <SLUG.DIGEST@DOMAIN>: made for each copy, and read back from what returns.

DIGEST is 32 hex characters of HMAC-SHA256(signing_secret, slug + "\\0" + address), the
address lower case as it went on the wire. The same issue and reader always get the same id
(a copy re-sent after a crash collapses into the first at the receiver), and only we can
make one: a Message-ID of ours in a bounce or a complaint names one copy, so one reader.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

DIGEST_CHARS = 32
_OURS = re.compile(r"^<?([^<>@\s]+)\.([0-9a-f]{32})@([^<>@\s]+?)>?$")


def digest(secret: str, slug: str, address: str) -> str:
    """The DIGEST in our Message-ID of one reader's copy of one issue."""
    data = f"{slug}\0{address.lower()}".encode()
    return hmac.new(secret.encode(), data, "sha256").hexdigest()[:DIGEST_CHARS]


def make(secret: str, slug: str, address: str, domain: str) -> str:
    """The Message-ID of one reader's copy of one issue, angle brackets included."""
    return f"<{slug}.{digest(secret, slug, address)}@{domain}>"


@dataclass(frozen=True)
class OurId:
    """A Message-ID in our form: which issue, and the digest that names its reader."""

    slug: str
    digest: str

    def names(self, secret: str, address: str) -> bool:
        """Whether this id is the one we made for `address`'s copy of this issue."""
        return hmac.compare_digest(digest(secret, self.slug, address), self.digest)


def read(message_id: str, domain: str = "") -> OurId | None:
    """The issue and digest of a Message-ID in our form (on `domain`, when given), else None."""
    match = _OURS.match(message_id.strip())
    if match is None or (domain and match.group(3).lower() != domain.lower()):
        return None
    return OurId(match.group(1), match.group(2))
