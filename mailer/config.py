"""Settings, validated in one place: defaults < mailer.toml < .env < environment < flags."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from .errors import ConfigError

CONFIG_FILE = "mailer.toml"
ENV_PREFIX = "MAILER_"
SECRET_KEYS = frozenset({"smtp_password", "secret"})
SECURITY_MODES = ("starttls", "ssl", "none")

# The bundled example list, and who stands in for a reader or a sender in previews and samples.
EXAMPLE_SUBSCRIBERS = "subscribers.example.csv"
EXAMPLE_READER = "reader@example.org"
EXAMPLE_FROM = "Newsletter <newsletter@example.org>"

# Used only when MAILER_SECRET is unset, so a dry run of the bundled example needs no secrets.
# A real send refuses to run with it (see send.preflight).
DEV_SECRET = "mailer-dev-secret-not-for-real-sends"


@dataclass(frozen=True)
class Settings:
    """Everything mailer can be told; each field is also MAILER_<NAME> and a mailer.toml key."""

    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_verify: bool = True
    smtp_timeout: float = 30.0
    from_: str = ""
    reply_to: str = ""
    list_id: str = ""
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    archive_url: str = ""
    base_url: str = ""
    secret: str = ""
    postal_address: str = ""
    state_dir: str = ".mailer"
    templates: str = ""
    subscribers: str = "subscribers.csv"
    lang: str = "en"
    name_fallback: str = "there"
    rate: str = "10/s"
    batch_size: int = 100
    pause: float = 0.0
    connections: int = 1
    max_attempts: int = 5
    retry_delay: float = 30.0
    max_late: str = "24h"
    # Where the settings were read from, for `mailer config`; not a setting itself.
    root: Path = field(default=Path("."), compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

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
        """What readers call the list: From's display name, else the list id."""
        return parseaddr(self.from_)[0] or self.list_id_effective or "this newsletter"

    @property
    def signing_secret(self) -> str:
        """MAILER_SECRET, or the development secret that only dry runs accept."""
        return self.secret or DEV_SECRET

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets masked, for printing."""
        out = {}
        for f in _setting_fields():
            value = getattr(self, f.name)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if f.name in SECRET_KEYS and value:
                text = "********"
            out[_key(f.name)] = text
        return out


def _setting_fields() -> list[Any]:
    return [f for f in fields(Settings) if f.name not in ("root", "sources")]


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

    toml_path = root / CONFIG_FILE
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path}: {exc}") from None
        layers.append((CONFIG_FILE, _from_toml(data, toml_path)))

    env_file = root / ".env"
    if env_file.is_file():
        dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        layers.append((".env", _from_env(dotenv)))
    layers.append(("environment", _from_env(environ)))
    if overrides:
        layers.append(("flag", {k: v for k, v in overrides.items() if v is not None}))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    known = {f.name: f for f in _setting_fields()}
    for source, layer in layers:
        for name, raw in layer.items():
            values[name] = _coerce(known[name], raw, source)
            sources[_key(name)] = source
    settings = Settings(root=root, sources=sources, **values)
    _validate(settings)
    return settings


def _from_toml(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    known = {_key(f.name): f.name for f in _setting_fields()}
    out = {}
    for key, value in data.items():
        name = known.get(key.lower())
        if name in SECRET_KEYS:
            raise ConfigError(
                f"{path}: {key} does not belong in a file that is committed",
                hint=f"put it in .env (git-ignored) as {env_name(name)}",
            )
        if name is None:
            raise ConfigError(
                f"{path}: unknown setting {key!r}", hint="`mailer config` lists every setting"
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


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _coerce(f: Any, raw: Any, source: str) -> Any:
    kind = type(f.default)
    where = f"{_key(f.name)} (from {source})"
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        if not isinstance(raw, str | int | float):
            raise ValueError
        return str(raw)
    except ValueError:
        raise ConfigError(
            f"setting {where} must be {_KIND_NAMES.get(kind, kind.__name__)}, got {raw!r}",
            hint=f"set it in {CONFIG_FILE} or as {env_name(f.name)}",
        ) from None


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.I)


def parse_rate(text: str) -> float:
    """'20/s', '600/min', '1000/h' -> messages per second; '0' or 'off' means unlimited (inf)."""
    if text.strip().lower() in ("0", "off", "none", "unlimited"):
        return float("inf")
    match = _RATE.match(text)
    if not match:
        raise ConfigError(f"rate {text!r} is not of the form N/s, N/min or N/h (or 'off')")
    if float(match.group(1)) <= 0:
        raise ConfigError(f"rate {text!r} must be more than zero (or 'off' for no limit)")
    per = {"s": 1, "m": 60, "h": 3600}[match.group(2)[0].lower()]
    return float(match.group(1)) / per


def parse_duration(text: str) -> float:
    """'90s', '15m', '24h', '2d' or plain seconds -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"duration {text!r} is not of the form 90s, 15m, 24h or 2d")
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _validate(s: Settings) -> None:
    if s.smtp_security not in SECURITY_MODES:
        raise ConfigError(
            f"smtp_security must be one of {', '.join(SECURITY_MODES)}, got {s.smtp_security!r}"
        )
    if not 0 < s.smtp_port < 65536:
        raise ConfigError(f"smtp_port must be 1-65535, got {s.smtp_port}")
    for name in ("batch_size", "connections", "max_attempts"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(s, name)}")
    if s.smtp_timeout <= 0:
        raise ConfigError(f"smtp_timeout must be more than 0 seconds, got {s.smtp_timeout}")
    if s.pause < 0 or s.retry_delay < 0:
        raise ConfigError("pause and retry_delay must not be negative")
    for name, parse in (("rate", parse_rate), ("max_late", parse_duration)):
        try:
            parse(getattr(s, name))
        except ConfigError as exc:
            raise ConfigError(f"setting {name}: {exc.message}") from None
    for name in ("unsubscribe_url", "archive_url", "base_url"):
        url = getattr(s, name)
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy with some settings changed (None values ignored), validated again."""
    new = replace(settings, **{k: v for k, v in changes.items() if v is not None})
    _validate(new)
    return new
