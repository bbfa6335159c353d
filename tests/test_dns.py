"""`mailer dns` and `mailer dns --check` (mailer/deliver/dnsrecords.py) against a real DNS server:
dnslib serving a zone written here, on 127.0.0.1 (UDP and TCP), named by MAILER_DNS_RESOLVER.
Never the internet."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MailerCli
from dkim.crypto import parse_public_key
from dnslib import RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from mailer import config
from mailer.deliver import dkim_keys as mdkim
from mailer.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "dns-test-secret"
DMARC_NOTE = (
    "p=none is a start: receivers only send reports; move to p=quarantine once they show"
    " your mail passing"
)


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from zone-file text; NXDOMAIN for names it has nothing at; or SERVFAIL."""

    def __init__(self) -> None:
        self.records: list[RR] = []
        self.servfail = False

    def load(self, text: str) -> None:
        self.records = RR.fromZone(text)

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        if self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        qname = request.q.qname
        here = [r for r in self.records if r.rname == qname]
        for record in here:
            if record.rtype == request.q.qtype:
                reply.add_answer(record)
        if not here:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def zone() -> Iterator[tuple[Zone, str]]:
    resolver = Zone()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logger = DNSLogger(logf=lambda *args: None)
    servers = [
        DNSServer(resolver, address="127.0.0.1", port=port, tcp=tcp, logger=logger)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    try:
        yield resolver, f"127.0.0.1:{port}"
    finally:
        for server in servers:
            server.stop()
            server.server.server_close()


def txt(name: str, value: str) -> str:
    """One zone-file TXT line, the value cut into strings of at most 255 characters."""
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{name} 60 IN TXT {strings}\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dns-keys")
    out = {}
    for name, algorithm in (("rsa", "rsa"), ("ed", "ed25519"), ("rsa2", "rsa"), ("ed2", "ed25519")):
        out[name] = d / f"{name}.pem"
        out[name].write_bytes(mdkim.generate(algorithm)[0])
    return out


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "project"
    (root / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "mailer.toml", root)
    return root


Run = Callable[..., tuple[int, str]]


@pytest.fixture
def dns_cli(
    project: Path, zone: tuple[Zone, str], keys: dict[str, Path], mailer_cli: MailerCli
) -> Run:
    def run(*args: str, **env: str) -> tuple[int, str]:
        full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MAILER_")}
        full.update(
            MAILER_SECRET=SECRET,
            MAILER_DNS_RESOLVER=zone[1],
            MAILER_DKIM_KEY_FILE=str(keys["rsa"]),
            MAILER_DKIM_ED25519_KEY_FILE=str(keys["ed"]),
        )
        full.update(env)
        result = mailer_cli(project, "dns", *args, env=full)
        return result.exit_code, result.output

    return run


def key(path: Path) -> mdkim.Key:
    algorithm, private, public, bits = mdkim.parse_key(path.read_bytes())
    return mdkim.Key(algorithm, "x", "example.org", "", public, bits, private)


def good_zone(
    keys: dict[str, Path],
    *,
    dmarc: str = "v=DMARC1; p=none; rua=mailto:d@x",
    rsa: str | None = None,
    ed: str | None = None,
) -> str:
    """The zone of example.org as it should be; `rsa`, `ed` and `dmarc` replace a record."""
    text = "$ORIGIN example.org.\n"
    text += txt("@", "v=spf1 a mx ~all") + txt("@", "google-site-verification=abc")
    text += txt("mail._domainkey", key(keys["rsa"]).dns_value if rsa is None else rsa)
    text += txt("mail-ed25519._domainkey", key(keys["ed"]).dns_value if ed is None else ed)
    if dmarc:
        text += txt("_dmarc", dmarc)
    return text


def test_a_right_zone_checks_ok(
    dns_cli: Run, zone: tuple[Zone, str], keys: dict[str, Path]
) -> None:
    zone[0].load(good_zone(keys))
    code, out = dns_cli("--check")
    assert out == (
        "ok      SPF   example.org: v=spf1 a mx ~all"
        " (mailer cannot tell whether it covers smtp_host localhost)\n"
        "ok      DKIM  mail._domainkey.example.org: k=rsa, the configured key"
        f" (MAILER_DKIM_KEY_FILE: {keys['rsa']})\n"
        "ok      DKIM  mail-ed25519._domainkey.example.org: k=ed25519, the configured key"
        f" (MAILER_DKIM_ED25519_KEY_FILE: {keys['ed']})\n"
        f"ok      DMARC _dmarc.example.org: {DMARC_NOTE}\n"
        "all 4 records ok\n"
    )
    assert code == 0


def test_missing_dmarc_and_wrong_dkim_keys(
    dns_cli: Run, zone: tuple[Zone, str], keys: dict[str, Path]
) -> None:
    text = good_zone(keys, dmarc="", rsa=key(keys["rsa2"]).dns_value, ed=key(keys["ed2"]).dns_value)
    zone[0].load(text)
    code, out = dns_cli("--check")

    def ed_print(path: Path) -> str:
        raw = base64.b64decode(key(path).public)
        return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]

    def rsa_print(path: Path) -> str:
        numbers = parse_public_key(base64.b64decode(key(path).public))
        text = f"{numbers['modulus']:x}:{numbers['publicExponent']:x}"
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]

    assert out.splitlines() == [
        "ok      SPF   example.org: v=spf1 a mx ~all"
        " (mailer cannot tell whether it covers smtp_host localhost)",
        "wrong   DKIM  mail._domainkey.example.org: the published key is not the configured key"
        f" (MAILER_DKIM_KEY_FILE: {keys['rsa']}): published {rsa_print(keys['rsa2'])},"
        f" configured {rsa_print(keys['rsa'])}",
        "wrong   DKIM  mail-ed25519._domainkey.example.org: the published key is not the"
        f" configured key (MAILER_DKIM_ED25519_KEY_FILE: {keys['ed']}): published"
        f" {ed_print(keys['ed2'])}, configured {ed_print(keys['ed'])}",
        "missing DMARC _dmarc.example.org: no DMARC record;"
        " publish: v=DMARC1; p=none; rua=mailto:dmarc@example.org",
        "1 missing, 2 wrong: `mailer dns` prints what to publish",
    ]
    assert code == 1


