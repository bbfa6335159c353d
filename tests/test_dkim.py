"""DKIM (mailer/deliver/dkim.py and dkim_keys.py): keys, signatures verified by dkimpy,
`mailer dkim keygen`, the configuration errors, and a real `mailer send` through Postfix whose
every delivered file carries two signatures that verify (rsa-sha256 and ed25519-sha256)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path

import dkim
import pytest
from conftest import MailerCli, greeting_templates, seed_project
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import parse_tag_value
from postfix import Postfix, requires_postfix, running_postfix

from mailer import config
from mailer.compose import issue as issue_mod
from mailer.compose.render import Email, render
from mailer.deliver import dkim as mdkim
from mailer.deliver import dkim_keys, verp
from mailer.deliver.message import Composer
from mailer.state.ledger import Ledger
from mailer.state.subscribers import Subscriber

ROOT = Path(__file__).resolve().parent.parent
MAILER = Path(sys.executable).with_name("mailer")
# A one-line MAILER_DKIM_KEY with \n escapes, whose "key" must never be printed.
BAD_PEM = "-----BEGIN PRIVATE KEY-----\\nsecret-ish\\n-----END PRIVATE KEY-----"
SECRET = "dkim-test-secret"
H_TAG = (
    "from:reply-to:to:subject:date:message-id:mime-version:content-type:list-id:"
    "list-unsubscribe:list-unsubscribe-post:from"
)
# Readers whose values put whitespace where relaxed canonicalisation changes it.
TRICKY = [
    Subscriber("ada@example.com", "Ada  Lovelace", {"city": "Lon\tdon  "}, 2),
    Subscriber("zoe@example.com", "Zoë Martin ", {"city": " Lyon"}, 3),
    Subscriber("x@example.com", "", {"city": ""}, 4),
    Subscriber("long@example.com", "Very " * 40 + " Long", {"city": "a  b\t\tc " * 30}, 5),
    Subscriber("Kurt.Godel@Example.com", "Kurt Gödel", {"city": "Wien "}, 6),
]
# A template that puts subscriber data in both bodies, so values sit mid-body.
GREETING = (
    "<mj-section><mj-column><mj-text>Hello {{ subscriber.name }} from {{ subscriber.city }}"
    "</mj-text></mj-column></mj-section>"
)


def openssl(*args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], capture_output=True, input=data, check=True)
    return done.stdout


def dnsfunc_for(*keys: dkim_keys.Key) -> Callable[..., bytes | None]:
    """dkimpy's DNS hook, answering from the keys' public halves (it must accept timeout)."""
    records = {f"{k.dns_name}.".encode(): k.dns_value.encode() for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def signature_tags(raw: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature, top first, whitespace removed (as dkimpy reads them)."""
    headers, _ = dkim.rfc822_parse(raw)
    return [
        {k.decode(): re.sub(r"\s+", "", v.decode()) for k, v in parse_tag_value(value).items()}
        for name, value in headers
        if name.lower() == b"dkim-signature"
    ]


def verify_all(raw: bytes, lookup: Callable[..., bytes | None]) -> list[bool]:
    """Each DKIM-Signature's verdict, top first (dkimpy checks one per call)."""
    count = len(re.findall(rb"^DKIM-Signature:", raw, re.M | re.I))
    return [dkim.DKIM(raw).verify(idx=i, dnsfunc=lookup) for i in range(count)]


@pytest.fixture(scope="module")
def keyfiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    rsa_pem, _ = dkim_keys.generate(dkim_keys.RSA)
    ed_pem, _ = dkim_keys.generate(dkim_keys.ED25519)
    out = {"rsa": d / "mail.rsa.pem", "ed25519": d / "mail-ed25519.ed25519.pem"}
    out["rsa"].write_bytes(rsa_pem)
    out["ed25519"].write_bytes(ed_pem)
    return out


