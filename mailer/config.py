"""Settings, validated in one place: defaults < mailer.toml < .env < environment < flags."""

from __future__ import annotations

import difflib
import io
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from mailer.errors import ConfigError
from mailer.values import (
    DURATION,
    RATE,
    SECONDS,
    Bounds,
    brand_warnings,
    check_brand,
    check_database_url,
    to_bool,
    to_list,
    url_has_password,
    written,
)
from mailer.values import LIGHT_BACKGROUND as LIGHT_BACKGROUND
from mailer.values import format_duration as format_duration
from mailer.values import format_rate as format_rate
from mailer.values import masked_url as masked_url
from mailer.values import parse_duration as parse_duration
from mailer.values import parse_rate as parse_rate

CONFIG_FILE = "mailer.toml"
ENV_PREFIX = "MAILER_"
SECRET_KEYS = frozenset(
    {"smtp_password", "secret", "bounce_imap_password", "dkim_key", "dkim_ed25519_key"}
)
# Never read from mailer.toml: the secrets, and where the DKIM private keys are (per machine).
ENV_ONLY_KEYS = SECRET_KEYS | {"dkim_key_file", "dkim_ed25519_key_file"}
SECURITY_MODES = ("starttls", "ssl", "none")
TRANSPORTS = ("smtp", "ses")  # ses: Amazon SES v2's API (mailer/deliver/transports/ses.py)
PIPELINING_MODES = ("auto", "off")  # auto: RFC 2920 when the server advertises PIPELINING
MAX_PIPELINE_DEPTH = 2  # DATA must wait for its 354: more cannot be in flight without BDAT
DAY = 86400.0
# The sane range of every numeric setting, both ends included: checked as each value is read,
# named in the error, listed in the README's settings table. Past them a value is a typo or an
# attack (1e10 seconds overflows the socket layer; 100,000 connections exhaust the machine).
BOUNDS = {
    "smtp_port": Bounds(1, 65535),
    "smtp_timeout": Bounds(1, 3600, SECONDS),
    "pipeline_depth": Bounds(1, MAX_PIPELINE_DEPTH),
    "claim_timeout": Bounds(1, DAY, DURATION),
    "rate": Bounds(1 / 3600, 100_000, RATE),
    "batch_size": Bounds(1, 100_000),
    "pause": Bounds(0, 3600, SECONDS),
    "connections": Bounds(1, 100),
    "max_attempts": Bounds(1, 100),
    "retry_delay": Bounds(0, DAY, SECONDS),
    "max_late": Bounds(60, 365 * DAY, DURATION),
    "retry_window": Bounds(0, DAY, DURATION),
    "give_up_after": Bounds(60, 365 * DAY, DURATION),
    "circuit_breaker": Bounds(1, 1000),
    "soft_bounce_limit": Bounds(1, 100),
    "bounce_imap_port": Bounds(1, 65535),
    "confirm_within": Bounds(60, 365 * DAY, DURATION),
    "signup_rate": Bounds(1, 10_000),
    "confirm_per_hour": Bounds(1, 100_000),
}
# MAILER_* variables that are mailer's own but not settings: no "not a setting" warning.
OWN_VARIABLES = frozenset({"MAILER_NOW"})

# `subscribers = "store"`: the list lives in the state store (the ledger's database), shared
# by the web app and every sender, instead of a CSV file.
STORE = "store"

# The bundled example list, and who stands in for a reader or a sender in previews and samples.
EXAMPLE_SUBSCRIBERS = "subscribers.example.csv"
EXAMPLE_READER = "reader@example.org"
EXAMPLE_FROM = "Newsletter <newsletter@example.org>"

# Used only when MAILER_SECRET is unset, so a dry run of the bundled example needs no secrets.
# A real send refuses to run with it (see send.preflight).
DEV_SECRET = "mailer-dev-secret-not-for-real-sends"

# The built-in template's card, in light and dark mode: what the accent colour is read on.
DARK_BACKGROUND = "#161b22"


