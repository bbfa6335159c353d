"""DKIM keys: reading and checking them, making new ones, and the DNS record of each.

The signing key comes from MAILER_DKIM_KEY_FILE (a path, relative to the project) or
MAILER_DKIM_KEY (the PEM text itself, in .env or the environment; `\\n` escapes are read as
line breaks), never from mailer.toml, and signs under `dkim_selector` (default "mail"). Its
type is read from its content: an RSA key (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY")
signs rsa-sha256, an Ed25519 key (PKCS#8, or dkimpy's bare base64 seed) signs ed25519-sha256
alone. A second key in MAILER_DKIM_ED25519_KEY_FILE / MAILER_DKIM_ED25519_KEY must be Ed25519
and adds an ed25519-sha256 signature under `dkim_ed25519_selector` (default
"<dkim_selector>-ed25519": one selector names one key in DNS). Most receivers verify only
rsa-sha256 (2026): sign with RSA, add Ed25519 beside it. `dkim_domain` (d=) defaults to the
From domain, so DMARC finds the signature aligned. Every key is read, parsed and checked once
(OpenSSL checks that an RSA key's numbers agree) when a send is planned: a bad one is one
ConfigError line before anything goes out. Key text never reaches an error message or
`mailer config`.

cryptography (OpenSSL) does the work: it reads the keys, makes new ones, writes the public
half for DNS and signs, RSA-2048 in ~1 ms of CPU here and Ed25519 in ~0.05.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from mailer.config import Settings, env_name
from mailer.errors import ConfigError

# cryptography is imported where a key is read, made or used: `mailer build` (whose Composer
# imports the signing module) and `mailer --help` sign nothing, and it costs ~50 ms to load.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

RSA = "rsa"
ED25519 = "ed25519"
ALGORITHMS = {RSA: b"rsa-sha256", ED25519: b"ed25519-sha256"}
RSA_BITS = 2048  # what `mailer dkim keygen` makes
MIN_RSA_BITS = 1024  # RFC 8301: verifiers must refuse shorter keys

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_OTHER_TYPE = "holds a key of a type DKIM cannot use (only rsa and ed25519)"
_ENCRYPTED = "is encrypted: mailer needs it unencrypted (openssl pkey -in KEY -out NEW)"


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
    private: PrivateKey = field(repr=False, compare=False)

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_value(self) -> str:
        return dns_value(self.algorithm, self.public)

    @property
    def signature_algorithm(self) -> bytes:
        """The a= tag: rsa-sha256 or ed25519-sha256."""
        return ALGORITHMS[self.algorithm]

    def sign(self, digest: bytes) -> bytes:
        """The signature of a finished SHA-256 digest (RSA: PKCS#1 v1.5, as dkimpy signs)."""
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        from cryptography.hazmat.primitives.hashes import SHA256

        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(digest, padding.PKCS1v15(), Prehashed(SHA256()))
        return self.private.sign(digest)  # RFC 8463: Ed25519 signs the SHA-256 digest


def dns_value(algorithm: str, public: str) -> str:
    """The TXT record that publishes a public key."""
    return f"v=DKIM1; k={algorithm}; p={public}"


# -- reading a key ------------------------------------------------------------------------


def parse_key(data: bytes) -> tuple[str, PrivateKey, str, int]:
    """(algorithm, private key, p= value, bits) of a private key; BadKey says what is wrong."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    text = data.strip()
    match = _PEM.search(text)
    if match is None:
        seed = _base64(text)
        if seed is not None and len(seed) == 32:  # dkimpy's dknewkey writes Ed25519 so
            return _described(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
        if b"-----BEGIN" in text:
            raise BadKey("is damaged: its PEM block has no matching END line")
        raise BadKey("is not a private key in PEM form (-----BEGIN PRIVATE KEY-----)")
    label = match.group(1).decode("ascii")
    if label == "ENCRYPTED PRIVATE KEY":
        raise BadKey(_ENCRYPTED)
    if label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise BadKey("is a public key: DKIM signs with the private half")
    if label == "OPENSSH PRIVATE KEY":
        raise BadKey("is an OpenSSH key, not PEM: `mailer dkim keygen` makes a DKIM key")
    if label not in ("PRIVATE KEY", "RSA PRIVATE KEY"):
        raise BadKey(f"holds a PEM {label}, not a private key")
    der = _base64(match.group(2))
    if der is None:
        raise BadKey("is damaged: its PEM block is not base64")
    return _described(_load(der, label))


def _base64(data: bytes) -> bytes | None:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _load(der: bytes, label: str) -> PrivateKeyTypes:
    """The key in a PEM block's DER (PKCS#8, or PKCS#1 for "RSA PRIVATE KEY")."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_der_private_key
    from cryptography.utils import CryptographyDeprecationWarning

    def load(*, check: bool) -> PrivateKeyTypes:
        # A DSA key warns that DSA is deprecated: it is refused here anyway, in one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return load_der_private_key(der, None, unsafe_skip_rsa_key_validation=not check)

    try:
        return load(check=True)
    except UnsupportedAlgorithm:
        raise BadKey(_OTHER_TYPE) from None
    except TypeError:  # an encrypted PKCS#8 under a plain PRIVATE KEY label
        raise BadKey(_ENCRYPTED) from None
    except ValueError:
        pass
    # OpenSSL refuses RSA numbers that do not make a working key: tell those from bytes that
    # do not parse at all.
    try:
        load(check=False)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if label == "RSA PRIVATE KEY":
            raise BadKey("is damaged: its RSA numbers do not parse") from None
        raise BadKey("is damaged: its PKCS#8 structure does not parse") from None
    raise BadKey("is damaged: its RSA numbers do not make a working key")


def _described(private: PrivateKeyTypes) -> tuple[str, PrivateKey, str, int]:
    """(algorithm, key, p= value, bits) of a loaded key DKIM can sign with."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(private, rsa.RSAPrivateKey):
        bits = private.key_size
        if bits < MIN_RSA_BITS:
            raise BadKey(
                f"is a {bits}-bit RSA key: receivers refuse under {MIN_RSA_BITS}; use 2048"
            )
        # p= is the DER SubjectPublicKeyInfo, what `openssl pkey -pubout` writes (RFC 6376 3.6.1).
        spki = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return RSA, private, base64.b64encode(spki).decode("ascii"), bits
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes_raw()  # RFC 8463: p= is the bare 32 bytes
        return ED25519, private, base64.b64encode(raw).decode("ascii"), 256
    raise BadKey(_OTHER_TYPE)


def to_pem(private: PrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM, the form openssl reads and writes."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def generate(algorithm: str) -> tuple[bytes, str]:
    """(private key PEM, p= value) of a new key: RSA of RSA_BITS, or Ed25519."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    private: PrivateKey
    if algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return to_pem(private), _described(private)[2]


# -- the configured keys ------------------------------------------------------------------


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