@pytest.mark.parametrize(
    "host,records,line",
    [
        (
            "smtp.gmail.com",
            ["v=spf1 mx ~all"],
            "wrong   SPF   example.org: SPF present but does not include:_spf.google.com"
            " (Google, smtp_host smtp.gmail.com): v=spf1 mx ~all",
        ),
        (
            "smtp.gmail.com",
            ["v=spf1 include:_spf.google.com ~all"],
            "ok      SPF   example.org: v=spf1 include:_spf.google.com ~all",
        ),
        (  # through another record's include:
            "email-smtp.eu-west-1.amazonaws.com",
            ["v=spf1 include:_spf.example.org -all"],
            "ok      SPF   example.org: v=spf1 include:_spf.example.org -all",
        ),
        (
            "localhost",
            ["v=spf1 a ~all", "v=spf1 mx ~all"],
            "wrong   SPF   example.org: 2 SPF records: receivers treat more than one as an"
            " error (RFC 7208 4.5); merge them into one",
        ),
        (
            "localhost",
            ["v=spf1 a +all"],
            "wrong   SPF   example.org: v=spf1 a +all: +all lets anyone send as example.org;"
            " end it with ~all",
        ),
        (
            "localhost",
            ["v=spf10 is not spf"],
            "missing SPF   example.org: no SPF record; publish: v=spf1 a mx ~all",
        ),
    ],
)
def test_spf_verdicts(
    dns_cli: Run,
    zone: tuple[Zone, str],
    keys: dict[str, Path],
    host: str,
    records: list[str],
    line: str,
) -> None:
    text = good_zone(keys).replace(txt("@", "v=spf1 a mx ~all"), "")
    text += "".join(txt("@", r) for r in records)
    text += txt("_spf", "v=spf1 include:amazonses.com ~all")
    zone[0].load(text)
    code, out = dns_cli("--check", MAILER_SMTP_HOST=host)
    assert out.splitlines()[0] == line
    assert code == (0 if line.startswith("ok") else 1)


@pytest.mark.parametrize(
    "rsa_record,dmarc,lines",
    [
        (
            "v=DKIM1; k=rsa; p=",
            "v=DMARC1; p=reject",
            [
                "wrong   DKIM  mail._domainkey.example.org: the published key is revoked"
                " (p= is empty)",
                "ok      DMARC _dmarc.example.org: p=reject",
            ],
        ),
        (
            "v=DKIM1; k=ed25519; p=AAAA",
            "v=DMARC1; rua=mailto:x@example.org",
            [
                "wrong   DKIM  mail._domainkey.example.org: the published key is k=ed25519;"
                " the configured key (MAILER_DKIM_KEY_FILE: {rsa}) is rsa",
                "wrong   DMARC _dmarc.example.org: no p= tag: a DMARC record needs p=none,"
                " p=quarantine or p=reject",
            ],
        ),
        (
            "v=DKIM1; k=rsa; p=bm90IGEga2V5",
            "v=DMARC1; p=quarantine",
            [
                "wrong   DKIM  mail._domainkey.example.org: the published p= is not a rsa"
                " public key",
                "ok      DMARC _dmarc.example.org: p=quarantine",
            ],
        ),
    ],
)
def test_dkim_and_dmarc_verdicts(
    dns_cli: Run,
    zone: tuple[Zone, str],
    keys: dict[str, Path],
    rsa_record: str,
    dmarc: str,
    lines: list[str],
) -> None:
    zone[0].load(good_zone(keys, dmarc=dmarc, rsa=rsa_record))
    code, out = dns_cli("--check")
    got = out.splitlines()
    assert [got[1], got[3]] == [line.format(rsa=keys["rsa"]) for line in lines]
    assert code == 1