@dataclass(frozen=True)
class Settings:
    """Everything mailer can be told; each field is also MAILER_<NAME> and a mailer.toml key."""

    # Where messages go: smtp (below), or ses (region and credentials from the standard
    # AWS_* variables; the account's MaxSendRate caps `rate`).
    transport: str = "smtp"
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_verify: bool = True
    smtp_timeout: float = 30.0
    # RFC 2920: auto pipelines when the server's EHLO offers PIPELINING; off waits for every
    # reply (the escape hatch for a server that mishandles it). pipeline_depth: transactions
    # in flight per connection: 1 groups MAIL, RCPT and DATA; 2 also sends the next
    # message's envelope with the previous body (one round trip a message, RFC 2920 3.1).
    smtp_pipelining: str = "auto"
    pipeline_depth: int = 2
    from_: str = ""
    reply_to: str = ""
    list_id: str = ""
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    archive_url: str = ""
    base_url: str = ""
    # The signup form (mailer/web/signup.py): subscribe_url is its public URL (also linked
    # by the archive and the email's footer); with double_opt_in a signup is pending until
    # its link is followed within confirm_within; `welcome` is the issue each reader gets
    # once, when confirmed. signup_rate: POSTs a minute per client; confirm_per_hour caps
    # the mails the form causes; trusted_proxies: whose X-Forwarded-For is believed.
    subscribe_url: str = ""
    double_opt_in: bool = True
    confirm_within: timedelta = timedelta(days=7)
    welcome: str = ""
    signup_rate: int = 5
    confirm_per_hour: int = 100
    trusted_proxies: tuple[str, ...] = field(default=(), metadata={"kind": "list"})
    secret: str = ""
    postal_address: str = ""
    # The look of the built-in template, all optional. name: the newsletter's name (From's
    # display name if unset); logo: an https image shown in the masthead instead of the name;
    # accent_color: #rrggbb for links, rules and buttons.
    name: str = ""
    logo: str = ""
    accent_color: str = ""
    state_dir: str = ".mailer"
    # postgresql://user@host/db: the ledger, suppressions, schedules and locks live there,
    # shared by several senders and the web app; the password only from .env/environment.
    # Empty: one SQLite file in state_dir.
    database_url: str = ""
    # With database_url, several `mailer send` may share a list: a sender holds the readers
    # it claimed this long without a heartbeat (one every 2 s renews it); a crashed
    # sender's readers go to the others after it.
    claim_timeout: timedelta = timedelta(seconds=60)
    templates: str = ""
    # A CSV file (relative to the project), or STORE: the readers in the state store.
    subscribers: str = "subscribers.csv"
    lang: str = "en"
    name_fallback: str = "there"
    # Parsed values: messages per second (inf: no limit), and durations.
    rate: float = 10.0
    batch_size: int = 100
    pause: float = 0.0
    connections: int = 1
    max_attempts: int = 5
    retry_delay: float = 30.0
    max_late: timedelta = timedelta(hours=24)
    # Postfix's queue model: in-run retries only within retry_window after the last fresh
    # reader was tried; later runs (cron) retry the rest; after give_up_after they fail.
    retry_window: timedelta = timedelta(minutes=2)
    give_up_after: timedelta = timedelta(days=3)
    # This many timeouts or dropped connections in a row, across readers, stop the run.
    circuit_breaker: int = 5
    # `mailer bounces`: this many soft bounces on consecutive issues suppress a reader;
    # --imap reads this mailbox over TLS (the password only from .env or the environment,
    # the CA file only to trust a private CA, as the tests do).
    soft_bounce_limit: int = 3
    bounce_imap_host: str = ""
    bounce_imap_port: int = 993
    bounce_imap_user: str = ""
    bounce_imap_password: str = ""
    bounce_imap_folder: str = "INBOX"
    bounce_imap_cafile: str = ""
    # Deliverability (deliver/dkim.py, deliver/verp.py, `mailer dns`). DKIM signs with the key
    # in MAILER_DKIM_KEY_FILE or MAILER_DKIM_KEY (rsa, or ed25519 by its content) under
    # dkim_selector, and with MAILER_DKIM_ED25519_KEY(_FILE) too under dkim_ed25519_selector
    # (default "<dkim_selector>-ed25519"); dkim_domain defaults to the From domain. The keys
    # come only from .env or the environment. bounce_address is the envelope sender; with
    # verp each copy's is bounces+TOKEN@domain. dns_resolver: "host[:port]" for `mailer dns`.
    dkim_selector: str = "mail"
    dkim_ed25519_selector: str = ""
    dkim_domain: str = ""
    dkim_key_file: str = ""
    dkim_key: str = ""
    dkim_ed25519_key_file: str = ""
    dkim_ed25519_key: str = ""
    bounce_address: str = ""
    verp: bool = True
    dns_resolver: str = ""
    # Where the settings were read from, for `mailer config`; not a setting itself.
    root: Path = field(default=Path("."), compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # What the user should hear about (a misspelt MAILER_* variable); the CLI prints them.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def state_path(self) -> Path:
        """The state directory (ledger, locks), relative paths taken from the project root."""
        return self.root / self.state_dir

    @property
    def list_id_effective(self) -> str:
        """The list id: `list_id`, else the From address's domain (tokens are bound to it)."""
        if self.list_id:
            return self.list_id
        address = parseaddr(self.from_)[1]
        return address.rsplit("@", 1)[1] if "@" in address else ""

    @property
    def list_name(self) -> str:
        """What readers call the list: `name`, else From's display name, else the list id."""
        return self.name or parseaddr(self.from_)[0] or self.list_id_effective or "this newsletter"

    @property
    def welcome_slug(self) -> str:
        """The slug of the `welcome` issue ("" if none): never part of a regular send."""
        return Path(self.welcome).stem if self.welcome else ""

    @property
    def signing_secret(self) -> str:
        """MAILER_SECRET, or the development secret that only dry runs accept."""
        return self.secret or DEV_SECRET

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets masked, for printing."""
        out = {}
        for f in _setting_fields():
            value = getattr(self, f.name)
            text = "********" if f.name in SECRET_KEYS and value else show(f, value)
            if f.name == "database_url":
                text = masked_url(value)
            out[_key(f.name)] = text
        return out


def show(f: Field[Any], value: Any) -> str:
    """A setting's value as a user would write it: '10/s', '24h', 'true', 'a, b'."""
    return written(value, rate=f.name == "rate")


def _setting_fields() -> list[Field[Any]]:
    return [f for f in fields(Settings) if f.name not in ("root", "sources", "warnings")]


def _key(name: str) -> str:
    return name.rstrip("_")


def env_name(name: str) -> str:
    """The environment variable for a setting: from_ -> MAILER_FROM."""
    return ENV_PREFIX + _key(name).upper()


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder upwards holding mailer.toml or issues/, else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file() or (folder / "issues").is_dir():
            return folder
    return here


def load(
    root: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the settings for a project; `overrides` are flags (None values mean 'not given')."""
    root = find_root(root)
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Mapping[str, Any]]] = []
    warnings: list[str] = []

    toml_path = root / CONFIG_FILE
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path}: {exc}") from None
        layers.append((CONFIG_FILE, _from_toml(data, toml_path)))

    env_file = root / ".env"
    if env_file.is_file():
        dotenv, unreadable = _read_dotenv(env_file)
        layers.append((".env", _from_env(dotenv)))
        warnings += [f"{env_file}:{n}: not NAME=value: this line is ignored" for n in unreadable]
        warnings += _unknown_variables(dotenv, env_file)
    layers.append(("environment", _from_env(environ)))
    warnings += _unknown_variables(environ)
    if overrides:
        layers.append(("flag", {k: v for k, v in overrides.items() if v is not None}))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    known = {f.name: f for f in _setting_fields()}
    for source, layer in layers:
        for name, raw in layer.items():
            values[name] = _coerce(known[name], raw, source)
            sources[_key(name)] = source
    settings = Settings(root=root, sources=sources, warnings=tuple(warnings), **values)
    _validate(settings)
    return replace(settings, warnings=(*warnings, *brand_warnings(settings.accent_color)))


# python-dotenv logs a warning of its own for a line it cannot parse, naming neither the file
# nor what becomes of the line; _read_dotenv says both, as one of mailer's warnings, instead.
logging.getLogger("dotenv.main").addFilter(lambda record: False)


def _read_dotenv(env_file: Path) -> tuple[dict[str, str], list[int]]:
    """The variables .env sets, and the numbers of the lines python-dotenv cannot parse."""
    try:
        text = env_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{env_file}: not UTF-8 text (an undecodable byte at offset {exc.start})",
            hint="save .env as UTF-8",
        ) from None
    unreadable = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}, unreadable


def _from_toml(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    known = {_key(f.name): f.name for f in _setting_fields()}
    out = {}
    for key, value in data.items():
        name = known.get(key.lower())
        if name in ENV_ONLY_KEYS:
            raise ConfigError(
                f"{path}: {key} does not belong in a file that is committed",
                hint=f"put it in .env (git-ignored) as {env_name(name)}",
            )
        if name is None:
            close = difflib.get_close_matches(key.lower(), list(known), n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{path}: unknown setting {key!r}{guess}",
                hint="`mailer config` lists every setting",
            )
        if name == "database_url" and url_has_password(str(value)):
            raise ConfigError(
                f"{path}: {key} holds a password, and this file is committed",
                hint="keep the URL here without it and set PGPASSWORD in .env, or put"
                " the whole URL in .env as MAILER_DATABASE_URL",
            )
        out[name] = value
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for f in _setting_fields():
        value = environ.get(env_name(f.name))
        if value is not None and value != "":
            out[f.name] = value
    return out


def _unknown_variables(variables: Mapping[str, Any], env_file: Path | None = None) -> list[str]:
    """A warning for each MAILER_* variable that is no setting, with the closest name."""
    known = [env_name(f.name) for f in _setting_fields()]
    out = []
    for name in sorted(variables):
        if not name.startswith(ENV_PREFIX) or name in known or name in OWN_VARIABLES:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        where = ""
        if env_file is not None:
            line = _line_of(env_file, name)
            where = f"{env_file}:{line}: " if line else f"{env_file}: "
        out.append(f"{where}{name} is not a setting{guess}")
    return out


def _line_of(env_file: Path, name: str) -> int | None:
    """The line of .env that sets `name` (the last one, as python-dotenv lets it win)."""
    pattern = re.compile(rf"^\s*(?:export\s+)?{re.escape(name)}\s*=")
    found = None
    # The file was read as UTF-8 a moment ago, so this cannot fail to decode.
    for number, text in enumerate(env_file.read_text(encoding="utf-8").splitlines(), 1):
        if pattern.match(text):
            found = number
    return found


def _coerce(f: Field[Any], raw: Any, source: str) -> Any:
    """One raw value (TOML, environment text, a flag) -> the setting's type, or ConfigError."""
    bounds = BOUNDS.get(f.name)
    try:
        if bounds is not None:
            return bounds.parse(raw)
        if f.metadata.get("kind") == "list":
            return to_list(raw)
        if isinstance(f.default, bool):
            return to_bool(raw)
        if not isinstance(raw, str | int | float):
            raise ValueError(raw)
        return str(raw)
    except (ValueError, ConfigError):
        what = "true or false" if isinstance(f.default, bool) else "text"
        raise ConfigError(
            f"setting {_key(f.name)} (from {source}) must be"
            f" {bounds.describe() if bounds else what}, got {raw!r}",
            hint=f"set it in {CONFIG_FILE} or as {env_name(f.name)}",
        ) from None


def _validate(s: Settings) -> None:
    if s.smtp_security not in SECURITY_MODES:
        raise ConfigError(
            f"smtp_security must be one of {', '.join(SECURITY_MODES)}, got {s.smtp_security!r}"
        )
    if s.database_url:
        check_database_url(s.database_url)
    if s.transport not in TRANSPORTS:
        raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, got {s.transport!r}")
    if s.smtp_pipelining not in PIPELINING_MODES:
        raise ConfigError(
            f"smtp_pipelining must be one of {', '.join(PIPELINING_MODES)},"
            f" got {s.smtp_pipelining!r}"
        )
    for name in ("unsubscribe_url", "archive_url", "base_url", "subscribe_url"):
        url = getattr(s, name)
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    check_brand(s.logo, s.accent_color)
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"trusted_proxies: {proxy!r} is not an address or a CIDR like 10.0.0.0/8"
            ) from None
    _validate_deliverability(s)


MAX_VERP_LOCAL = 39  # mailer/deliver/verp.py: 64 octets - "+" - its 24-character token
SELECTOR_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")
_RESOLVER = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s\[\]]+))(?::(?P<port>\d+))?$")


