"""DKIM signatures (RFC 6376): rsa-sha256, and ed25519-sha256 (RFC 8463) beside it.

Keys. The signing key comes from MAILER_DKIM_KEY_FILE (a path, relative to the project) or
MAILER_DKIM_KEY (the PEM text itself, in .env or the environment; `\\n` escapes are read as
line breaks), never from mailer.toml, and signs under `dkim_selector` (default "mail"). Its
type is read from its content: an RSA key (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY")
signs rsa-sha256, an Ed25519 key (PKCS#8, or dkimpy's bare base64 seed) signs ed25519-sha256
alone. A second key in MAILER_DKIM_ED25519_KEY_FILE / MAILER_DKIM_ED25519_KEY must be Ed25519
and adds an ed25519-sha256 signature under `dkim_ed25519_selector` (default
"<dkim_selector>-ed25519": one selector names one key in DNS). Most receivers verify only
rsa-sha256 (2026): sign with RSA, add Ed25519 beside it. `dkim_domain` (d=) defaults to the
From domain, so DMARC finds the signature aligned. Every key is read, parsed and checked once
(a test signature for RSA) when a send is planned: a bad one is one ConfigError line before
anything goes out. Key text never reaches an error message or `mailer config`.

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
(`relaxed_fragment`); the header hash and the signature use dkimpy's canonicalisation and
key parsing, with the key parsed once. What remains per message is one SHA-256 pass over
the body and the signature itself: RSA-2048 through OpenSSL (cryptography) ~1 ms of CPU
here, where dkimpy's pure-Python RSA takes ~6 (`bench/dkim_bench.py` measures both),
Ed25519 through PyNaCl ~0.05 ms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.config import Settings, env_name
from mailer.errors import ConfigError, MailerError

# PyNaCl, cryptography and dkimpy are imported where a key is read or a message signed:
# `import dkim` loads dnspython's resolver (~30 ms), and `mailer build` (whose Composer uses
# relaxed_body) signs nothing.
if TYPE_CHECKING:
    import nacl.signing
    from cryptography.hazmat.primitives.asymmetric import rsa
    from dkim.canonicalization import CanonicalizationPolicy

RSA = "rsa"
ED25519 = "ed25519"
ALGORITHMS = {RSA: b"rsa-sha256", ED25519: b"ed25519-sha256"}
RSA_BITS = 2048  # what `mailer dkim keygen` makes
MIN_RSA_BITS = 1024  # RFC 8301: verifiers must refuse shorter keys

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
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_ED25519_OID = bytes.fromhex("2b6570")  # 1.3.101.112 (RFC 8410)
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")  # + the 32-byte seed


class BadKey(ValueError):
    """A key that cannot sign; the text says why, never what the key holds."""


@dataclass(frozen=True)
class Key:
    """One parsed private key and where it signs: selector._domainkey.domain."""

    algorithm: str  # RSA or ED25519
    selector: str
    domain: str
    source: str  # "MAILER_DKIM_KEY_FILE: /path/mail.rsa.pem" or "MAILER_DKIM_KEY"
    public: str  # the p= value: base64 SubjectPublicKeyInfo (rsa) or the raw 32 bytes
    bits: int
    private: Any = field(repr=False, compare=False)  # cryptography RSA key / nacl SigningKey

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_value(self) -> str:
        return dns_value(self.algorithm, self.public)

    def sign(self, digest: Any) -> bytes:
        """The signature of a finished SHA-256 hash object."""
        if self.algorithm == RSA:
            return _rsa_sign(self.private, digest)
        signing_key: nacl.signing.SigningKey = self.private
        return bytes(signing_key.sign(digest.digest()).signature)


def dns_value(algorithm: str, public: str) -> str:
    """The TXT record that publishes a public key."""
    return f"v=DKIM1; k={algorithm}; p={public}"


# -- keys ---------------------------------------------------------------------------------


def _der(data: bytes, at: int = 0) -> tuple[int, bytes, int]:
    """(tag, contents, offset after) of the DER element at `at`."""
    if at + 2 > len(data):
        raise BadKey("truncated")
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4 or at + size > len(data):
            raise BadKey("bad length")
        length = int.from_bytes(data[at : at + size], "big")
        at += size
    if at + length > len(data):
        raise BadKey("truncated")
    return tag, data[at : at + length], at + length


def _encode(tag: int, contents: bytes) -> bytes:
    size = len(contents)
    if size < 0x80:
        return bytes([tag, size]) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + contents


def _integer(value: int) -> bytes:
    return _encode(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def rsa_public(modulus: int, exponent: int) -> str:
    """The p= of an RSA key: base64 of its DER SubjectPublicKeyInfo (what openssl prints)."""
    rsa_key = _encode(0x30, _integer(modulus) + _integer(exponent))
    algorithm = _encode(0x30, _encode(0x06, _RSA_OID) + _encode(0x05, b""))
    spki = _encode(0x30, algorithm + _encode(0x03, b"\x00" + rsa_key))
    return base64.b64encode(spki).decode("ascii")


def ed25519_pem(signing_key: nacl.signing.SigningKey) -> bytes:
    """An Ed25519 private key as PKCS#8 PEM (RFC 8410), the form openssl reads and writes."""
    der = _ED25519_PKCS8 + bytes(signing_key)
    lines = base64.encodebytes(der).decode("ascii").strip()
    return f"-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----\n".encode()