def test_no_key_configured_is_missing(
    dns_cli: Run, zone: tuple[Zone, str], keys: dict[str, Path]
) -> None:
    zone[0].load(good_zone(keys))
    code, out = dns_cli("--check", MAILER_DKIM_KEY_FILE="", MAILER_DKIM_ED25519_KEY_FILE="")
    assert out.splitlines()[1] == (
        "missing DKIM  mail._domainkey.example.org: no DKIM key is configured:"
        " `mailer dkim keygen` makes one"
    )
    assert code == 1


def test_a_dns_server_that_fails_is_neither_ok_nor_missing(
    dns_cli: Run, zone: tuple[Zone, str], keys: dict[str, Path]
) -> None:
    zone[0].load(good_zone(keys))
    zone[0].servfail = True
    try:
        code, out = dns_cli("--check")
    finally:
        zone[0].servfail = False
    fail = "cannot look it up: the DNS server failed to answer (SERVFAIL or refused)"
    assert out.splitlines() == [
        f"error   SPF   example.org: {fail}",
        f"error   DKIM  mail._domainkey.example.org: {fail}",
        f"error   DKIM  mail-ed25519._domainkey.example.org: {fail}",
        f"error   DMARC _dmarc.example.org: {fail}",
        "4 error: `mailer dns` prints what to publish",
    ]
    assert code == 69


def test_dns_prints_the_records_to_publish(dns_cli: Run, keys: dict[str, Path]) -> None:
    code, out = dns_cli()
    rsa, ed = key(keys["rsa"]), key(keys["ed"])
    assert code == 0
    assert out == (
        "# TXT records for example.org: publish each at your DNS host (its name, its value).\n"
        "# `mailer dns --check` looks them up and says which are live.\n"
        "\n"
        "# SPF: the servers that may send as example.org (the envelope sender).\n"
        "# smtp_host localhost is not a relay mailer knows: `a mx` allows example.org's own"
        " servers;\n"
        "# add include:<your relay's SPF domain> (its documentation names it) or"
        " ip4:<its address>.\n"
        "name:  example.org\n"
        "value: v=spf1 a mx ~all\n"
        "\n"
        f"# DKIM: the public half of MAILER_DKIM_KEY_FILE: {keys['rsa']} (rsa, 2048 bits).\n"
        "name:  mail._domainkey.example.org\n"
        f"value: {rsa.dns_value}\n"
        "\n"
        f"# DKIM: the public half of MAILER_DKIM_ED25519_KEY_FILE: {keys['ed']}"
        " (ed25519, 256 bits).\n"
        "name:  mail-ed25519._domainkey.example.org\n"
        f"value: {ed.dns_value}\n"
        "\n"
        "# DMARC: a start. p=none asks receivers for reports only (to dmarc@example.org:"
        " make that mailbox);\n"
        "# once they show your mail passing, move to p=quarantine, then p=reject.\n"
        "name:  _dmarc.example.org\n"
        "value: v=DMARC1; p=none; rua=mailto:dmarc@example.org\n"
    )


def test_spf_follows_the_bounce_domain_and_knows_providers(dns_cli: Run) -> None:
    code, out = dns_cli(
        MAILER_BOUNCE_ADDRESS="bounces@mail.example.net",
        MAILER_SMTP_HOST="smtp.sendgrid.net",
        MAILER_DKIM_DOMAIN="example.com",
    )
    assert code == 0
    assert (
        "# SPF: the servers that may send as mail.example.net (the envelope sender).\n"
        "# smtp_host smtp.sendgrid.net is SendGrid: include:sendgrid.net.\n"
        "# mail.example.net (the envelope sender's) is not example.org: SPF will not count"
        " for DMARC.\n"
        "name:  mail.example.net\n"
        "value: v=spf1 include:sendgrid.net ~all\n"
    ) in out
    assert "name:  mail._domainkey.example.com\n" in out
    assert "# d=example.com is not example.org: DMARC will not count this signature.\n" in out


def test_resolver_setting_is_checked(project: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(project, environ={"MAILER_DNS_RESOLVER": "127.0.0.1:99999"})
    assert err.value.message == (
        "dns_resolver must be host[:port] like 127.0.0.1:5353, got '127.0.0.1:99999'"
    )
    s = config.load(project, environ={"MAILER_DNS_RESOLVER": "[::1]:5353"})
    assert s.dns_resolver == "[::1]:5353"
