"""Reasons not to send an issue at all: checked before a real send, shown by the preview."""

from __future__ import annotations

from email.utils import parseaddr

from mailer.compose.render import Email
from mailer.config import DEV_SECRET, Settings
from mailer.errors import ConfigError, PreflightError

MIN_SECRET_CHARS = 16
# Values copied from examples and tutorials: whoever reads them could sign unsubscribe links.
PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "your-secret")
MAKE_ONE = 'make one: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


def check_secret(settings: Settings) -> None:
    """Refuse a real send with a placeholder or short MAILER_SECRET (ConfigError, exit 2).

    Unsubscribe links, VERP addresses and Message-IDs are signed with it: a guessable secret
    lets anyone unsubscribe any reader or forge a bounce for them. An empty secret is a
    preflight reason instead (listed with the others).
    """
    secret = settings.secret
    if not secret:
        return
    lowered = secret.strip().lower()
    if secret == DEV_SECRET or any(p in lowered for p in PLACEHOLDERS) or len(set(lowered)) < 5:
        raise ConfigError("MAILER_SECRET is a placeholder: anyone could sign links", hint=MAKE_ONE)
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"MAILER_SECRET has {len(secret)} characters: use at least {MIN_SECRET_CHARS}",
            hint=MAKE_ONE,
        )


def preflight(email: Email, settings: Settings, *, dry_run: bool) -> list[str]:
    """Reasons not to send at all; warnings are the caller's to show."""
    reasons = []
    address = parseaddr(settings.from_)[1]
    if not settings.from_:
        reasons.append("no From address: set `from` in mailer.toml or MAILER_FROM")
    elif "@" not in address:
        reasons.append(f"From must look like 'Name <news@example.org>', not {settings.from_!r}")
    unfilled = email.unfilled()
    if unfilled:
        reasons.append(
            f"the rendered issue still holds unfilled template syntax: {', '.join(unfilled[:5])}"
        )
    if not email.has_unsubscribe_link():
        reasons.append("the template has no {{ unsubscribe_url }} link (in both HTML and text)")
    if not settings.unsubscribe_url:
        reasons.append(
            "no unsubscribe URL: set `unsubscribe_url` in mailer.toml or MAILER_UNSUBSCRIBE_URL"
        )
    if not dry_run and not settings.secret:
        reasons.append(
            "no MAILER_SECRET: unsubscribe links must be signed with your own secret (.env)"
        )
    return reasons


def check_preflight(email: Email, settings: Settings, *, dry_run: bool) -> None:
    """Raise PreflightError listing every reason not to send."""
    reasons = preflight(email, settings, dry_run=dry_run)
    if reasons:
        raise PreflightError(reasons)
