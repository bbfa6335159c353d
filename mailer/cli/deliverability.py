"""`mailer dkim keygen` and `mailer dns`: the keys and DNS records that get mail delivered."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from mailer.cli.common import Context, pass_ctx, shown
from mailer.config import SELECTOR_RE, Settings, env_name
from mailer.deliver import dkim_keys as dkim_mod
from mailer.deliver import dnsrecords
from mailer.errors import ConfigError, MailerError


@click.group("dkim")
def dkim() -> None:
    """DKIM signing keys (see also `mailer dns`).

    \b
    mailer signs every message with the key in MAILER_DKIM_KEY_FILE (or MAILER_DKIM_KEY),
    and with a second, ed25519 key in MAILER_DKIM_ED25519_KEY_FILE when that is set too.
    """


@dkim.command("keygen")
@click.option(
    "--type",
    "key_type",
    type=click.Choice([dkim_mod.RSA, dkim_mod.ED25519]),
    default=dkim_mod.RSA,
    show_default=True,
    help="rsa (2048 bits, what every receiver verifies) or ed25519 (RFC 8463, signed beside "
    "an rsa key: few receivers verify it alone).",
)
@click.option(
    "--selector",
    help="The DKIM selector (the record is SELECTOR._domainkey.DOMAIN) "
    "[dkim_selector for rsa, dkim_ed25519_selector for ed25519].",
)
@click.option("--force", is_flag=True, help="Replace a key file that already exists.")
@pass_ctx
def keygen(ctx: Context, key_type: str, selector: str | None, force: bool) -> None:
    """Make a DKIM private key, and print the DNS record and the .env line for it.

    The key goes to the state directory as dkim/SELECTOR.TYPE.pem, readable by its owner
    only (0600). An existing file is never replaced without --force.
    """
    s = ctx.settings
    default = s.dkim_selector if key_type == dkim_mod.RSA else dkim_mod.ed25519_selector(s)
    selector = selector or default
    if not SELECTOR_RE.match(selector):
        raise click.BadParameter(
            f"{selector!r} is not a DNS label like 'mail' or 'news2026'", param_hint="--selector"
        )
    domain = dkim_mod.signing_domain(s)
    if not domain:
        raise ConfigError(
            "the key's DNS record is named after the From domain, and there is no From address",
            hint="set `from` in mailer.toml (or dkim_domain) first",
        )
    path = s.state_path / "dkim" / f"{selector}.{key_type}.pem"
    if path.exists() and not force:
        raise MailerError(
            f"{shown(path, s.root)} exists: not replacing a key that may be in use",
            hint="--force replaces it (mail signed with the old one fails once DNS has the new);"
            " a new --selector lets both live in DNS while you switch",
        )
    pem, public = dkim_mod.generate(key_type)
    _write_private(path, pem, replace=force)
    bits = dkim_mod.RSA_BITS if key_type == dkim_mod.RSA else 256
    second = key_type == dkim_mod.ED25519
    file_var = env_name("dkim_ed25519_key_file" if second else "dkim_key_file")
    selector_var = env_name("dkim_ed25519_selector" if second else "dkim_selector")
    where = shown(path, s.root)
    click.echo(f"wrote {where} ({key_type}, {bits} bits; mode 0600: keep it secret, back it up)")
    click.echo()
    click.echo("1. Publish this TXT record at your DNS host:")
    click.echo(f"   name:  {selector}._domainkey.{domain}")
    click.echo(f"   value: {dkim_mod.dns_value(key_type, public)}")
    click.echo()
    click.echo("2. Add to .env:")
    click.echo(f"   {file_var}={where}")
    if selector != default:
        click.echo(f"   {selector_var}={selector}")
    if second:
        click.echo(
            f"   (this signs beside the rsa key; to sign with it alone use"
            f" {env_name('dkim_key_file')} and {env_name('dkim_selector')}={selector} instead)"
        )
    click.echo()
    click.echo("3. `mailer dns --check` says when the record is live.")


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write a private key readable by its owner only; never over a file unless `replace`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if the file appeared meanwhile
    except FileExistsError:
        raise MailerError(f"{path} exists: not replacing it", hint="--force replaces it") from None
    except OSError as exc:
        raise MailerError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


@click.command("dns")
@click.option(
    "--check",
    is_flag=True,
    help="Look the records up (the system's resolver, or MAILER_DNS_RESOLVER=host:port) and "
    "say for each: ok, missing or wrong (and what differs). Exit status 0 when all are ok, "
    "1 when one is missing or wrong, 69 when the DNS did not answer.",
)
@pass_ctx
def dns(ctx: Context, check: bool) -> None:
    """Print the DNS TXT records to publish: SPF, DKIM (from the configured keys), DMARC.

    \b
    SPF is for the envelope sender's domain (bounce_address, else From), DKIM for
    SELECTOR._domainkey.DOMAIN of each key, DMARC for _dmarc.<From domain>.
    With --check: exit status 0 when every record is ok, 1 when any is missing or
    wrong, 69 when the DNS server did not answer.
    """
    s = ctx.settings
    keys = dkim_mod.load_keys(s)
    if check:
        verdicts = dnsrecords.check(s, keys)
        for verdict in verdicts:
            click.echo(verdict.line())
        code = dnsrecords.exit_code(verdicts)
        bad = [v for v in verdicts if v.state != dnsrecords.OK]
        if not bad:
            click.echo(f"all {len(verdicts)} records ok")
        else:
            counts = ", ".join(
                f"{sum(v.state == state for v in bad)} {state}"
                for state in (dnsrecords.MISSING, dnsrecords.WRONG, dnsrecords.ERROR)
                if any(v.state == state for v in bad)
            )
            click.echo(f"{counts}: `mailer dns` prints what to publish", err=True)
        raise click.exceptions.Exit(code)
    _print_records(s, keys)


def _print_records(s: Settings, keys: tuple[dkim_mod.Key, ...]) -> None:
    domain = dnsrecords.from_domain(s)
    click.echo(f"# TXT records for {domain}: publish each at your DNS host (its name, its value).")
    click.echo("# `mailer dns --check` looks them up and says which are live.")
    for record in dnsrecords.records(s, keys):
        click.echo()
        for note in record.notes:
            click.echo(f"# {note}")
        if record.value:
            click.echo(f"name:  {record.name}")
            click.echo(f"value: {record.value}")
