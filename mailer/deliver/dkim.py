"""DKIM signatures (RFC 6376): rsa-sha256, and ed25519-sha256 (RFC 8463) beside it.

The keys, where they come from and how they are checked: dkim_keys.py.

Signing. Composer.compose signs each reader's final bytes, after every per-reader fill:
one DKIM-Signature header per key, prepended, relaxed/relaxed, over From (twice: the second,
empty instance means a From added later breaks the signature), Reply-To, To, Subject, Date,
Message-ID, MIME-Version, Content-Type, List-Id, List-Unsubscribe and List-Unsubscribe-Post
-- those present. (dkimpy's own default list lacks List-Unsubscribe-Post, which RFC 8058
requires to be signed.) Message-ID and every other byte of the message stay as they were.

Cost. dkimpy's `DKIM.sign` re-parses the key, splits the whole message with regular
expressions and canonicalises the 60 KB body with more (about 9 ms a message here, before
any RSA). The body is mostly the issue's constant pieces: relaxed body canonicalisation
works line by line, and mailer's per-reader values always sit between quoted-printable soft
breaks (`=` CRLF), so no whitespace run or line end spans a value's edge. The Composer
canonicalises its constant pieces once and only each reader's few values per message
(`relaxed_fragment`); the header hash uses dkimpy's canonicalisation, and the keys are
parsed once. What remains per message is one SHA-256 pass over the body and the signature
itself: RSA-2048 through OpenSSL (cryptography) ~1 ms of CPU here, where dkimpy's
pure-Python RSA takes ~6 (`bench/dkim_bench.py` measures both), Ed25519 ~0.05 ms.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.deliver.dkim_keys import Key, load_keys

# dkimpy is imported where a message is signed: `import dkim` loads dnspython's resolver
# (~30 ms), and `mailer build` (whose Composer uses relaxed_body) signs nothing.
if TYPE_CHECKING:
    from dkim.canonicalization import CanonicalizationPolicy

# The header fields signed, in this order, when the message has them; From once more at the
# end: a second From added on the way then breaks the signature (oversigning).
SIGNED = (
    b"from",
    b"reply-to",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
OVERSIGNED = (b"from",)
# Amazon SES rewrites these two on every message it sends (its "manual DKIM signing" guide
# says not to sign them): with transport = ses they are left out of h=.
REWRITTEN_BY_SES = frozenset({b"date", b"message-id"})

CRLF = b"\r\n"
# dkimpy's relaxed body rules (dkim.canonicalization.Relaxed), also applied to a fragment in
# the middle of a body: no trailing blank lines are removed there (they are not trailing).
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"[\t ]+")


def load(settings: Settings) -> Signer | None:
    """A Signer for the configured keys, or None when DKIM is not configured."""
    keys = load_keys(settings)
    unsigned = REWRITTEN_BY_SES if settings.transport == "ses" else frozenset()
    return Signer(keys, unsigned=unsigned) if keys else None


def relaxed_fragment(data: bytes) -> bytes:
    """Relaxed body canonicalisation of a piece whose edges touch no whitespace or line end
    of its neighbours (the pieces of a body between soft line breaks)."""
    if b"\t" not in data and b"  " not in data and b" \r\n" not in data:
        return data
    return _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", data))


def relaxed_body(body: bytes) -> bytes:
    """Relaxed canonicalisation of a whole body: dkimpy's, byte for byte (its
    Relaxed.canonicalize_body, without importing dkimpy). Trailing empty lines go, CRLF
    pairs only, and a body left empty stays empty."""
    body = _WSP.sub(b" ", _TRAILING_WSP.sub(CRLF, body))
    end = len(body)
    while body.endswith(CRLF, 0, end):
        end -= 2
    return body[:end] + CRLF if end else b""


@cache
def _relaxed() -> CanonicalizationPolicy:
    """dkimpy's relaxed/relaxed policy (its header canonicalisation signs)."""
    from dkim.canonicalization import CanonicalizationPolicy

    return CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


def body_hash(body: bytes) -> bytes:
    """bh=: base64 of the SHA-256 of the relaxed body."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())


def split_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """A header block (CRLF lines) as (name, value) pairs, the value as on the wire: from
    after the colon to its CRLF, folded lines included (dkimpy's rfc822_parse does the same)."""
    headers: list[list[bytes]] = []
    for line in head.split(CRLF):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += line + CRLF
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"not a header line: {line[:40]!r}")
        headers.append([name, value + CRLF])
    return [(name, value) for name, value in headers]


