"""The DNS TXT records a sender publishes (SPF, DKIM, DMARC), and a check of what is live.

    records()  what to publish for this configuration (`mailer dns`)
    check()    each record looked up and judged: ok / missing / wrong / error (`--check`)

SPF goes at the envelope sender's domain (bounce_address, else From: that is the domain SPF
checks), DKIM at selector._domainkey.<dkim domain> for each configured key, DMARC at
_dmarc.<From domain>. Lookups use dnspython: the system's resolver, or `dns_resolver`
(MAILER_DNS_RESOLVER, "host[:port]"), which is how the tests point it at a local server.
(Not named dns.py: inside this package that name would shadow dnspython's `dns`.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

import dns.exception
import dns.name
import dns.resolver

from mailer.config import Settings, env_name
from mailer.deliver.dkim_keys import RSA, Key, signing_domain
from mailer.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, ConfigError, MailerError

OK, MISSING, WRONG, ERROR = "ok", "missing", "wrong", "error"
LIFETIME = 5.0  # seconds a lookup may take, retries included

# smtp_host -> the SPF domain a relay's customers include, and the relay's name.
PROVIDERS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern), include, name)
    for pattern, include, name in (
        (r"(^|\.)(gmail|googlemail|google)\.com$", "_spf.google.com", "Google"),
        (r"(^|\.)(office365|outlook)\.com$", "spf.protection.outlook.com", "Microsoft 365"),
        (r"^email-smtp\.[a-z0-9-]+\.amazonaws\.com$", "amazonses.com", "Amazon SES"),
        (r"(^|\.)sendgrid\.net$", "sendgrid.net", "SendGrid"),
        (r"(^|\.)mailgun\.org$", "mailgun.org", "Mailgun"),
        (r"(^|\.)postmarkapp\.com$", "spf.mtasv.net", "Postmark"),
        (r"(^|\.)mailjet\.com$", "spf.mailjet.com", "Mailjet"),
        (r"(^|\.)(fastmail\.com|messagingengine\.com)$", "spf.messagingengine.com", "Fastmail"),
        (r"(^|\.)(brevo|sendinblue)\.com$", "spf.brevo.com", "Brevo"),
        (r"(^|\.)zoho\.com$", "zoho.com", "Zoho Mail"),
        (r"(^|\.)zoho\.eu$", "zoho.eu", "Zoho Mail (EU)"),
    )
)


@dataclass(frozen=True)
class Record:
    """One TXT record to publish, with what to tell the user about it."""

    kind: str  # "SPF", "DKIM", "DMARC"
    name: str
    value: str
    notes: tuple[str, ...] = ()
    key: Key | None = None  # DKIM: the configured key it publishes


@dataclass(frozen=True)
class Verdict:
    """What the DNS says about one record."""

    kind: str
    name: str
    state: str  # OK, MISSING, WRONG or ERROR
    detail: str

    def line(self) -> str:
        return f"{self.state:<8}{self.kind:<6}{self.name}: {self.detail}"


class LookupFailed(Exception):
    """The DNS gave no answer at all (timeout, SERVFAIL): neither there nor missing."""


def provider(smtp_host: str) -> tuple[str, str] | None:
    """(SPF include, provider name) for a relay mailer knows, else None."""
    host = smtp_host.strip().lower().rstrip(".")
    for pattern, include, name in PROVIDERS:
        if pattern.search(host):
            return include, name
    return None


def from_domain(settings: Settings) -> str:
    address = parseaddr(settings.from_)[1]
    if "@" not in address:
        raise ConfigError(
            "the DNS records are for the From address's domain, and there is no From address",
            hint="set `from` in mailer.toml or MAILER_FROM",
        )
    return address.rpartition("@")[2].lower()


def envelope_domain(settings: Settings) -> str:
    """The domain SPF checks: the envelope sender's (bounce_address, else From)."""
    if settings.bounce_address:
        return settings.bounce_address.rpartition("@")[2].lower()
    return from_domain(settings)


def _aligned(domain: str, org: str) -> bool:
    """DMARC's relaxed alignment, roughly: the same domain, or one inside the other."""
    return domain == org or domain.endswith("." + org) or org.endswith("." + domain)


def spf_value(settings: Settings) -> str:
    hint = provider(settings.smtp_host)
    return f"v=spf1 include:{hint[0]} ~all" if hint else "v=spf1 a mx ~all"