@pytest.fixture(scope="module")
def greeting_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = seed_project(tmp_path_factory.mktemp("greeting"))
    greeting_templates(root, GREETING)
    return root


@pytest.fixture(scope="module")
def signed(
    greeting_project: Path, keyfiles: dict[str, Path]
) -> tuple[config.Settings, Email, mdkim.Signer]:
    settings = config.load(
        greeting_project,
        environ={
            "MAILER_SECRET": SECRET,
            "MAILER_DKIM_KEY_FILE": str(keyfiles["rsa"]),
            "MAILER_DKIM_ED25519_KEY_FILE": str(keyfiles["ed25519"]),
        },
    )
    email = render(issue_mod.read(greeting_project / "issues" / "issue-2.md"), settings)
    signer = mdkim.load(settings)
    assert signer is not None
    return settings, email, signer


# -- keys ---------------------------------------------------------------------------------


def test_keys_load_with_their_selectors_domain_and_public_halves(
    signed: tuple[config.Settings, Email, mdkim.Signer], keyfiles: dict[str, Path]
) -> None:
    _, _, signer = signed
    rsa, ed = signer.keys
    assert (rsa.algorithm, rsa.selector, rsa.domain, rsa.bits) == (
        "rsa",
        "mail",
        "example.org",
        2048,
    )
    assert rsa.source == f"MAILER_DKIM_KEY_FILE: {keyfiles['rsa']}"
    assert (ed.algorithm, ed.selector, ed.domain, ed.bits) == (
        "ed25519",
        "mail-ed25519",
        "example.org",
        256,
    )
    assert rsa.dns_name == "mail._domainkey.example.org"
    assert ed.dns_name == "mail-ed25519._domainkey.example.org"
    # The p= values are what openssl says the public keys are (RFC 8463: raw 32 bytes).
    rsa_der = openssl("pkey", "-in", str(keyfiles["rsa"]), "-pubout", "-outform", "DER")
    assert rsa.dns_value == f"v=DKIM1; k=rsa; p={base64.b64encode(rsa_der).decode()}"
    ed_der = openssl("pkey", "-in", str(keyfiles["ed25519"]), "-pubout", "-outform", "DER")
    assert ed.dns_value == f"v=DKIM1; k=ed25519; p={base64.b64encode(ed_der[-32:]).decode()}"
    assert "PRIVATE" not in repr(rsa) and "private=" not in repr(rsa)