def parse_key(data: bytes) -> tuple[str, Any, str, int]:
    """(algorithm, private key, p= value, bits) of a private key; BadKey says what is wrong."""
    text = data.strip()
    match = _PEM.search(text)
    if match is None:
        seed = _base64(text)
        if seed is not None and len(seed) == 32:  # dkimpy's dknewkey writes Ed25519 so
            return _ed25519(seed)
        if b"-----BEGIN" in text:
            raise BadKey("is damaged: its PEM block has no matching END line")
        raise BadKey("is not a private key in PEM form (-----BEGIN PRIVATE KEY-----)")
    label = match.group(1).decode("ascii")
    if label == "ENCRYPTED PRIVATE KEY":
        raise BadKey("is encrypted: mailer needs it unencrypted (openssl pkey -in KEY -out NEW)")
    if label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise BadKey("is a public key: DKIM signs with the private half")
    if label == "OPENSSH PRIVATE KEY":
        raise BadKey("is an OpenSSH key, not PEM: `mailer dkim keygen` makes a DKIM key")
    if label not in ("PRIVATE KEY", "RSA PRIVATE KEY"):
        raise BadKey(f"holds a PEM {label}, not a private key")
    der = _base64(match.group(2))
    if der is None:
        raise BadKey("is damaged: its PEM block is not base64")
    if label == "RSA PRIVATE KEY":
        return _rsa(der)
    try:
        _, body, _ = _der(der)
        _, _, at = _der(body)  # version
        _, identifier, at = _der(body, at)
        _, oid, _ = _der(identifier)
        _, inner, _ = _der(body, at)
    except BadKey:
        raise BadKey("is damaged: its PKCS#8 structure does not parse") from None
    if oid == _RSA_OID:
        return _rsa(der)
    if oid == _ED25519_OID:
        tag, seed, _ = _der(inner)
        if tag != 0x04 or len(seed) != 32:
            raise BadKey("is damaged: its Ed25519 seed is not 32 bytes")
        return _ed25519(seed)
    raise BadKey("holds a key of a type DKIM cannot use (only rsa and ed25519)")