def dmarc_value(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"


def records(settings: Settings, keys: Sequence[Key]) -> list[Record]:
    """The records to publish for this configuration."""
    domain = from_domain(settings)
    spf_domain = envelope_domain(settings)
    hint = provider(settings.smtp_host)
    if hint:
        spf_notes = [f"smtp_host {settings.smtp_host} is {hint[1]}: include:{hint[0]}."]
    else:
        spf_notes = [
            f"smtp_host {settings.smtp_host} is not a relay mailer knows: `a mx` allows"
            f" {spf_domain}'s own servers;",
            "add include:<your relay's SPF domain> (its documentation names it) or"
            " ip4:<its address>.",
        ]
    if not _aligned(spf_domain, domain):
        spf_notes.append(
            f"{spf_domain} (the envelope sender's) is not {domain}: SPF will not count for DMARC."
        )
    out = [
        Record(
            "SPF",
            spf_domain,
            spf_value(settings),
            (f"SPF: the servers that may send as {spf_domain} (the envelope sender).", *spf_notes),
        )
    ]
    if not keys:
        out.append(
            Record(
                "DKIM",
                f"{settings.dkim_selector}._domainkey.{signing_domain(settings) or domain}",
                "",
                (
                    "DKIM: no key is configured; `mailer dkim keygen` makes one and says"
                    f" what to publish ({env_name('dkim_key_file')}).",
                ),
            )
        )
    for key in keys:
        notes = [f"DKIM: the public half of {key.source} ({key.algorithm}, {key.bits} bits)."]
        if not _aligned(key.domain, domain):
            notes.append(f"d={key.domain} is not {domain}: DMARC will not count this signature.")
        out.append(Record("DKIM", key.dns_name, key.dns_value, tuple(notes), key))
    out.append(
        Record(
            "DMARC",
            f"_dmarc.{domain}",
            dmarc_value(domain),
            (
                "DMARC: a start. p=none asks receivers for reports only (to dmarc@"
                f"{domain}: make that mailbox);",
                "once they show your mail passing, move to p=quarantine, then p=reject.",
            ),
        )
    )
    return out


# -- lookups ------------------------------------------------------------------------------


def resolver(settings: Settings) -> dns.resolver.Resolver:
    """dnspython's resolver: `dns_resolver` if set, else the system's."""
    if not settings.dns_resolver:
        try:
            found = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise MailerError(
                "no DNS resolver is configured on this machine (/etc/resolv.conf)",
                hint=f"set {env_name('dns_resolver')}=host[:port]",
            ) from None
    else:
        host, port = _host_port(settings.dns_resolver)
        found = dns.resolver.Resolver(configure=False)
        found.nameservers = [host]
        found.port = port
    found.lifetime = LIFETIME
    found.timeout = LIFETIME / 2
    return found


def _host_port(text: str) -> tuple[str, int]:
    match = re.match(r"^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$", text.strip())
    if not match:
        raise ConfigError(f"dns_resolver must be host[:port], got {text!r}")
    host = match.group(1) or match.group(2)
    port = int(match.group(3) or 53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
        except OSError as exc:
            raise ConfigError(f"dns_resolver {text!r}: cannot resolve {host}: {exc}") from None
    return host, port


def txt(found: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records at `name` (each one's strings joined); [] when there are none."""
    try:
        answer = found.resolve(
            dns.name.from_text(name), "TXT", raise_on_no_answer=False, search=False
        )
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.Timeout:
        raise LookupFailed(f"no answer within {LIFETIME:g} s") from None
    except dns.resolver.NoNameservers:
        raise LookupFailed("the DNS server failed to answer (SERVFAIL or refused)") from None
    except dns.exception.DNSException as exc:
        raise LookupFailed(str(exc) or type(exc).__name__) from None
    if answer.rrset is None:
        return []
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset]


def tags(value: str) -> dict[str, str]:
    """A tag=value; list (DKIM, DMARC) as a dict, names lower-cased, values trimmed."""
    out = {}
    for part in value.split(";"):
        name, eq, tag_value = part.partition("=")
        if eq:
            out[name.strip().lower()] = tag_value.strip()
    return out


def _fingerprint(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


# -- verdicts -----------------------------------------------------------------------------


def check(
    settings: Settings, keys: Sequence[Key], found: dns.resolver.Resolver | None = None
) -> list[Verdict]:
    """Every record of records() looked up and judged, in the same order."""
    found = found or resolver(settings)
    out = []
    for record in records(settings, keys):
        try:
            if record.kind == "SPF":
                state, detail = _check_spf(found, record, settings)
            elif record.kind == "DKIM":
                state, detail = _check_dkim(found, record)
            else:
                state, detail = _check_dmarc(found, record)
        except LookupFailed as exc:
            state, detail = ERROR, f"cannot look it up: {exc}"
        out.append(Verdict(record.kind, record.name, state, detail))
    return out


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 when every record is ok, 1 when one is missing or wrong, 69 when the DNS did not
    answer (and nothing was found wrong)."""
    states = {v.state for v in verdicts}
    if states & {MISSING, WRONG}:
        return EXIT_FAILED
    return EXIT_UNAVAILABLE if ERROR in states else EXIT_OK


def _spf_records(found: dns.resolver.Resolver, name: str) -> list[str]:
    return [t for t in txt(found, name) if re.match(r"(?i)^v=spf1(\s|$)", t.strip())]


def _includes(found: dns.resolver.Resolver, record: str, want: str, budget: list[int]) -> bool:
    """Whether an SPF record includes `want`, directly or through include:/redirect= (at
    most 10 lookups, as RFC 7208 4.6.4 allows)."""
    for term in record.split()[1:]:
        term = term.lower().lstrip("+-~?")
        kind, _, target = term.partition(":") if ":" in term else term.partition("=")
        if kind not in ("include", "redirect") or not target:
            continue
        if target.rstrip(".") == want:
            return True
        if budget[0] <= 0:
            continue
        budget[0] -= 1
        for nested in _spf_records(found, target):
            if _includes(found, nested, want, budget):
                return True
    return False


def _check_spf(found: dns.resolver.Resolver, record: Record, settings: Settings) -> tuple[str, str]:
    published = _spf_records(found, record.name)
    if not published:
        return MISSING, f"no SPF record; publish: {record.value}"
    if len(published) > 1:
        return WRONG, (
            f"{len(published)} SPF records: receivers treat more than one as an error"
            " (RFC 7208 4.5); merge them into one"
        )
    spf = " ".join(published[0].split())
    if any(term.lower() in ("all", "+all") for term in spf.split()[1:]):
        return WRONG, f"{spf}: +all lets anyone send as {record.name}; end it with ~all"
    hint = provider(settings.smtp_host)
    if hint and not _includes(found, spf, hint[0], [10]):
        return WRONG, (
            f"SPF present but does not include:{hint[0]} ({hint[1]}, smtp_host"
            f" {settings.smtp_host}): {spf}"
        )
    if hint:
        return OK, spf
    return OK, f"{spf} (mailer cannot tell whether it covers smtp_host {settings.smtp_host})"


def _key_bytes(algorithm: str, p: str) -> bytes | None:
    """A public key's identity: (modulus, exponent) for rsa, the 32 bytes for ed25519."""
    # Here, not at the top: `mailer --help` imports this module and reads no key.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        raw = base64.b64decode("".join(p.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if algorithm != RSA:
        return raw
    try:  # SubjectPublicKeyInfo, or the bare PKCS#1 RSAPublicKey some records hold
        public = load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        return None
    if not isinstance(public, rsa.RSAPublicKey):
        return None
    numbers = public.public_numbers()
    return f"{numbers.n:x}:{numbers.e:x}".encode()


def _check_dkim(found: dns.resolver.Resolver, record: Record) -> tuple[str, str]:
    key = record.key
    if key is None:
        return MISSING, "no DKIM key is configured: `mailer dkim keygen` makes one"
    published = [t for t in txt(found, record.name) if "p" in tags(t)]
    if not published:
        return MISSING, "no DKIM record; publish the one `mailer dns` prints"
    if len(published) > 1:
        return WRONG, f"{len(published)} DKIM records at one name: keep only one"
    found_tags = tags(published[0])
    if found_tags.get("v", "DKIM1") != "DKIM1":
        return WRONG, f"v={found_tags['v']}: a DKIM key record starts with v=DKIM1"
    k = found_tags.get("k", RSA).lower()
    p = "".join(found_tags["p"].split())
    if not p:
        return WRONG, "the published key is revoked (p= is empty)"
    if k != key.algorithm:
        return (
            WRONG,
            f"the published key is k={k}; the configured key ({key.source}) is {key.algorithm}",
        )
    mine = _key_bytes(key.algorithm, key.public)
    theirs = _key_bytes(k, p)
    if theirs is None:
        return WRONG, f"the published p= is not a {k} public key"
    if theirs != mine:
        return WRONG, (
            f"the published key is not the configured key ({key.source}):"
            f" published {_fingerprint(theirs)}, configured {_fingerprint(mine or b'')}"
        )
    return OK, f"k={k}, the configured key ({key.source})"


def _check_dmarc(found: dns.resolver.Resolver, record: Record) -> tuple[str, str]:
    published = [t for t in txt(found, record.name) if re.match(r"(?i)^v\s*=\s*DMARC1", t.strip())]
    if not published:
        return MISSING, f"no DMARC record; publish: {record.value}"
    if len(published) > 1:
        return WRONG, f"{len(published)} DMARC records: receivers ignore them all; keep one"
    policy = tags(published[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        shown = f"p={policy}" if policy else "no p= tag"
        return WRONG, f"{shown}: a DMARC record needs p=none, p=quarantine or p=reject"
    if policy == "none":
        return OK, (
            "p=none is a start: receivers only send reports; move to p=quarantine once they"
            " show your mail passing"
        )
    return OK, f"p={policy}"