def test_key_formats_openssl_and_dkimpy_write(tmp_path: Path) -> None:
    pkcs8 = openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024")
    pkcs1 = openssl("pkey", "-traditional", data=pkcs8)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    a, b = dkim_keys.parse_key(pkcs8), dkim_keys.parse_key(pkcs1)
    assert a[0] == b[0] == "rsa" and a[2] == b[2] and a[3] == 1024
    ed_openssl = openssl("genpkey", "-algorithm", "ed25519")
    algorithm, key, public, bits = dkim_keys.parse_key(ed_openssl)
    assert (algorithm, bits) == ("ed25519", 256)
    der = openssl("pkey", "-pubout", "-outform", "DER", data=ed_openssl)
    assert public == base64.b64encode(der[-32:]).decode()
    # dkimpy's dknewkey writes an Ed25519 key as the bare base64 seed (PKCS#8's last 32 bytes).
    seed = openssl("pkey", "-outform", "DER", data=ed_openssl)[-32:]
    assert dkim_keys.parse_key(base64.b64encode(seed))[2] == public
    # Ours reads back in openssl.
    ours = dkim_keys.to_pem(key)
    assert openssl("pkey", "-pubout", "-outform", "DER", data=ours)[-32:] == der[-32:]


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: b"hello", "is not a private key in PEM form (-----BEGIN PRIVATE KEY-----)"),
        (
            lambda: b"-----BEGIN PRIVATE KEY-----\nMIIE\n",
            "is damaged: its PEM block has no matching END line",
        ),
        (
            lambda: b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
            "is damaged: its PEM block is not base64",
        ),
        (
            lambda: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "is damaged: its PKCS#8 structure does not parse",
        ),
        (
            lambda: openssl("pkey", "-pubout", data=openssl("genpkey", "-algorithm", "ed25519")),
            "is a public key: DKIM signs with the private half",
        ),
        (
            lambda: openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"),
            "holds a key of a type DKIM cannot use (only rsa and ed25519)",
        ),
        (
            lambda: openssl("genpkey", "-algorithm", "ed25519", "-aes-128-cbc", "-pass", "pass:x"),
            "is encrypted: mailer needs it unencrypted (openssl pkey -in KEY -out NEW)",
        ),
        (
            lambda: openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512"),
            "is a 512-bit RSA key: receivers refuse under 1024; use 2048",
        ),
    ],
)
def test_bad_keys_say_what_is_wrong(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(dkim_keys.BadKey) as err:
        dkim_keys.parse_key(make())
    assert str(err.value) == reason


def test_damaged_rsa_numbers_are_refused(keyfiles: dict[str, Path]) -> None:
    text = openssl("pkey", "-in", str(keyfiles["rsa"]), "-traditional")
    der = bytearray(base64.b64decode(b"".join(text.splitlines()[1:-1])))
    der[200] ^= 0x01  # inside a prime: the numbers no longer make a key
    pem = (
        b"-----BEGIN RSA PRIVATE KEY-----\n"
        + base64.encodebytes(bytes(der))
        + (b"-----END RSA PRIVATE KEY-----\n")
    )
    with pytest.raises(dkim_keys.BadKey, match="^is damaged: its RSA numbers do not make"):
        dkim_keys.parse_key(pem)


# -- signatures ---------------------------------------------------------------------------


def test_every_copy_verifies_with_both_keys(
    signed: tuple[config.Settings, Email, mdkim.Signer],
) -> None:
    settings, email, signer = signed
    composer = Composer(email, settings, signer=signer)
    lookup = dnsfunc_for(*signer.keys)
    for reader in TRICKY:
        raw = composer.compose(reader).data
        assert verify_all(raw, lookup) == [True, True], reader
        first, second = signature_tags(raw)
        assert (first["a"], first["s"]) == ("rsa-sha256", "mail")
        assert (second["a"], second["s"]) == ("ed25519-sha256", "mail-ed25519")
        for tags in (first, second):
            assert sorted(tags) == ["a", "b", "bh", "c", "d", "h", "s", "t", "v"]
            assert tags["c"] == "relaxed/relaxed" and tags["d"] == "example.org"
            assert tags["h"] == H_TAG and tags["h"].split(":").count("from") == 2
            assert abs(int(tags["t"]) - time.time()) < 600
        assert first["bh"] == second["bh"]
        assert all(len(line) <= 78 for line in raw.split(b"\r\n")[:20])


def test_the_piecewise_body_hash_is_dkimpys(
    signed: tuple[config.Settings, Email, mdkim.Signer],
) -> None:
    """The Composer hashes its constant runs canonicalised once and each value on its own:
    the result must be the hash of the whole body canonicalised by dkimpy."""
    settings, email, signer = signed
    composer = Composer(email, settings, signer=signer)
    for reader in TRICKY:
        raw = composer.compose(reader).data
        body = raw.split(b"\r\n\r\n", 1)[1]
        canonical = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        expected = base64.b64encode(hashlib.sha256(canonical.canonicalize_body(body)).digest())
        assert [t["bh"] for t in signature_tags(raw)] == [expected.decode()] * 2, reader
        assert mdkim.body_hash(body) == expected


def test_signing_changes_nothing_else(signed: tuple[config.Settings, Email, mdkim.Signer]) -> None:
    settings, email, signer = signed
    plain = Composer(email, settings)
    signing = Composer(email, settings, signer=signer)
    date = "Tue, 01 Dec 2026 09:00:00 +0000"
    for reader in TRICKY:
        a, b = plain.compose(reader, date), signing.compose(reader, date)
        assert a.message_id == b.message_id == plain.message_id(a.recipient)
        head = b.data.index(b"\r\nFrom: ") + 2
        assert b.data[:head].count(b"DKIM-Signature:") == 2
        assert b.data[head:] == a.data  # the same bytes, signatures on top


@pytest.mark.parametrize(
    "change",
    [
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x=y"),
        (b"\r\nFrom: ", b"\r\nFrom: Evil <evil@example.net>\r\nFrom: "),  # a second From
        (b"Reformer", b"Reformed"),  # the body
        (b"\r\nSubject: NLP", b"\r\nSubject: FREE"),
    ],
    ids=["list-unsubscribe-post", "added-from", "body", "subject"],
)
def test_a_change_after_signing_breaks_both_signatures(
    signed: tuple[config.Settings, Email, mdkim.Signer], change: tuple[bytes, bytes]
) -> None:
    settings, email, signer = signed
    raw = Composer(email, settings, signer=signer).compose(TRICKY[0]).data
    old, new = change
    assert raw.count(old) >= 1
    assert verify_all(raw.replace(old, new, 1), dnsfunc_for(*signer.keys)) == [False, False]


def test_list_unsubscribe_post_is_signed_only_when_present(
    greeting_project: Path, keyfiles: dict[str, Path]
) -> None:
    settings = config.load(
        greeting_project,
        environ={
            "MAILER_SECRET": SECRET,
            "MAILER_DKIM_KEY_FILE": str(keyfiles["ed25519"]),  # ed25519 alone, by its content
        },
    )
    settings = dataclasses.replace(settings, unsubscribe_url="", reply_to="")
    email = render(issue_mod.read(greeting_project / "issues" / "issue-2.md"), settings)
    signer = mdkim.load(settings)
    assert signer is not None and [(k.algorithm, k.selector) for k in signer.keys] == [
        ("ed25519", "mail")
    ]
    raw = Composer(email, settings, signer=signer).compose(TRICKY[1]).data
    assert b"List-Unsubscribe-Post" not in raw
    [tags] = signature_tags(raw)
    assert tags["h"] == (
        "from:to:subject:date:message-id:mime-version:content-type:list-id:list-unsubscribe:from"
    )
    assert verify_all(raw, dnsfunc_for(*signer.keys)) == [True]


# -- configuration errors -----------------------------------------------------------------


def _project(tmp_path: Path, toml_extra: str = "", dotenv: str = "") -> Path:
    root = tmp_path / "project"
    (root / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "issues" / "issue-2.md", root / "issues")
    (root / "mailer.toml").write_text(
        (ROOT / "mailer.toml").read_text(encoding="utf-8") + toml_extra, encoding="utf-8"
    )
    (root / "subscribers.csv").write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
    if dotenv:
        (root / ".env").write_text(dotenv, encoding="utf-8")
    return root


def _mailer(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    full.update(MAILER_SECRET=SECRET, **env)
    return subprocess.run(
        [str(MAILER), *args], cwd=root, env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "key,variable",
    [
        ("dkim_key", "MAILER_DKIM_KEY"),
        ("dkim_key_file", "MAILER_DKIM_KEY_FILE"),
        ("dkim_ed25519_key", "MAILER_DKIM_ED25519_KEY"),
        ("dkim_ed25519_key_file", "MAILER_DKIM_ED25519_KEY_FILE"),
    ],
)
def test_a_dkim_key_in_mailer_toml_is_refused(tmp_path: Path, key: str, variable: str) -> None:
    root = _project(tmp_path, f'{key} = "x"\n')
    done = _mailer(root, "send", "issue-2", "--dry-run")
    assert done.returncode == 2
    assert done.stderr == (
        f"Error: {root / 'mailer.toml'}: {key} does not belong in a file that is committed\n"
        f"  hint: put it in .env (git-ignored) as {variable}\n"
    )
    assert done.stdout == ""


@pytest.mark.slow
def test_bad_keys_stop_a_send_before_anything(tmp_path: Path, keyfiles: dict[str, Path]) -> None:
    root = _project(tmp_path)
    (root / "garbage.pem").write_text("not a key at all\n")
    missing = root / "nope.pem"
    cases = [
        (
            {"MAILER_DKIM_KEY_FILE": str(missing)},
            f"MAILER_DKIM_KEY_FILE: cannot read {missing}: No such file or directory",
        ),
        (
            {"MAILER_DKIM_KEY_FILE": str(root)},  # a folder
            f"MAILER_DKIM_KEY_FILE: cannot read {root}: Is a directory",
        ),
        (
            {"MAILER_DKIM_KEY_FILE": "garbage.pem"},  # relative: to the project
            f"MAILER_DKIM_KEY_FILE: {root / 'garbage.pem'} is not a private key in PEM form"
            " (-----BEGIN PRIVATE KEY-----)",
        ),
        (
            {"MAILER_DKIM_KEY": BAD_PEM},
            "MAILER_DKIM_KEY is damaged: its PEM block is not base64",
        ),
        (
            {"MAILER_DKIM_ED25519_KEY_FILE": str(keyfiles["rsa"])},
            f"MAILER_DKIM_ED25519_KEY_FILE: {keyfiles['rsa']} holds an rsa key, not an ed25519 one",
        ),
        (
            {
                "MAILER_DKIM_KEY_FILE": str(keyfiles["ed25519"]),
                "MAILER_DKIM_ED25519_KEY_FILE": str(keyfiles["ed25519"]),
            },
            f"MAILER_DKIM_KEY_FILE: {keyfiles['ed25519']} and MAILER_DKIM_ED25519_KEY_FILE:"
            f" {keyfiles['ed25519']} are both ed25519 keys:"
            " MAILER_DKIM_KEY_FILE is for the rsa key",
        ),
        (
            {"MAILER_DKIM_KEY_FILE": str(keyfiles["rsa"]), "MAILER_DKIM_KEY": "x"},
            "both MAILER_DKIM_KEY_FILE and MAILER_DKIM_KEY are set: keep one of them",
        ),
    ]
    commands = [("send", "issue-2", "--dry-run"), ("send", "issue-2", "--yes"), ("dns",)]
    for n, (env, message) in enumerate(cases):
        for args in commands if n in (0, 2) else commands[:1]:
            done = _mailer(root, *args, MAILER_SMTP_PORT="9", **env)
            assert (done.returncode, done.stderr) == (2, f"Error: {message}\n"), (args, env)
            assert "secret-ish" not in done.stdout + done.stderr
    assert not (root / "build").exists()  # nothing was rendered, let alone sent


def test_key_from_dotenv_multiline_and_escaped(tmp_path: Path, keyfiles: dict[str, Path]) -> None:
    pem = keyfiles["rsa"].read_text()
    for value in (f'"{pem}"', '"' + pem.strip().replace("\n", "\\n") + '"'):
        root = _project(tmp_path / str(len(value)), dotenv=f"MAILER_DKIM_KEY={value}\n")
        settings = config.load(root, environ={})
        signer = mdkim.load(settings)
        assert signer is not None and signer.keys[0].source == "MAILER_DKIM_KEY"
        assert settings.masked()["dkim_key"] == "********"
    one_line = pem.strip().replace("\n", "\\n")  # as a single-line environment variable
    settings = config.load(_project(tmp_path / "env"), environ={"MAILER_DKIM_KEY": one_line})
    assert mdkim.load(settings) is not None


# -- mailer dkim keygen -------------------------------------------------------------------


Keygen = Callable[..., tuple[int, str]]


@pytest.fixture
def keygen(mailer_cli: MailerCli) -> Keygen:
    """keygen(root, *args): `mailer -C root dkim keygen ARGS`, no MAILER_* variables set."""

    def run(root: Path, *args: str) -> tuple[int, str]:
        env = {k: None for k in os.environ if k.startswith("MAILER_")}
        result = mailer_cli(root, "dkim", "keygen", *args, env=env)
        return result.exit_code, result.output

    return run


RECORD = re.compile(
    r"^wrote \.mailer/dkim/(?P<file>[\w.-]+) \((?P<type>rsa|ed25519), (?P<bits>\d+) bits;"
    r" mode 0600: keep it secret, back it up\)\n"
    r"\n"
    r"1\. Publish this TXT record at your DNS host:\n"
    r"   name:  (?P<name>\S+)\n"
    r"   value: (?P<value>v=DKIM1; k=(?:rsa|ed25519); p=[A-Za-z0-9+/]+=*)\n"
    r"\n"
    r"2\. Add to \.env:\n"
    r"   (?P<env>MAILER_DKIM_(?:ED25519_)?KEY_FILE=\.mailer/dkim/[\w.-]+)\n"
    r"(?P<extra>(?:   .*\n)*)"
    r"\n"
    r"3\. `mailer dns --check` says when the record is live\.\n$"
)


def test_keygen_writes_a_private_key_and_prints_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keygen: Keygen
) -> None:
    monkeypatch.chdir(tmp_path)  # -C changes directory; this puts it back afterwards
    root = _project(tmp_path)
    code, out = keygen(root)
    assert code == 0, out
    match = RECORD.match(out)
    assert match, out
    path = root / ".mailer" / "dkim" / "mail.rsa.pem"
    assert match["file"] == "mail.rsa.pem" and match["type"] == "rsa" and match["bits"] == "2048"
    assert match["name"] == "mail._domainkey.example.org"
    assert match["env"] == "MAILER_DKIM_KEY_FILE=.mailer/dkim/mail.rsa.pem"
    assert match["extra"] == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    # The printed record is the key's public half, and the .env line makes mailer use it.
    (root / ".env").write_text(match["env"] + "\n")
    settings = config.load(root, environ={})
    [key] = dkim_keys.load_keys(settings)
    assert key.dns_value == match["value"] and key.bits == 2048
    # A second run refuses, and leaves the file alone.
    before = path.read_bytes()
    code, out = keygen(root)
    assert code == 2
    assert out == (
        "Error: .mailer/dkim/mail.rsa.pem exists: not replacing a key that may be in use\n"
        "  hint: --force replaces it (mail signed with the old one fails once DNS has the new);"
        " a new --selector lets both live in DNS while you switch\n"
    )
    assert path.read_bytes() == before
    code, out = keygen(root, "--force")
    assert code == 0 and RECORD.match(out)
    assert path.read_bytes() != before and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob(".*.tmp"))