def _validate_deliverability(s: Settings) -> None:
    """The DKIM selectors and domain, the bounce address and the DNS resolver's form."""
    for name in ("dkim_selector", "dkim_ed25519_selector", "dkim_domain"):
        value = getattr(s, name)
        if value and not SELECTOR_RE.match(value):
            raise ConfigError(f"{name} must be DNS labels like 'mail' or 'news2026', got {value!r}")
    if s.bounce_address:
        local, _, domain = s.bounce_address.rpartition("@")
        if not local or "." not in domain or parseaddr(s.bounce_address)[1] != s.bounce_address:
            raise ConfigError(
                f"bounce_address must be a bare address like bounces@example.org,"
                f" got {s.bounce_address!r}"
            )
        if s.verp and len(local.encode()) > MAX_VERP_LOCAL:
            raise ConfigError(
                f"bounce_address {s.bounce_address!r}: with verp its local part may have at most"
                f" {MAX_VERP_LOCAL} characters (RFC 5321 allows 64; +TOKEN takes 25)",
                hint="use a shorter address like bounces@, or set verp = false",
            )
    match = _RESOLVER.match(s.dns_resolver) if s.dns_resolver else None
    if s.dns_resolver and (match is None or not 0 < int(match["port"] or 53) < 65536):
        raise ConfigError(
            f"dns_resolver must be host[:port] like 127.0.0.1:5353, got {s.dns_resolver!r}"
        )


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy with some settings changed (None values ignored), parsed and validated again."""
    known = {f.name: f for f in _setting_fields()}
    parsed = {k: _coerce(known[k], v, "flag") for k, v in changes.items() if v is not None}
    new = replace(settings, **parsed)
    _validate(new)
    return new