def _fold(tags: Sequence[tuple[bytes, bytes]], signature: bytes = b"") -> bytes:
    """The DKIM-Signature value: tags folded at "; " under 78 columns, b= last on its own
    line(s), broken every 72 characters (FWS is allowed inside b=)."""
    lines: list[bytes] = []
    line = b"DKIM-Signature:"
    for name, value in tags:
        # h= may be folded after any colon; the other tags here are short or base64 (bh=).
        words = [w + b":" for w in value.split(b":")] if name == b"h" else [value]
        words[-1] = (words[-1][:-1] if name == b"h" else words[-1]) + b";"
        words[0] = name + b"=" + words[0]
        for i, word in enumerate(words):
            piece = word if i else b" " + word
            if len(line) + len(piece) > 76 and line.strip():
                lines.append(line)
                line, piece = b"", b" " + word
            line += piece
    lines.append(line)
    b = b"b=" + signature
    lines += [b" " + b[i : i + 72] for i in range(0, max(len(b), 1), 72)]
    return CRLF.join(lines)[len(b"DKIM-Signature:") :]


def _select(
    headers: list[tuple[bytes, bytes]], names: Sequence[bytes]
) -> list[tuple[bytes, bytes]]:
    """The instances each name in h= stands for, from the bottom up (RFC 6376 5.4.2)."""
    out = []
    last: dict[bytes, int] = {}
    for name in names:
        i = last.get(name, len(headers))
        while i > 0:
            i -= 1
            if headers[i][0] == name:
                out.append(headers[i])
                break
        last[name] = i
    return out


class Signer:
    """Signs messages with one or two keys (rsa, ed25519), the keys parsed once."""

    def __init__(self, keys: Sequence[Key], *, unsigned: frozenset[bytes] = frozenset()) -> None:
        if not keys:
            raise ValueError("a Signer needs a key")
        self.keys = tuple(keys)
        self.unsigned = unsigned  # fields the transport changes on the way (SES)

    def header_names(self, canonical: list[tuple[bytes, bytes]]) -> list[bytes]:
        """h=: the SIGNED fields this message has, then the OVERSIGNED ones again."""
        present = {name for name, _ in canonical} - self.unsigned
        return [n for n in SIGNED if n in present] + list(OVERSIGNED)

    def signatures(self, head: bytes, bh: bytes, timestamp: int | None = None) -> bytes:
        """The DKIM-Signature header lines (CRLF-terminated) to put on top of a message whose
        header block is `head` and whose body hashes to `bh` (see body_hash)."""
        canonical = [
            (bytes(n), bytes(v)) for n, v in _relaxed().canonicalize_headers(split_headers(head))
        ]
        names = self.header_names(canonical)
        signed = b"".join(name + b":" + value for name, value in _select(canonical, names))
        when = str(int(time.time()) if timestamp is None else timestamp).encode()
        out = []
        for key in self.keys:
            tags = [
                (b"v", b"1"),
                (b"a", key.signature_algorithm),
                (b"c", b"relaxed/relaxed"),
                (b"d", key.domain.encode("ascii")),
                (b"s", key.selector.encode("ascii")),
                (b"t", when),
                (b"h", b":".join(names)),
                (b"bh", bh),
            ]
            unsigned = _fold(tags)
            ((_, value),) = _relaxed().canonicalize_headers([(b"DKIM-Signature", unsigned)])
            digest = hashlib.sha256(signed + b"dkim-signature:" + bytes(value).rstrip(CRLF))
            signature = base64.b64encode(key.sign(digest.digest()))
            out.append(b"DKIM-Signature:" + _fold(tags, signature) + CRLF)
        return b"".join(out)

    def sign(self, message: bytes, timestamp: int | None = None) -> bytes:
        """A whole message (CRLF lines) with its signatures on top: the slow, general way
        (the Composer hashes its body in pieces instead)."""
        head, sep, body = message.partition(CRLF + CRLF)
        if not sep:
            raise ValueError("a message needs a blank line after its header")
        return self.signatures(head + CRLF, body_hash(body), timestamp) + message