def test_keygen_ed25519_and_another_selector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keygen: Keygen
) -> None:
    monkeypatch.chdir(tmp_path)
    root = _project(tmp_path)
    code, out = keygen(root, "--type", "ed25519")
    match = RECORD.match(out)
    assert code == 0 and match, out
    assert match["file"] == "mail-ed25519.ed25519.pem" and match["bits"] == "256"
    assert match["name"] == "mail-ed25519._domainkey.example.org"
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", match["value"])
    assert match["env"] == "MAILER_DKIM_ED25519_KEY_FILE=.mailer/dkim/mail-ed25519.ed25519.pem"
    assert match["extra"] == (
        "   (this signs beside the rsa key; to sign with it alone use MAILER_DKIM_KEY_FILE and"
        " MAILER_DKIM_SELECTOR=mail-ed25519 instead)\n"
    )
    path = root / ".mailer" / "dkim" / "mail-ed25519.ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out = keygen(root, "--selector", "news2026")
    match = RECORD.match(out)
    assert code == 0 and match, out
    assert match["name"] == "news2026._domainkey.example.org"
    assert match["extra"] == "   MAILER_DKIM_SELECTOR=news2026\n"
    code, out = keygen(root, "--selector", "no_underscores")
    assert code == 2
    assert out.endswith(
        "Error: Invalid value for --selector: 'no_underscores' is not a DNS label"
        " like 'mail' or 'news2026'\n"
    )


