"""Reasons not to send an issue at all: checked before a real send, shown by the preview."""

from __future__ import annotations

from email.utils import parseaddr

from mailer.compose import fields
from mailer.compose.render import Email
from mailer.config import DEV_SECRET, EXAMPLE_SUBSCRIBERS, Settings
from mailer.errors import ConfigError, InputError, PreflightError
from mailer.state.subscribers import SubscriberList

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


def check_issue_fields(email: Email, settings: Settings) -> None:
    """InputError (65) for a merge field in the issue that the list has no column for, where
    no list is given (a build, a test copy): the configured list, else the bundled example."""
    written = email.issue.fields
    listing = _list_columns(settings) if written else None
    if listing is not None:
        columns, source = listing
        fields.check(written, sorted(columns), path=email.issue.path, source=source)


def _list_columns(settings: Settings) -> tuple[set[str], str] | None:
    """The merge-field columns of the list a send reads (`subscribers`, else the bundled
    example) and its name; no columns without a list; None when the list cannot be read."""
    for path in (settings.root / settings.subscribers, settings.root / EXAMPLE_SUBSCRIBERS):
        if path.is_file():
            try:
                return set(SubscriberList(path).columns), path.name
            except InputError:
                return None  # the send itself says what is wrong with it
    return set(), "no subscriber list"