def _base64(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _rsa(der: bytes) -> tuple[str, Any, str, int]:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from dkim.crypto import RSASSA_PKCS1_v1_5_verify, UnparsableKeyError, parse_private_key

    try:
        private = parse_private_key(der)
    except (UnparsableKeyError, IndexError, ValueError):
        raise BadKey("is damaged: its RSA numbers do not parse") from None
    modulus, exponent = private["modulus"], private["publicExponent"]
    bits = modulus.bit_length()
    if bits < MIN_RSA_BITS:
        raise BadKey(f"is a {bits}-bit RSA key: receivers refuse under {MIN_RSA_BITS}; use 2048")
    # Signing goes through OpenSSL (cryptography): CRT and blinding, ~1 ms for RSA-2048 where
    # dkimpy's pure-Python pow() takes ~6. Its constructor checks that the numbers agree.
    try:
        key = rsa.RSAPrivateNumbers(
            p=private["prime1"],
            q=private["prime2"],
            d=private["privateExponent"],
            dmp1=private["exponent1"],
            dmq1=private["exponent2"],
            iqmp=private["coefficient"],
            public_numbers=rsa.RSAPublicNumbers(exponent, modulus),
        ).private_key()
    except (ValueError, KeyError, TypeError):
        raise BadKey("is damaged: its RSA numbers do not make a working key") from None
    probe = hashlib.sha256(b"mailer dkim key check")
    public = {"modulus": modulus, "publicExponent": exponent}
    if not RSASSA_PKCS1_v1_5_verify(probe, _rsa_sign(key, probe), public):
        raise BadKey("is damaged: its RSA numbers do not make a working key")
    return RSA, key, rsa_public(modulus, exponent), bits


def _rsa_sign(key: rsa.RSAPrivateKey, digest: Any) -> bytes:
    """RSASSA-PKCS1-v1_5 over a finished SHA-256 hash (deterministic: the bytes dkimpy makes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def _ed25519(seed: bytes) -> tuple[str, Any, str, int]:
    import nacl.exceptions
    import nacl.signing

    try:
        signing_key = nacl.signing.SigningKey(seed)
    except nacl.exceptions.ValueError:
        raise BadKey("is damaged: not an Ed25519 seed") from None
    public = base64.b64encode(bytes(signing_key.verify_key)).decode("ascii")
    return ED25519, signing_key, public, 256


def ed25519_selector(settings: Settings) -> str:
    """The selector of the second (Ed25519) key."""
    return settings.dkim_ed25519_selector or f"{settings.dkim_selector}-ed25519"


def signing_domain(settings: Settings) -> str:
    """d=: `dkim_domain`, else the From address's domain (so DMARC finds it aligned)."""
    if settings.dkim_domain:
        return settings.dkim_domain.lower()
    address = parseaddr(settings.from_)[1]
    return address.rpartition("@")[2].lower() if "@" in address else ""


def _read(settings: Settings, file_setting: str, text_setting: str) -> tuple[bytes, str] | None:
    """(key bytes, where they came from) of one key, or None when it is not configured."""
    path_text, text = getattr(settings, file_setting), getattr(settings, text_setting)
    file_env, text_env = env_name(file_setting), env_name(text_setting)
    if path_text and text:
        raise ConfigError(f"both {file_env} and {text_env} are set: keep one of them")
    if path_text:
        path = Path(path_text).expanduser()
        path = path if path.is_absolute() else settings.root / path
        try:
            return path.read_bytes(), f"{file_env}: {path}"
        except OSError as exc:
            raise ConfigError(f"{file_env}: cannot read {path}: {exc.strerror or exc}") from None
    if text:
        # A one-line value in the environment may carry its line breaks as \n escapes.
        pem = text if "\n" in text else text.replace("\\n", "\n")
        return pem.encode("utf-8", "replace"), text_env
    return None


def _key(settings: Settings, found: tuple[bytes, str], selector: str) -> Key:
    data, source = found
    try:
        algorithm, private, public, bits = parse_key(data)
    except BadKey as exc:
        raise ConfigError(f"{source} {exc}") from None
    domain = signing_domain(settings)
    if not domain:
        raise ConfigError(
            "a DKIM key is set but there is no domain to sign for: set `from` (or dkim_domain)"
        )
    return Key(algorithm, selector, domain, source, public, bits, private)


def load_keys(settings: Settings) -> tuple[Key, ...]:
    """The configured keys, parsed and checked (ConfigError, one line, if one is bad)."""
    keys: list[Key] = []
    primary = _read(settings, "dkim_key_file", "dkim_key")
    if primary is not None:
        keys.append(_key(settings, primary, settings.dkim_selector))
    second = _read(settings, "dkim_ed25519_key_file", "dkim_ed25519_key")
    if second is not None:
        key = _key(settings, second, ed25519_selector(settings))
        if key.algorithm != ED25519:
            raise ConfigError(f"{key.source} holds an {key.algorithm} key, not an ed25519 one")
        if keys and keys[0].algorithm == ED25519:
            raise ConfigError(
                f"{keys[0].source} and {key.source} are both ed25519 keys:"
                f" {env_name('dkim_key_file')} is for the rsa key"
            )
        if keys and keys[0].selector == key.selector:
            raise ConfigError(
                f"dkim_selector and dkim_ed25519_selector are both {key.selector!r}:"
                " one selector names one key in DNS"
            )
        keys.append(key)
    return tuple(keys)


def load(settings: Settings) -> Signer | None:
    """A Signer for the configured keys, or None when DKIM is not configured."""
    keys = load_keys(settings)
    unsigned = REWRITTEN_BY_SES if settings.transport == "ses" else frozenset()
    return Signer(keys, unsigned=unsigned) if keys else None


# -- keygen -------------------------------------------------------------------------------


def generate(algorithm: str) -> tuple[bytes, str]:
    """(private key PEM, p= value) of a new key: RSA 2048 by openssl, Ed25519 by PyNaCl."""
    if algorithm == ED25519:
        import nacl.signing

        signing_key = nacl.signing.SigningKey(secrets.token_bytes(32))
        return ed25519_pem(signing_key), _ed25519(bytes(signing_key))[2]
    try:
        done = subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{RSA_BITS}"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MailerError(
            f"cannot run openssl to make an RSA key: {exc}",
            hint="install openssl, or make an ed25519 key: --type ed25519",
        ) from None
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise MailerError(f"openssl genpkey failed: {error[-1] if error else done.returncode}")
    pem = done.stdout
    return pem, parse_key(pem)[2]


# -- signing ------------------------------------------------------------------------------


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
                (b"a", ALGORITHMS[key.algorithm]),
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
            signature = base64.b64encode(key.sign(digest))
            out.append(b"DKIM-Signature:" + _fold(tags, signature) + CRLF)
        return b"".join(out)

    def sign(self, message: bytes, timestamp: int | None = None) -> bytes:
        """A whole message (CRLF lines) with its signatures on top: the slow, general way
        (the Composer hashes its body in pieces instead)."""
        head, sep, body = message.partition(CRLF + CRLF)
        if not sep:
            raise ValueError("a message needs a blank line after its header")
        return self.signatures(head + CRLF, body_hash(body), timestamp) + message