# -- a real send through Postfix ----------------------------------------------------------

READERS = ["ada@example.com", "zoe.martin@example.com", "Kurt.Godel@Example.com"]


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    with running_postfix() as server:
        yield server


@requires_postfix[0]
@requires_postfix[1]
def test_real_send_is_dual_signed_and_verp_addressed(
    postfix: Postfix, tmp_path: Path, keyfiles: dict[str, Path]
) -> None:
    project = _project(tmp_path)
    with (project / "subscribers.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name"])
        writer.writerows([(a, f"Reader {i}") for i, a in enumerate(READERS)])
    env = {
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(postfix.port),
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_FROM": "NLP Newsletter <newsletter@example.com>",
        "MAILER_STATE_DIR": str(tmp_path / "state"),
        "MAILER_DKIM_KEY_FILE": str(keyfiles["rsa"]),
        "MAILER_DKIM_ED25519_KEY_FILE": str(keyfiles["ed25519"]),
        "MAILER_BOUNCE_ADDRESS": "bounces@example.com",
    }
    done = _mailer(project, "send", "issue-2", "--yes", "--rate", "off", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 60
    while len(postfix.delivered()) < len(READERS) and time.monotonic() < deadline:
        time.sleep(0.1)
    files = postfix.delivered()
    assert len(files) == len(READERS), postfix.log()

    settings = config.load(project, environ={"MAILER_SECRET": SECRET, **env})
    keys = dkim_keys.load_keys(settings)
    assert [k.dns_name for k in keys] == [
        "mail._domainkey.example.com",
        "mail-ed25519._domainkey.example.com",
    ]
    lookup = dnsfunc_for(*keys)
    seen = set()
    with Ledger(settings.state_path) as ledger:
        for path in files:
            raw = path.read_bytes()  # as Postfix wrote it: LF line ends, its headers on top
            assert verify_all(raw, lookup) == [True, True], path
            message = message_from_bytes(raw)
            sigs = [" ".join(s.split()) for s in message.get_all("DKIM-Signature")]
            for sig in sigs:
                h = re.search(r"h=([^;]+);", sig)
                assert h is not None and h.group(1).replace(" ", "") == H_TAG
                assert " d=example.com;" in sig
            assert "a=rsa-sha256" in sigs[0] and "a=ed25519-sha256" in sigs[1]
            # The envelope sender Postfix recorded is the copy's VERP address.
            return_path = message["Return-Path"].strip("<>")
            reader = message["Delivered-To"].lower()
            assert return_path == verp.address(settings, "issue-2", reader)
            assert re.fullmatch(r"bounces\+[a-z2-7]{24}@example\.com", return_path)
            assert verp.parse(message["Return-Path"], settings, ledger) == ("issue-2", reader)
            seen.add(reader)
            # Tampering with what was delivered breaks both signatures.
            tampered = raw.replace(
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                b"List-Unsubscribe-Post: List-Unsubscribe=Two-Click",
            )
            assert tampered != raw and verify_all(tampered, lookup) == [False, False]
            body_changed = raw.replace(b"Reformer", b"Reformed", 1)
            assert body_changed != raw and verify_all(body_changed, lookup) == [False, False]
    assert seen == {a.lower() for a in READERS}
    log = postfix.log()
    assert log.count("status=sent (delivered to maildir)") == len(READERS), log
